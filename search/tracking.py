"""Optional experiment tracking in MLflow (`run --mlflow URI`, or $MLFLOW_TRACKING_URI, read by the CLI): each
trial's parameters and per-epoch metrics through Ray Tune's own MLflowLoggerCallback (one MLflow run per trial),
and the exported best's metrics and files (best/) as one more MLflow run, all in the MLflow experiment named
after the search. The tracking URI is passed to each function here; without one nothing here touches MLflow,
which need not be installed."""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from auttention.errors import UserError
from auttention.record import EpochReport

from .compat import mlflow_trial_run

log = logging.getLogger(__name__)

ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the CLI reads it where --mlflow is not given
INSTALL = (
    "pip install 'auttention-search[mlflow]' (in a checkout: .venv/bin/pip install -c constraints.txt -e '.[mlflow]')"
)
BEST_RUN = "best"  # the MLflow run of the exported configuration, beside the trials' runs


HEALTH_TIMEOUT_S = 10.0  # how long a tracking server may take to answer its health check


def check(uri: str | None, source: str = "--mlflow") -> str | None:
    """The tracking URI a search logs to (None: tracking off), checked before anything starts: mlflow must be
    installed and a tracking server at an http(s) URI must answer its health check; each is a UserError naming
    `source` (how the user gave it) and what to do."""
    if uri is None:
        return None
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(
            f"{source} {uri}: experiment tracking needs mlflow, which is not installed; install it with {INSTALL}"
        ) from None
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as answer:
                answer.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise UserError(
                f"{source} {uri}: no MLflow tracking server answers there ({why}); start one "
                f"(`mlflow server --host 127.0.0.1 --port 5000`) or correct the address"
            ) from None
    # mlflow prints two lines of its own per run it ends; log_export says where everything went, once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return uri


def tune_callbacks(experiment: str, uri: str | None) -> list[Any]:
    """Tune's MLflow logger for the search named `experiment` where tracking is on (`uri`; one MLflow run per
    trial: its configuration as parameters, each reported epoch's numbers as metrics); none otherwise."""
    if uri is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class BatchedMLflowLogger(MLflowLoggerCallback):
        """Tune's MLflow logger, sending an epoch's metrics in one request: Tune's own sends one request per
        number, which takes seconds a result on a busy driver (and Tune warns that results are slow)."""

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            run_id = mlflow_trial_run(self, trial)
            step = EpochReport.from_result(result).epoch or int(result.get("training_iteration") or iteration)
            now = int(time.time() * 1000)
            numbers = _numbers({k: v for k, v in result.items() if k != "config"})  # the config: parameters
            MlflowClient(tracking_uri=uri).log_batch(
                run_id, metrics=[Metric(k, v, now, step) for k, v in numbers.items()]
            )

    return [BatchedMLflowLogger(tracking_uri=uri, experiment_name=experiment, tags={"auttention.search": experiment})]


def log_export(uri: str | None, experiment: str, folder: Path | None, metrics: dict[str, Any] | None) -> str | None:
    """Log the exported best (folder: best/, metrics: what its metrics.json holds) as the MLflow run `best` of
    the experiment at the tracking server `uri`: its numbers as metrics, best/'s files as artifacts; says where
    in one line. Returns the MLflow run id; None where tracking is off or nothing was exported."""
    if uri is None or folder is None:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id,
        run_name=BEST_RUN,
        tags={"auttention.search": experiment, "auttention.trial_id": str((metrics or {}).get("trial_id"))},
    )
    run_id = run.info.run_id
    timestamp = int(run.info.start_time)
    numbers = [Metric(key, value, timestamp, 0) for key, value in _numbers(metrics or {}).items()]
    for start in range(0, len(numbers), 1000):  # log_batch takes at most 1000 metrics a call
        client.log_batch(run_id, metrics=numbers[start : start + 1000])
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
