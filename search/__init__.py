"""The distributed layer of auttention-search: the CLI, Ray extraction (tasks), Ray Tune + Optuna search."""
