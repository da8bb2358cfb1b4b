"""The distributed layer of auttention-search: the CLI, the Ray Data executor of the one extraction, Ray Tune +
Optuna search."""
