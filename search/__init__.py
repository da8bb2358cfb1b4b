"""The distributed layer of auttention-search: the CLI, Ray Data extraction, Ray Tune + Optuna search."""
