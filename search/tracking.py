"""Optional experiment tracking in MLflow (`run --mlflow URI`, or $MLFLOW_TRACKING_URI): each trial's
parameters and per-epoch metrics through Ray Tune's own MLflowLoggerCallback (one MLflow run per trial),
and the exported best's metrics and files (best/) as one more MLflow run, all in the MLflow experiment
named after the search. Without a tracking URI nothing here touches MLflow, which need not be installed."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from auttention.errors import UserError

log = logging.getLogger(__name__)

ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the flag sets it, so Tune's callback and mlflow agree
INSTALL = "pip install 'auttention-search[mlflow]' (in a checkout: .venv/bin/pip install -c constraints.txt -e '.[mlflow]')"
BEST_RUN = "best"  # the MLflow run of the exported configuration, beside the trials' runs


def tracking_uri() -> str | None:
    """The MLflow tracking server searches log to, or None (tracking off)."""
    return os.environ.get(ENV) or None


def use(uri: str | None) -> None:
    """Track this process' search in MLflow at `uri` (the --mlflow flag; None: $MLFLOW_TRACKING_URI, if set).

    UserError, before anything starts, where tracking is asked for and mlflow is not installed."""
    source = f"--mlflow {uri}" if uri else f"{ENV}={tracking_uri()}"
    if uri:
        os.environ[ENV] = uri
    if tracking_uri() is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(f"{source}: experiment tracking needs mlflow, which is not installed; install it with "
                        f"{INSTALL}") from None
    # mlflow prints two lines of its own per run it ends; log_export says where everything went, once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def tune_callbacks(experiment: str) -> list[Any]:
    """Tune's MLflow logger for the search named `experiment` where tracking is on (one MLflow run per trial:
    its configuration as parameters, each reported epoch's numbers as metrics); none otherwise."""
    uri = tracking_uri()
    if uri is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from .compat import mlflow_trial_run

    class BatchedMLflowLogger(MLflowLoggerCallback):
        """Tune's MLflow logger, sending an epoch's metrics in one request: Tune's own sends one request per
        number, which takes seconds a result on a busy driver (and Tune warns that results are slow)."""

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            run_id = mlflow_trial_run(self, trial)
            step = int(result.get("epoch") or result.get("training_iteration") or iteration)
            now = int(time.time() * 1000)
            numbers = _numbers({k: v for k, v in result.items() if k != "config"})  # the config: parameters
            MlflowClient(tracking_uri=uri).log_batch(run_id, metrics=[Metric(k, v, now, step)
                                                                      for k, v in numbers.items()])

    return [BatchedMLflowLogger(tracking_uri=uri, experiment_name=experiment, tags={"auttention.search": experiment})]


def log_export(experiment: str, folder: Path | None, metrics: dict[str, Any] | None) -> str | None:
    """Log the exported best (folder: best/, metrics: what its metrics.json holds) as the MLflow run `best` of
    the experiment: its numbers as metrics, best/'s files as artifacts; says where in one line. Returns the
    MLflow run id; None where tracking is off or nothing was exported."""
    uri = tracking_uri()
    if uri is None or folder is None:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=BEST_RUN,
                            tags={"auttention.search": experiment, "auttention.trial_id": str((metrics or {}).get("trial_id"))})
    run_id = run.info.run_id
    timestamp = int(run.info.start_time)
    numbers = [Metric(key, value, timestamp, 0) for key, value in _numbers(metrics or {}).items()]
    for start in range(0, len(numbers), 1000):  # log_batch takes at most 1000 metrics a call
        client.log_batch(run_id, metrics=numbers[start:start + 1000])
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id)
    log.info(f"mlflow: the trials and the exported best (run '{BEST_RUN}') in experiment {experiment!r} at {uri}")
    return run_id


def _numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """A metrics record's finite numbers, nested keys joined by '.'; undefined figures (None, NaN) left out,
    lists (the confirmation seeds) left to the artifacts' metrics.json."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out
