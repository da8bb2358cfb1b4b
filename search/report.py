"""The search report: runs/NAME/report/index.html, one self-contained page to look at a finished search.

Built only from what a run folder holds (trials.csv, optuna.db, space.yaml, best/, tune/trial_*/progress.csv),
so it can be (re)written at the end of a search or on demand. Images are PNGs beside index.html, drawn with
Matplotlib's Agg backend; the page has inline CSS, no JavaScript and no network resources.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import sqlite3
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from auttention.errors import UserError  # noqa: E402
from auttention.io import atomic_dir  # noqa: E402

# (anchor, heading) of every section, in page order
SECTIONS = (
    ("progress", "Search progress"),
    ("importance", "Hyperparameter importance"),
    ("parallel", "Top trials: parallel coordinates"),
    ("curves", "Learning curves"),
    ("best", "Best trial"),
    ("top", "Top 10 trials"),
    ("files", "Files and logs"),
)
STATUS_STYLE = {
    "completed": {"color": "#0072B2", "marker": "o", "label": "completed"},
    "stopped": {"color": "#E69F00", "marker": "s", "label": "stopped by ASHA"},
    "errored": {"color": "#D55E00", "marker": "X", "label": "errored"},
}
OTHER_STYLE = {"color": "#777777", "marker": "D", "label": "other"}
TOP_PARALLEL = 20
DPI = 144


# ----------------------------------------------------------------------------------------------- data


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
    def best_col(self) -> str:
        return f"best_{self.metric}"

    @property
    def params(self) -> list[str]:
        """trials.csv configuration columns whose value differs between trials (what was searched)."""
        cols = [c for c in self.trials.columns if c.startswith("config.")]
        return [c for c in cols if self.trials[c].astype(str).nunique(dropna=False) > 1]


def metric_label(metric: str) -> str:
    """How the metric is named on axes and in headings."""
    known = {"fused_rho": "fused devel ρ", "attention_rho": "attention devel ρ", "seq2seq_rho": "seq2seq devel ρ"}
    return known.get(metric, f"{metric} (devel)")


def read_trials(path: Path, metric: str) -> pd.DataFrame:
    """trials.csv (an empty frame with the usual columns when it has no rows)."""
    columns = ["trial_id", "status", f"best_{metric}", "epochs", "wall_seconds", "node_ids", "error"]
    try:
        table = pd.read_csv(path, dtype={"trial_id": str, "node_ids": str, "error": str}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=columns)
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
    folder = tune_dir / f"trial_{trial_id}"
    if folder.is_dir():
        return folder
    found = sorted(p for p in tune_dir.glob(f"*{trial_id}*") if p.is_dir()) if tune_dir.is_dir() else []
    return found[0] if found else None


def read_progress(folder: Path | None, metric: str) -> pd.DataFrame:
    """One row per scored epoch from progress.csv (or result.json), sorted by epoch; empty when none."""
    empty = pd.DataFrame(columns=["epoch", metric, "timestamp"])
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
    if frame is None or "epoch" not in frame or metric not in frame:
        return empty
    for col in ("epoch", metric, "timestamp", "time_this_iter_s", "time_total_s"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame = frame[frame["epoch"].notna()]
    # a resumed trial may report an epoch twice: keep the last report of each epoch
    frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable")
    return frame.reset_index(drop=True)


def wall_origin(curves: dict[str, pd.DataFrame]) -> float | None:
    """The unix time the wall-time axis starts at: when the earliest scored epoch began."""
    starts = []
    for frame in curves.values():
        if "timestamp" not in frame or not len(frame):
            continue
        took = frame["time_this_iter_s"] if "time_this_iter_s" in frame else 0.0
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
            cols = {name: f"config.{name.replace('/', '.')}" for name in ot.params}
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
            src = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)  # a consistent snapshot even while a search writes to it
            finally:
                src.close()
                dst.close()
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
    except Exception as exc:  # a damaged or foreign database: the report goes on without it
        return None, f"optuna.db could not be read ({type(exc).__name__}: {exc})"


def log_params_of(space: dict, study) -> set[str]:
    """trials.csv config columns searched on a log scale (space.yaml, or the study's distributions)."""
    out = set()
    for section, values in (space or {}).items():
        if isinstance(values, dict):
            for key, spec in values.items():
                if isinstance(spec, dict) and ("loguniform" in spec or spec.get("log") is True):
                    out.add(f"config.{section}.{key}")
    if study is not None:
        for trial in study.get_trials(deepcopy=False):
            for pname, dist in trial.distributions.items():
                if getattr(dist, "log", False):
                    out.add(f"config.{pname.replace('/', '.')}")
    return out


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder (nothing in it is written)."""
    run_dir = Path(run_dir)
    if not (run_dir / "trials.csv").is_file():
        raise UserError(f"{run_dir}: no trials.csv here; give a run folder a search has finished (runs/NAME)")
    try:
        space = yaml.safe_load((run_dir / "space.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        space = {}
    space = space if isinstance(space, dict) else {}
    experiment = space.get("experiment") or {}
    name = str(experiment.get("name") or run_dir.resolve().name)
    metric = str(experiment.get("metric") or "fused_rho")
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
    try:
        best = json.loads((run_dir / "best" / "metrics.json").read_text())
    except (OSError, ValueError):
        best = None
    return RunData(run_dir=run_dir, name=name, metric=metric, trials=trials, curves=curves, space=space,
                   max_epochs=max_epochs, log_params=log_params_of(space, study), study=study, study_note=note,
                   best=best, origin=origin)


# ---------------------------------------------------------------------------------------------- plots


def _style(status: str) -> dict:
    return STATUS_STYLE.get(status, OTHER_STYLE)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _status_legend(ax, counts: dict[str, int], extra: Iterable[Line2D] = ()) -> None:
    handles = [Line2D([], [], ls="", marker=_style(s)["marker"], color=_style(s)["color"], markersize=7,
                      label=f"{_style(s)['label']} ({n})") for s, n in counts.items() if n]
    handles += list(extra)
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)


def plot_best_so_far(points: pd.DataFrame, steps: pd.DataFrame, x_label: str, y_label: str,
                     integer_x: bool = False, x_from_zero: bool = False) -> Figure:
    """Best-so-far line (steps: x, y in order) and one point per trial (points: x, y, status; y NaN =
    no score, drawn on the bottom edge)."""
    fig = _figure(5.4, 3.7)
    ax = fig.add_subplot()
    finite = points["y"].dropna()
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    pad = max(0.05 * (hi - lo), 0.02)
    bottom = lo - 3 * pad
    if len(steps):
        xs, ys = list(steps["x"]), list(steps["y"].cummax())
        x_end = max(xs[-1], float(points["x"].max())) if len(points) else xs[-1]
        ax.step(xs + [x_end], ys + [ys[-1]], where="post", color="#222222", lw=1.8, zorder=2)
    size = 42 if len(points) <= 80 else 26
    for status, group in points.groupby("status", sort=False):
        style = _style(status)
        scored = group[group["y"].notna()]
        ax.scatter(scored["x"], scored["y"], s=size, marker=style["marker"], color=style["color"],
                   edgecolor="white", linewidth=0.6, zorder=3)
        unscored = group[group["y"].isna()]
        if len(unscored):
            ax.scatter(unscored["x"], [bottom + pad] * len(unscored), s=size, marker=style["marker"],
                       color=style["color"], zorder=3, clip_on=False)
    ax.set_ylim(bottom, hi + pad)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(points):
            ax.set_xlim(float(points["x"].min()) - 0.5, float(points["x"].max()) + 0.5)
    if x_from_zero:
        ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    counts = points["status"].value_counts().to_dict()
    line = [Line2D([], [], color="#222222", lw=1.8, label="best so far")] if len(steps) else []
    _status_legend(ax, {s: counts.get(s, 0) for s in [*STATUS_STYLE, *counts] if s in counts}, line)
    return fig


def plot_importance(importances: dict[str, dict[str, float]]) -> Figure:
    """Grouped horizontal bars: importance of each parameter under each evaluator."""
    evaluators = list(importances)
    first = importances[evaluators[0]]
    params = sorted({p for imp in importances.values() for p in imp}, key=lambda p: -first.get(p, 0.0))
    n, k = len(params), len(evaluators)
    fig = _figure(7.0, 1.1 + 0.26 * n * (k + 0.6))
    ax = fig.add_subplot()
    height = 0.8 / k
    colors = ["#0072B2", "#009E73", "#CC79A7", "#56B4E9"]
    y = np.arange(n)
    for j, ev in enumerate(evaluators):
        values = [importances[ev].get(p, 0.0) for p in params]
        bars = ax.barh(y - 0.4 + height * (j + 0.5), values, height=height * 0.92, color=colors[j % len(colors)],
                       label=ev)
        for bar, value in zip(bars, values):
            ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.2f}", va="center",
                    fontsize=7.5)
    ax.set_yticks(y, [_mpl_text(p) for p in params], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("importance (each evaluator's values sum to 1)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _numeric(values: pd.Series) -> bool:
    """Whether a configuration column is drawn on a numeric axis (numbers, not booleans)."""
    present = values.dropna()
    is_bool = present.map(lambda v: isinstance(v, (bool, np.bool_)) or str(v) in ("True", "False")).any()
    return bool(len(present)) and not is_bool and bool(pd.to_numeric(present, errors="coerce").notna().all())


def _axis_positions(values: pd.Series, all_values: pd.Series, log: bool) -> tuple[np.ndarray, list]:
    """Positions in [0, 1] (NaN where missing) of `values` on an axis spanning `all_values`; ticks."""
    present = all_values.dropna()
    if _numeric(all_values):
        nums = pd.to_numeric(present, errors="coerce").astype(float)
        use_log = log and (nums > 0).all()
        t_all = np.log10(nums) if use_log else nums
        lo, hi = float(t_all.min()), float(t_all.max())
        vals = pd.to_numeric(values, errors="coerce").astype(float)
        t = np.log10(vals.where(vals > 0)) if use_log else vals
        pos = ((t - lo) / (hi - lo)).to_numpy() if hi > lo else np.where(t.notna(), 0.5, np.nan)
        uniq = sorted(set(nums))
        if len(uniq) <= 6 and all(float(u).is_integer() for u in uniq):
            ticks = [(((np.log10(u) if use_log else u) - lo) / (hi - lo) if hi > lo else 0.5, f"{u:g}")
                     for u in uniq]
        else:
            ticks = [(f, f"{(10 ** (lo + f * (hi - lo)) if use_log else lo + f * (hi - lo)):.3g}")
                     for f in ((0.0, 0.5, 1.0) if hi > lo else (0.5,))]
        return pos, ticks
    cats = sorted({str(v) for v in present},
                  key=lambda s: (0, float(s), s) if _is_float(s) else (1, 0.0, s))
    where = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    pos = np.array([where.get(str(v), np.nan) if pd.notna(v) else np.nan for v in values], dtype=float)
    return pos, [(where[c], c) for c in cats]


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def plot_parallel(trials: pd.DataFrame, params: list[str], best_col: str, y_label: str, log_params: set[str],
                  top: int = TOP_PARALLEL) -> Figure:
    """Parallel coordinates of the `top` trials by best metric: one axis per searched parameter, then
    the metric; lines coloured by the metric, the best trial in black."""
    scored = trials[trials[best_col].notna()].sort_values(best_col, ascending=False, kind="stable")
    rows = scored.head(top).iloc[::-1]  # worst first, so the best are drawn on top
    names = params + [best_col]
    n = len(names)
    positions, ticks = [], []
    rng = np.random.default_rng(0)
    for col in params:
        pos, tk = _axis_positions(rows[col], trials[col], col in log_params)
        if len(rows) > 5 and trials[col].dropna().astype(str).nunique() <= 8:
            # spread the lines through a discrete value a little so that one can see how many pass there
            pos = pos + rng.uniform(-0.025, 0.025, len(pos))
        positions.append(pos)
        ticks.append(tk)
    pos, tk = _axis_positions(rows[best_col], rows[best_col], False)
    positions.append(pos)
    ticks.append(tk)
    y = np.vstack(positions).T if len(rows) else np.zeros((0, n))
    missing = np.isnan(y).any()
    y = np.where(np.isnan(y), -0.14, y)
    fig = _figure(max(6.5, 1.3 * n + 1.8), 4.4)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"]
    values = rows[best_col].to_numpy(dtype=float)
    vmin, vmax = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(vmin, vmax if vmax > vmin else vmin + 1e-9)
    xs = np.arange(n)
    for j in range(n):
        ax.axvline(j, color="#999999", lw=1, zorder=1)
    best_id = scored["trial_id"].iloc[0] if len(scored) else None
    for i, (_, row) in enumerate(rows.iterrows()):
        if row["trial_id"] == best_id:
            continue
        ax.plot(xs, y[i], color=cmap(norm(values[i])), lw=1.6, alpha=0.85, zorder=2)
    handles = []
    if best_id is not None:
        i = list(rows["trial_id"]).index(best_id)
        ax.plot(xs, y[i], color="black", lw=2.8, zorder=3)
        handles.append(Line2D([], [], color="black", lw=2.8, label=f"best: trial {best_id}"))
    for j, axis_ticks in enumerate(ticks):
        shown = axis_ticks if len(axis_ticks) <= 12 else axis_ticks[:: math.ceil(len(axis_ticks) / 12)]
        for p, text in shown:
            ax.text(j + 0.05, p, _mpl_text(text), fontsize=9, va="center", ha="left", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        if missing:
            ax.text(j + 0.05, -0.14, "n/a", fontsize=7.5, va="center", ha="left", color="#555555", zorder=4)
    labels = [c[len("config."):] if c.startswith("config.") else c for c in params] + [f"best {y_label}"]
    ax.set_xticks(xs, [_mpl_text(t) for t in labels], rotation=20, ha="right", fontsize=9.5)
    ax.set_yticks([])
    ax.set_xlim(-0.15, n - 1 + 0.6)
    ax.set_ylim(-0.22 if missing else -0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.01)
    bar.set_label(f"best {y_label}", fontsize=8.5)
    bar.ax.tick_params(labelsize=8)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 1.13), fontsize=8, frameon=False)
    return fig


def _mpl_text(text: str) -> str:
    """Data shown in a figure, with Matplotlib's mathtext switched off."""
    return str(text).replace("$", r"\$")


def plot_curves(curves: dict[str, pd.DataFrame], statuses: dict[str, str], metric: str, y_label: str,
                best_id: str | None, max_epochs: int | None) -> Figure:
    """Devel metric per epoch of every trial, coloured by status; where a trial ended is marked."""
    fig = _figure(9.0, 4.6)
    ax = fig.add_subplot()
    many = len(curves) > 40
    counts: dict[str, int] = {}
    for tid, frame in curves.items():
        status = statuses.get(tid, "other")
        style = _style(status)
        data = frame[frame[metric].notna()]
        if not len(data):
            continue
        counts[status] = counts.get(status, 0) + 1
        lw, alpha = (1.0, 0.45) if many else (1.6, 0.8)
        ax.plot(data["epoch"], data[metric], color=style["color"], lw=lw, alpha=alpha, zorder=2,
                ls="-" if status == "completed" else "--", marker="o" if len(data) == 1 else None, markersize=4)
        if status != "completed":
            ax.scatter(data["epoch"].iloc[-1:], data[metric].iloc[-1:], marker=style["marker"], s=30 if many else 46,
                       color=style["color"], edgecolor="white", linewidth=0.6, zorder=5 if status == "errored" else 3)
    extra = []
    if best_id is not None and best_id in curves and len(curves[best_id][curves[best_id][metric].notna()]):
        data = curves[best_id][curves[best_id][metric].notna()]
        ax.plot(data["epoch"], data[metric], color="black", lw=2.6, zorder=4)
        extra.append(Line2D([], [], color="black", lw=2.6, label=f"best: trial {best_id}"))
    if max_epochs:
        ax.axvline(max_epochs, color="#888888", ls=":", lw=1.2, zorder=1)
        extra.append(Line2D([], [], color="#888888", ls=":", lw=1.2, label=f"max_epochs = {max_epochs}"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    order = {s: counts[s] for s in [*STATUS_STYLE, *counts] if s in counts}
    handles = [Line2D([], [], color=_style(s)["color"], ls="-" if s == "completed" else "--",
                      marker=None if s == "completed" else _style(s)["marker"], label=f"{_style(s)['label']} ({n})")
               for s, n in order.items()]
    ax.legend(handles=handles + extra, loc="best", fontsize=8, framealpha=0.9)
    return fig


def plot_predictions(true: np.ndarray, pred: np.ndarray, lo: float, hi: float, title: str) -> Figure:
    """Predicted vs true label: a confusion heat map for integer labels and predictions (KSS),
    else a jittered scatter."""
    fig = _figure(5.0, 4.3)
    ax = fig.add_subplot()
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    integral = (np.all(np.mod(true, 1) == 0) and np.all(np.mod(pred, 1) == 0)
                and float(lo).is_integer() and float(hi).is_integer())
    lo = min(lo, float(true.min()), float(pred.min()))
    hi = max(hi, float(true.max()), float(pred.max()))
    if integral and hi - lo <= 30:
        labels = np.arange(int(lo), int(hi) + 1)
        counts = np.zeros((len(labels), len(labels)), dtype=int)
        for t, p in zip(true.astype(int), pred.astype(int)):
            counts[t - labels[0], p - labels[0]] += 1
        image = ax.imshow(counts, origin="lower", cmap="Blues", aspect="equal",
                          extent=(labels[0] - 0.5, labels[-1] + 0.5, labels[0] - 0.5, labels[-1] + 0.5))
        top = counts.max() if counts.size else 0
        if len(labels) <= 15:
            for i, t in enumerate(labels):
                for j, p in enumerate(labels):
                    if counts[i, j]:
                        ax.text(p, t, str(counts[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if counts[i, j] > 0.6 * top else "black")
        ax.plot([labels[0] - 0.5, labels[-1] + 0.5], [labels[0] - 0.5, labels[-1] + 0.5], color="#D55E00",
                lw=1, ls="--", alpha=0.7)
        ax.set_xticks(labels)
        ax.set_yticks(labels)
        bar = fig.colorbar(image, ax=ax, label="clips", fraction=0.046, pad=0.03)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    else:
        rng = np.random.default_rng(0)
        span = max(hi - lo, 1.0)
        jitter = 0.015 * span
        ax.scatter(true + rng.uniform(-jitter, jitter, len(true)), pred + rng.uniform(-jitter, jitter, len(pred)),
                   s=14, alpha=0.6, color="#0072B2", edgecolor="none")
        ax.plot([lo, hi], [lo, hi], color="#D55E00", lw=1, ls="--")
        ax.set_xlim(lo - 0.05 * span, hi + 0.05 * span)
        ax.set_ylim(lo - 0.05 * span, hi + 0.05 * span)
        ax.grid(alpha=0.3)
        ax.set_xlabel("true label")
        ax.set_ylabel("predicted label")
        ax.set_title(_mpl_text(title), fontsize=10)
        return fig
    ax.set_xlabel("predicted KSS")
    ax.set_ylabel("true KSS")
    ax.set_title(_mpl_text(title), fontsize=10)
    return fig


def save_png(fig: Figure, folder: Path, name: str) -> str:
    """Write the figure as folder/name; return name (the page's relative link)."""
    fig.savefig(folder / name, dpi=DPI, format="png", facecolor="white")
    plt.close(fig)  # a no-op for figures pyplot does not track; frees it if it does
    return name


# --------------------------------------------------------------------------------------------- html


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell ('–' when missing)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return esc(value) if value not in (None, "") else "–"
    if math.isnan(number):
        return "–"
    if number.is_integer() and abs(number) < 1e6 and not isinstance(value, float):
        return str(int(number))
    return f"{number:.{digits}f}"


def fmt_value(value: Any) -> str:
    """A configuration value for a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def rel_link(target: Path, run_dir: Path) -> str:
    """The page's link to a file of the run folder (index.html lies in run_dir/report/)."""
    return "../" + "/".join(esc(quote(part)) for part in target.relative_to(run_dir).parts)


def figure_html(src: str, alt: str, caption: str = "", css: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    cls = f' class="{esc(css)}"' if css else ""
    return f'<figure{cls}><img src="{esc(src)}" alt="{esc(alt)}" loading="eager">{cap}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def section(anchor: str, body: str) -> str:
    heading = dict(SECTIONS)[anchor]
    return f'<section id="{anchor}">\n<h2>{esc(heading)}</h2>\n{body}\n</section>'


def status_badge(status: str) -> str:
    return f'<span class="badge {esc(status) if status in STATUS_STYLE else "other"}">{esc(status)}</span>'


# ------------------------------------------------------------------------------------------ sections


def section_progress(run: RunData, out: Path) -> str:
    """Best-so-far devel metric against wall time and against trial number; every trial a point."""
    trials, metric, label = run.trials, run.metric, metric_label(run.metric)
    if not len(trials):
        return section("progress", note("No trials in trials.csv."))
    if not trials[run.best_col].notna().any():
        return section("progress", note("No trial scored an epoch, so there is no progress to plot; the errors "
                                        "are in the <a href=\"#top\">top trials table</a> and trials.csv."))
    reports = []
    for tid, frame in run.curves.items():
        if "rel_time" in frame:
            good = frame[frame[metric].notna() & frame["rel_time"].notna()]
            reports.append(pd.DataFrame({"x": good["rel_time"], "y": good[metric]}))
    reports = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=["x", "y"])
    steps_time = reports.sort_values(["x", "y"], kind="stable").reset_index(drop=True)
    end_times = {tid: float(f["rel_time"].dropna().iloc[-1]) for tid, f in run.curves.items()
                 if "rel_time" in f and f["rel_time"].notna().any()}
    points_time = pd.DataFrame({"x": [end_times.get(t, np.nan) for t in trials["trial_id"]],
                                "y": trials[run.best_col], "status": trials["status"]})
    untimed = int(points_time["x"].isna().sum())
    points_time = points_time[points_time["x"].notna()]
    figures = []
    if len(points_time):
        fig = plot_best_so_far(points_time, steps_time, "wall time (s since the first epoch began)", f"best {label}",
                               x_from_zero=True)
        figures.append(figure_html(save_png(fig, out, "progress_time.png"), f"best {label} against wall time",
                                   "Against wall time: a point where each trial ended, at its best epoch's score."))
    by_number = trials.sort_values("number")
    points_number = pd.DataFrame({"x": by_number["number"], "y": by_number[run.best_col],
                                  "status": by_number["status"]})
    scored = points_number[points_number["y"].notna()]
    fig = plot_best_so_far(points_number, scored[["x", "y"]].reset_index(drop=True), "trial number (order started)",
                           f"best {label}", integer_x=True)
    unscored = int(points_number["y"].isna().sum())
    figures.append(figure_html(save_png(fig, out, "progress_trial.png"), f"best {label} against trial number",
                               "Against trial number (the order trials started)"
                               + (f"; the {unscored} trial(s) without a score sit on the bottom edge." if unscored
                                  else ".")))
    counts = trials["status"].value_counts()
    text = (f"The line is the best {esc(label)} found so far; the points are the trials, coloured by how they "
            f"ended: {int(counts.get('completed', 0))} completed all epochs, {int(counts.get('stopped', 0))} were "
            f"stopped early by ASHA (their scores come from fewer epochs), {int(counts.get('errored', 0))} errored.")
    if untimed:
        text += f" {untimed} trial(s) reported no epoch and have no place on the wall-time axis."
    return section("progress", f"<p>{text}</p>\n<div class=\"pair\">{''.join(figures)}</div>")


def compute_importances(study) -> tuple[dict[str, dict[str, float]], list[str], int]:
    """({evaluator: {param: importance}}, notes, number of completed trials used).

    Importance is computed on COMPLETE trials only: the trials ASHA stopped are PRUNED in the study and
    their scores come from fewer epochs, errored ones have none.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    all_trials = study.get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    n = len(complete)
    pruned = sum(t.state == TrialState.PRUNED for t in all_trials)
    failed = sum(t.state == TrialState.FAIL for t in all_trials)
    left_out = f"{pruned} stopped by ASHA (pruned) and {failed} errored trial(s) are left out"
    if n < 2:
        return {}, [f"Importance needs at least 2 trials that completed all epochs; this study has {n}, so there "
                    f"is no chart ({left_out}: their scores are truncated or missing)."], n
    names = set.intersection(*(set(t.params) for t in complete))
    varied = sorted(p for p in names if len({repr(t.params[p]) for t in complete}) > 1)
    if not varied:
        return {}, [f"No searched parameter took different values among the {n} completed trials, so there "
                    f"is nothing to attribute the score to."], n
    if len(varied) == 1:
        return {}, [f"Only one searched parameter ({varied[0]}) varied among the {n} completed trials; its "
                    f"importance is trivially 100%, so no chart is drawn."], n
    if len({t.value for t in complete}) == 1:
        return {}, [f"All {n} completed trials scored the same ({complete[0].value:.3f}), so no parameter "
                    f"explains any difference."], n
    evaluators = {"fANOVA": FanovaImportanceEvaluator(seed=0), "PED-ANOVA": PedAnovaImportanceEvaluator()}
    results, notes = {}, []
    for label, evaluator in evaluators.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results[label] = get_param_importances(study, evaluator=evaluator, params=varied)
            except Exception as exc:
                notes.append(f"{label} could not be computed: {type(exc).__name__}: {exc}")
                continue
        for w in caught:
            if not issubclass(w.category, (DeprecationWarning, optuna.exceptions.ExperimentalWarning)):
                notes.append(f"{label}: {w.message}")
    return results, notes, n


def section_importance(run: RunData, out: Path) -> str:
    """Hyperparameter importance of the searched parameters under Optuna's evaluators."""
    if run.study is None:
        return section("importance", note(f"Hyperparameter importance is not available: {esc(run.study_note)}."))
    results, notes, n = compute_importances(run.study)
    from optuna.trial import TrialState

    trials = run.study.get_trials(deepcopy=False)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    intro = (f"<p>Optuna's importance evaluators on the persisted study, using only the trials that completed all "
             f"epochs (COMPLETE): {n} of {len(trials)}. The {pruned} stopped by ASHA (PRUNED: their scores come "
             f"from fewer epochs) and the {failed} that failed are left out.")
    if results:
        intro += (" fANOVA fits random forests to the scores; PED-ANOVA (Optuna's default) compares the best 10% "
                  "of the trials with all of them and is stable from about 50 completed trials on.")
    body = intro + "</p>"
    if results:
        fig = plot_importance(results)
        body += figure_html(save_png(fig, out, "importance.png"), "hyperparameter importance",
                            f"Importance for {esc(metric_label(run.metric))} of every searched parameter "
                            f"that varied among the completed trials.", css="medium")
    body += "".join(note(esc(text)) for text in notes)
    return section("importance", body)


def section_parallel(run: RunData, out: Path) -> str:
    """Parallel coordinates of the top trials over the searched parameters and the metric."""
    trials = run.trials
    scored = trials[trials[run.best_col].notna()]
    params = run.params
    if not len(scored):
        return section("parallel", note("No trial has a score to rank by."))
    if not params:
        return section("parallel", note("Every trial had the same configuration (no searched parameter varies), "
                                         "so there is nothing to draw across."))
    top = min(TOP_PARALLEL, len(scored))
    fig = plot_parallel(trials, params, run.best_col, metric_label(run.metric), run.log_params, top)
    caption = (f"The top {top} of {len(scored)} scored trials, one line each, coloured by best "
               f"{esc(metric_label(run.metric))}; parameters searched on a log scale have log axes; "
               f"“n/a” marks a conditional parameter a trial did not use.")
    return section("parallel", figure_html(save_png(fig, out, "parallel.png"), "parallel coordinates of the top "
                                            "trials", caption))


def section_curves(run: RunData, out: Path) -> str:
    """Learning curves: the devel metric per epoch of every trial."""
    with_data = {tid: f for tid, f in run.curves.items() if len(f) and f[run.metric].notna().any()}
    silent = len(run.curves) - len(with_data)
    if not with_data:
        return section("curves", note("No trial reported a scored epoch."))
    statuses = dict(zip(run.trials["trial_id"], run.trials["status"]))
    best_id = str(run.best["trial_id"]) if run.best and "trial_id" in run.best else None
    fig = plot_curves(with_data, statuses, run.metric, metric_label(run.metric), best_id, run.max_epochs)
    caption = (f"{esc(metric_label(run.metric))} after every epoch of the {len(with_data)} trials that scored one; "
               f"dashed curves ending in a marker are trials stopped early (ASHA) or errored.")
    if silent:
        caption += f" {silent} trial(s) reported no epoch and have no curve."
    return section("curves", figure_html(save_png(fig, out, "curves.png"), "learning curves", caption))


def _labels(run_dir: Path, part: str) -> pd.DataFrame | None:
    path = run_dir / "best" / "features" / part / "features.parquet"
    try:
        frame = pd.read_parquet(path, columns=["file_name", "label"])
    except Exception:
        return None
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce")
    return frame


def _predictions(run_dir: Path, part: str) -> pd.DataFrame | None:
    try:
        frame = pd.read_csv(run_dir / "best" / f"predictions.{part}.csv")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    if not {"file_name", "prediction"} <= set(frame.columns):
        return None
    frame["prediction"] = pd.to_numeric(frame["prediction"], errors="coerce")
    return frame


def paper_table(best: dict) -> str:
    """The paper's table: rows attention, seq2seq, fusion; columns devel and test Spearman's rho, C."""
    rows, unknown = [], False
    for branch in ("attention", "seq2seq", "fusion"):
        entry = best.get(branch) or {}
        test = entry.get("test_rho")
        unknown |= test is None
        test_cell = fmt(test) if test is not None else '<span class="muted">labels unknown</span>'
        rows.append(f"<tr><th scope=\"row\">{branch}</th><td class=\"num\">{fmt(entry.get('devel_rho'))}</td>"
                    f"<td class=\"num\">{test_cell}</td><td class=\"num\">{fmt_value(entry.get('c'))}</td></tr>")
    table = ('<div class="scroll"><table class="paper"><thead><tr><th></th><th>devel ρ</th><th>test ρ</th>'
             f'<th>C</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    if unknown:
        table += note("test: labels unknown (e.g. '?' as ComParE ships them), so there is no test ρ.")
    return table


def section_best(run: RunData, out: Path) -> str:
    """The best trial: the paper's table, its configuration, predicted vs true label."""
    if not run.best:
        return section("best", note("No best trial was exported (best/metrics.json is missing): no trial scored "
                                    "an epoch, or the export did not finish."))
    best = run.best
    tid = esc(best.get("trial_id", "?"))
    body = [f"<p>Trial <code>{tid}</code>, checkpoint of epoch {esc(best.get('epoch', '?'))}, scored again for "
            f"export; test predictions come from the SVR refit on train+devel.</p>", paper_table(best)]
    try:
        cfg = yaml.safe_load((run.run_dir / "best" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    scoring = cfg.get("scoring") or {} if isinstance(cfg, dict) else {}
    lo, hi = float(scoring.get("label_min", 1.0)), float(scoring.get("label_max", 9.0))
    figures, notes = [], []
    for part in ("devel", "test"):
        labels, preds = _labels(run.run_dir, part), _predictions(run.run_dir, part)
        if preds is None:
            notes.append(f"{part}: no predictions.{part}.csv")
            continue
        if labels is None:
            notes.append(f"{part}: no features with labels to compare with")
            continue
        both = preds.merge(labels, on="file_name").dropna(subset=["label", "prediction"])
        if not len(both):
            notes.append(f"{part}: labels unknown" if part == "test" else f"{part}: no labelled clips")
            continue
        rho = (best.get("fusion") or {}).get(f"{part}_rho")
        title = f"{part}: {len(both)} clips" + (f", fused ρ = {rho:.3f}" if isinstance(rho, (int, float)) else "")
        fig = plot_predictions(both["label"].to_numpy(), both["prediction"].to_numpy(), lo, hi, title)
        figures.append(figure_html(save_png(fig, out, f"best_{part}.png"), f"predicted vs true label on {part}",
                                   f"{part}: predicted (rounded, clipped) against true label, clips counted per "
                                   f"cell; the dashed diagonal is a perfect prediction."))
    body.append("<h3>Predicted vs true</h3>")
    if figures:
        body.append(f'<div class="pair">{"".join(figures)}</div>')
    body += [note(esc(text)) for text in notes]
    config_path = run.run_dir / "best" / "config.yaml"
    if config_path.is_file():
        text = config_path.read_text(errors="replace")
        body.append(f'<h3>Configuration</h3><p><a href="{rel_link(config_path, run.run_dir)}">best/config.yaml</a> '
                    f'(rerun it with <code>auttention-search pipeline --data ... --config '
                    f'{esc(config_path)}</code>)</p><pre class="config">{esc(text)}</pre>')
    return section("best", "\n".join(body))


def section_top(run: RunData, out: Path, top: int = 10) -> str:
    """The top trials by best metric as a table, with links to each one's TensorBoard logs."""
    trials = run.trials
    if not len(trials):
        return section("top", note("No trials in trials.csv."))
    ranked = trials.sort_values(run.best_col, ascending=False, na_position="last", kind="stable").head(top)
    params = run.params
    show_error = ranked["error"].astype(str).str.strip().ne("").any()
    head = ["#", "trial", "logs", "no.", "status", f"best {esc(metric_label(run.metric))}", "epochs", "wall&nbsp;s"]
    head += [esc(c[len("config."):]).replace(".", ".<wbr>") for c in params] + (["error"] if show_error else [])
    lines = []
    for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
        folder = row["folder"]
        tb = folder / "tensorboard" if folder is not None and (folder / "tensorboard").is_dir() else folder
        logs = (f'<a href="{rel_link(tb, run.run_dir)}/">TensorBoard</a>' if tb is not None
                else '<span class="muted">none</span>')
        cells = [str(rank), f"<code>{esc(row['trial_id'])}</code>", logs, fmt(row["number"]),
                 status_badge(row["status"]), fmt(row[run.best_col]), fmt(row["epochs"]), fmt(row["wall_seconds"], 1)]
        cells += [fmt_value(row[c]) for c in params]
        if show_error:
            cells.append(f'<span class="error">{esc(row["error"])}</span>')
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    shown = f"The top {len(ranked)} of {len(trials)}" if len(trials) > len(ranked) else f"All {len(trials)}"
    table = (f"<p>{shown} trials by best {esc(metric_label(run.metric))}; “no.” is the order trials started, the "
             f"columns after “wall s” are the parameters that differ between trials. Every trial is in "
             f'<a href="../trials.csv">trials.csv</a>.</p>'
             f'<div class="scroll"><table class="trials"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}'
             f'</tr></thead><tbody>{"".join(lines)}</tbody></table></div>')
    return section("top", table)


def section_files(run: RunData, out: Path) -> str:
    """Links to the run's files, TensorBoard logs and the commands that open them."""
    rd = run.run_dir
    wanted = [("trials.csv", "every trial: status, best score, epochs, wall time, configuration"),
              ("space.yaml", "the search space as run"),
              ("optuna.db", "the Optuna study"),
              ("best/metrics.json", "the best trial's scores"),
              ("best/config.yaml", "the best configuration"),
              ("best/predictions.devel.csv", "devel predictions"),
              ("best/predictions.test.csv", "test predictions (ComParE format)"),
              ("tune", "Ray Tune's experiment: one folder per trial")]
    items = [f'<li><a href="{rel_link(rd / p, rd)}{"/" if (rd / p).is_dir() else ""}">{esc(p)}</a> – {esc(w)}</li>'
             for p, w in wanted if (rd / p).exists()]
    logs = []
    for _, row in run.trials.sort_values("number").iterrows():
        folder = row["folder"]
        if folder is not None and (folder / "tensorboard").is_dir():
            logs.append(f'<li><a href="{rel_link(folder / "tensorboard", rd)}/">{esc(row["trial_id"])}</a> '
                        f'{status_badge(row["status"])}</li>')
    tune = rd / "tune"
    body = [f"<ul>{''.join(items)}</ul>",
            f"<p>TensorBoard: <code>tensorboard --logdir {esc(tune)}</code>; the Optuna study: "
            f"<code>optuna-dashboard sqlite:///{esc((rd / 'optuna.db').resolve())}</code>.</p>"]
    if logs:
        listing = f"<ul class=\"logs\">{''.join(logs)}</ul>"
        if len(logs) > 24:  # a long list stays folded (native <details>, no script)
            listing = f"<details><summary>{len(logs)} trials, in the order they started</summary>{listing}</details>"
        body.append(f"<h3>TensorBoard logs per trial</h3>{listing}")
    else:
        body.append(note("No trial folder has TensorBoard logs."))
    return section("files", "\n".join(body))


def summary_html(run: RunData) -> str:
    """The line under the title: counts, best score, search time."""
    trials = run.trials
    counts = trials["status"].value_counts()
    parts = [f"{len(trials)} trial{'s' if len(trials) != 1 else ''}: " + ", ".join(
        f"{int(counts.get(s, 0))} {STATUS_STYLE[s]['label']}" for s in STATUS_STYLE)]
    if run.best:
        branch = {"attention_rho": "attention", "seq2seq_rho": "seq2seq"}.get(run.metric, "fusion")
        scores = run.best.get(branch) or {}
        test = scores.get("test_rho")
        parts.append(f"best {esc(metric_label(run.metric))} {fmt(scores.get('devel_rho'))} "
                     f"(trial <code>{esc(run.best.get('trial_id', '?'))}</code>; test ρ "
                     f"{fmt(test) if test is not None else 'labels unknown'})")
    ends = [float(f["timestamp"].max()) for f in run.curves.values()
            if "timestamp" in f and f["timestamp"].notna().any()]
    if ends and run.origin is not None:
        parts.append(f"search time {_duration(max(ends) - run.origin)}")
    return "<p class=\"summary\">" + " · ".join(parts) + "</p>"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


CSS = """
:root{--fg:#1d1f21;--muted:#5f6368;--line:#d9dce0;--bg:#fff;--soft:#f5f6f8}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:1.2rem 1.5rem 3rem}
h1{font-size:1.6rem;margin:.2rem 0 .3rem}
h2{font-size:1.25rem;margin:2.2rem 0 .6rem;padding-top:.6rem;border-top:1px solid var(--line)}
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
nav{display:flex;flex-wrap:wrap;gap:.3rem .9rem;font-size:.9rem;margin:.6rem 0 0}
a{color:#0b57d0}
img{max-width:100%;height:auto;display:block;border:1px solid var(--line);border-radius:4px;background:#fff}
figure{margin:.6rem 0 1rem}
figcaption{font-size:.85rem;color:var(--muted);margin-top:.3rem}
figure.medium img{max-width:min(100%,880px)}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:0 1.2rem}
.summary{color:var(--muted);margin:.2rem 0}
.note{background:var(--soft);border-left:3px solid #9aa0a6;padding:.5rem .8rem;margin:.6rem 0}
.muted{color:var(--muted)}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.88rem;margin:.4rem 0}
th,td{padding:.3rem .5rem;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
thead th{background:var(--soft);font-weight:600;white-space:normal;vertical-align:bottom;min-width:3.5rem}
td.num,table.paper td{text-align:right;font-variant-numeric:tabular-nums}
table.trials td{font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .45rem;border-radius:.7rem;font-size:.8rem;color:#fff}
.badge.completed{background:#0072B2}.badge.stopped{background:#B07800}.badge.errored{background:#D55E00}
.badge.other{background:#777}
.error{color:#a33;white-space:normal;min-width:16rem;display:inline-block}
pre.config{background:var(--soft);padding:.8rem;border-radius:4px;overflow:auto;max-height:28rem;font-size:.82rem}
code{font-size:.9em}
ul.logs{columns:3 14rem;padding-left:1.2rem}
footer{margin-top:2.5rem;color:var(--muted);font-size:.8rem}
@media (max-width:700px){main{padding:.8rem}body{font-size:14px}}
""".strip()


def page_html(run: RunData, sections: list[str]) -> str:
    """The whole page around the sections."""
    nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h in SECTIONS)
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = f"Search report: {run.name}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{esc(title)}</title>\n<link rel="icon" href="data:,">\n<style>\n{CSS}\n</style>\n</head>\n'
            f'<body>\n<main>\n<header>\n<h1>{esc(title)}</h1>\n{summary_html(run)}\n<nav>{nav}</nav>\n</header>\n'
            + "\n".join(sections)
            + f'\n<footer>Written by auttention-search report on {esc(generated)} from {esc(run.run_dir)}; '
              f'metric {esc(run.metric)}.</footer>\n</main>\n</body>\n</html>\n')


SECTION_BUILDERS = (section_progress, section_importance, section_parallel, section_curves, section_best,
                    section_top, section_files)


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report/ (index.html and its PNGs) for a finished (or interrupted) search; return the
    path of index.html. The folder is built beside report/ and renamed into place, so a reader sees the
    old report or the new one, never half of one."""
    run = load_run(run_dir)
    target = run.run_dir / "report"
    with atomic_dir(target) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
        sections = [build(run, tmp) for build in SECTION_BUILDERS]
        (tmp / "index.html").write_text(page_html(run, sections), encoding="utf-8")
    return target / "index.html"
