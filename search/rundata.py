"""Reading a run folder: trials.csv, tune/trial_*/progress.csv, optuna.db, space.yaml and best/, for the report.

Nothing here writes to the run folder; the Optuna study is read from a snapshot copy of optuna.db.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from auttention.errors import UserError
from auttention.record import (
    EPOCH,
    FUSION,
    TRIAL_PREFIX,
    metric_branch,
    metric_name,
    renamed_columns,
    renamed_metric,
    validation_label,
)

from .keys import column_name
from .runfolder import copy_sqlite


@dataclass
class RunData:
    """Everything the report shows, read from a run folder."""

    run_dir: Path
    name: str
    metric: str
    trials: pd.DataFrame  # trials.csv plus `number` (1-based trial order) and `folder` (tune/trial_<id> or None)
    curves: dict[str, pd.DataFrame]  # trial_id -> one row per scored epoch (epoch, metric, rel_time, ...)
    space: dict
    max_epochs: int | None
    log_params: set[str] = field(default_factory=set)  # trials.csv config columns searched on a log scale
    study: Any = None  # an in-memory copy of the persisted Optuna study, or None
    study_note: str = ""  # why there is no study
    best: dict | None = None  # best/metrics.json
    origin: float | None = None  # unix time the wall-time axis starts at

    @property
    def score_name(self) -> str:
        """What the trials' scores are ("devel", "swap", "5-fold": scoring.validation, fixed in a space)."""
        raw = self.space.get("scoring")
        scoring = raw if isinstance(raw, dict) else {}
        return validation_label(str(scoring.get("validation") or "devel"), int(scoring.get("folds") or 5))

    @property
    def label(self) -> str:
        """How the metric is named on axes and in headings."""
        return metric_label(self.metric, self.score_name)

    @property
    def best_col(self) -> str:
        return f"best_{self.metric}"

    @property
    def params(self) -> list[str]:
        """trials.csv configuration columns whose value differs between trials (what was searched)."""
        cols = [c for c in self.trials.columns if c.startswith("config.")]
        return [c for c in cols if self.trials[c].astype(str).nunique(dropna=False) > 1]


def metric_label(metric: str, score_name: str = "devel") -> str:
    """How the metric is named on axes and in headings: "fusion score (devel ρ)", or "fusion score (swap ρ)"
    where the scores are scoring.validation's (`score_name`)."""
    return f"{metric_branch(metric)} score ({score_name} ρ)"


DAMAGED = "the run folder is damaged; run the search again with --resume (it writes trials.csv and best/ anew)"


def read_trials(path: Path, metric: str) -> pd.DataFrame:
    """trials.csv (an empty frame with the usual columns when it has no rows; an earlier version's column names
    renamed); a file cut off or with rows of the wrong width is a UserError naming it."""
    columns = ["trial_id", "status", f"best_{metric}", "epochs", "wall_seconds", "node_ids", "error"]
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        raise UserError(f"{path}: the file ends mid-line (cut off while written?); {DAMAGED}")
    widths = {len(row) for row in csv.reader(io.StringIO(text))}
    if len(widths) > 1:
        raise UserError(f"{path}: its rows have {sorted(widths)} fields, not one width; {DAMAGED}")
    try:
        table = renamed_columns(
            pd.read_csv(io.StringIO(text), dtype={"trial_id": str, "node_ids": str, "error": str}, keep_default_na=True)
        )
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=columns)
    except pd.errors.ParserError as exc:
        raise UserError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]}); {DAMAGED}") from None
    for col in columns:
        if col not in table:
            table[col] = np.nan
    table["trial_id"] = table["trial_id"].astype(str)
    table["status"] = table["status"].fillna("errored").astype(str)
    table["error"] = table["error"].fillna("").astype(str)
    table[f"best_{metric}"] = pd.to_numeric(table[f"best_{metric}"], errors="coerce")
    return table.reset_index(drop=True)


def trial_folder(tune_dir: Path, trial_id: str) -> Path | None:
    """tune/trial_<id> (or any folder of tune/ named after the id)."""
    folder = tune_dir / f"{TRIAL_PREFIX}{trial_id}"
    if folder.is_dir():
        return folder
    found = sorted(p for p in tune_dir.glob(f"*{trial_id}*") if p.is_dir()) if tune_dir.is_dir() else []
    return found[0] if found else None


def read_progress(folder: Path | None, metric: str) -> pd.DataFrame:
    """One row per scored epoch from progress.csv (or result.json), sorted by epoch; empty when none."""
    empty = pd.DataFrame(columns=[EPOCH, metric, "timestamp"])
    if folder is None:
        return empty
    frame = None
    try:
        frame = pd.read_csv(folder / "progress.csv")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        rows = []
        try:
            for line in (folder / "result.json").read_text(errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if isinstance(row, dict):
                    rows.append({k: v for k, v in row.items() if not isinstance(v, (dict, list))})
        except OSError:
            pass
        frame = pd.DataFrame(rows) if rows else None
    frame = renamed_columns(frame) if frame is not None else None
    if frame is None or EPOCH not in frame or metric not in frame:
        return empty
    for col in (EPOCH, metric, "timestamp", "time_this_iter_s", "time_total_s"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame = frame[frame[EPOCH].notna()]
    # a resumed trial may report an epoch twice: keep the last report of each epoch
    frame = frame.drop_duplicates(EPOCH, keep="last").sort_values(EPOCH, kind="stable")
    return frame.reset_index(drop=True)


def wall_origin(curves: dict[str, pd.DataFrame]) -> float | None:
    """The unix time the wall-time axis starts at: when the earliest scored epoch began."""
    starts = []
    for frame in curves.values():
        if "timestamp" not in frame or not len(frame):
            continue
        took = frame.get("time_this_iter_s", 0.0)
        start = (frame["timestamp"] - pd.Series(took, index=frame.index).fillna(0.0)).dropna()
        starts += list(start) + list(frame["timestamp"].dropna())
    return float(min(starts)) if starts else None


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def trial_numbers(trials: pd.DataFrame, curves: dict[str, pd.DataFrame], study) -> list[int]:
    """1-based order in which the trials were started: the Optuna trial number of the trial with the
    same parameters where the study tells, else the time the trial's first epoch began."""
    starts = {}
    for i, trial_id in trials["trial_id"].items():
        frame = curves.get(trial_id)
        start = math.inf
        if frame is not None and len(frame) and "timestamp" in frame:
            took = frame["time_this_iter_s"].iloc[0] if "time_this_iter_s" in frame else 0.0
            value = frame["timestamp"].iloc[0] - (0.0 if pd.isna(took) else took)
            start = float(value) if pd.notna(value) else math.inf
        starts[i] = start
    order: dict[int, float] = {}
    if study is not None:
        records = trials.to_dict("records")
        # candidates in start order, so that trials with the same parameters keep their order
        rows = {i: records[k] for k, i in sorted(enumerate(trials.index), key=lambda ki: (starts[ki[1]], ki[0]))}
        for ot in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            if not ot.params:
                continue  # nothing to recognise it by
            cols = {name: f"config.{column_name(name)}" for name in ot.params}
            for i, row in rows.items():
                if all(c in row and _same(row[c], ot.params[n]) for n, c in cols.items()):
                    order[i] = ot.number
                    del rows[i]
                    break
    # trials the study does not match go after the matched ones, in start order
    ranked = sorted(trials.index, key=lambda i: (0 if i in order else 1, order.get(i, 0), starts[i], i))
    numbers = {i: rank + 1 for rank, i in enumerate(ranked)}
    return [numbers[i] for i in trials.index]


def load_study_copy(run_dir: Path, name: str):
    """(an in-memory copy of the run's Optuna study, '') or (None, why not). The file is only read."""
    db = run_dir / "optuna.db"
    if not db.is_file():
        return None, "the run folder has no optuna.db"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="auttention-report-") as tmp:
            copy = Path(tmp) / "optuna.db"
            copy_sqlite(db, copy)  # a consistent snapshot even while a search writes to it
            storage = optuna.storages.RDBStorage(f"sqlite:///{copy}", skip_compatibility_check=True)
            try:
                names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
                if name not in names:
                    if len(names) != 1:
                        return None, f"optuna.db has no study named {name!r} (it has {', '.join(names) or 'none'})"
                    name = names[0]
                stored = optuna.load_study(study_name=name, storage=storage)
                study = optuna.create_study(directions=stored.directions, study_name=name)
                study.add_trials(stored.get_trials(deepcopy=True))
            finally:
                storage.remove_session()
                storage.engine.dispose()
        return study, ""
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign database: the report goes on without it
        return None, f"optuna.db could not be read ({type(exc).__name__}: {exc})"


def log_params_of(space: dict, study) -> set[str]:
    """trials.csv config columns searched on a log scale (space.yaml, or the study's distributions)."""
    out = set()
    for section, values in (space or {}).items():
        if isinstance(values, dict):
            for key, definition in values.items():
                if isinstance(definition, dict) and ("loguniform" in definition or definition.get("log") is True):
                    out.add(f"config.{section}.{key}")
    if study is not None:
        for trial in study.get_trials(deepcopy=False):
            for pname, dist in trial.distributions.items():
                if getattr(dist, "log", False):
                    out.add(f"config.{column_name(pname)}")
    return out


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder (nothing in it is written)."""
    run_dir = Path(run_dir)
    if not (run_dir / "trials.csv").is_file():
        raise UserError(f"{run_dir}: no trials.csv here; give a run folder a search has finished (runs/NAME)")
    space = _read_record(run_dir / "space.yaml", yaml.safe_load, dict) or {}
    experiment = space.get("experiment") or {}
    name = str(experiment.get("name") or run_dir.resolve().name)
    metric = str(experiment.get("metric") or metric_name(FUSION))
    metric = renamed_metric(metric) or metric  # a run folder of an earlier version: fusion_rho
    trials = read_trials(run_dir / "trials.csv", metric)
    folders = [trial_folder(run_dir / "tune", tid) for tid in trials["trial_id"]]
    trials["folder"] = folders
    curves = {tid: read_progress(folder, metric) for tid, folder in zip(trials["trial_id"], folders)}
    origin = wall_origin(curves)
    for frame in curves.values():
        if "timestamp" in frame and origin is not None:
            frame["rel_time"] = frame["timestamp"] - origin
    study, note = load_study_copy(run_dir, name)
    trials["number"] = trial_numbers(trials, curves, study) if len(trials) else []
    scheduler = space.get("scheduler") or {}
    max_epochs = scheduler.get("max_epochs") if isinstance(scheduler.get("max_epochs"), int) else None
    best = _read_record(run_dir / "best" / "metrics.json", json.loads, dict)
    return RunData(
        run_dir=run_dir,
        name=name,
        metric=metric,
        trials=trials,
        curves=curves,
        space=space,
        max_epochs=max_epochs,
        log_params=log_params_of(space, study),
        study=study,
        study_note=note,
        best=best,
        origin=origin,
    )


def _read_record(path: Path, parse: Any, kind: type) -> Any:
    """A run folder's space.yaml or best/metrics.json parsed (None where it is not there); one that is there
    but cannot be read as a `kind` is a UserError naming it."""
    if not path.is_file():
        return None
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(
            f"{path}: cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {DAMAGED}"
        ) from None
    if not isinstance(value, kind):
        raise UserError(f"{path}: not what a search writes there; {DAMAGED}")
    return value


def read_labels(run_dir: Path, part: str) -> pd.DataFrame | None:
    """file_name, label of a partition from the best trial's features (None when not there)."""
    path = run_dir / "best" / "features" / part / "features.parquet"
    try:
        frame = pd.read_parquet(path, columns=["file_name", "label"])
    except Exception:  # noqa: BLE001 - no labels to draw (missing or damaged): the report says so
        return None
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce")
    return frame


def read_predictions(run_dir: Path, part: str) -> pd.DataFrame | None:
    """best/predictions.<part>.csv (None when missing or not a predictions table)."""
    try:
        frame = pd.read_csv(run_dir / "best" / f"predictions.{part}.csv")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    if not {"file_name", "prediction"} <= set(frame.columns):
        return None
    frame["prediction"] = pd.to_numeric(frame["prediction"], errors="coerce")
    return frame
