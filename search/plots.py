"""The report's figures: Matplotlib (Agg) drawings of a search, each returned as a Figure for save_png.

Matplotlib is imported on first use, not with the module: importing it (and choosing a backend) costs
the CLI start-up time, and most commands never draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from auttention.record import EPOCH

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

# how each trial status is drawn (and named) in figures and on the page
STATUS_STYLE = {
    "completed": {"color": "#0072B2", "marker": "o", "label": "completed"},
    "stopped": {"color": "#E69F00", "marker": "s", "label": "stopped early (ASHA or the time budget)"},
    "errored": {"color": "#D55E00", "marker": "X", "label": "errored"},
}
OTHER_STYLE = {"color": "#777777", "marker": "D", "label": "other"}
TOP_PARALLEL = 20
DPI = 144


def _matplotlib():
    """matplotlib with the Agg backend (files, no display), imported here on first use rather than with the
    module: importing Matplotlib costs every CLI command start-up time, and only the report draws."""
    import matplotlib
    import matplotlib.cm
    import matplotlib.colors

    matplotlib.use("Agg")
    return matplotlib


def _style(status: str) -> dict:
    return STATUS_STYLE.get(status, OTHER_STYLE)


def _figure(width: float, height: float) -> Figure:
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _status_legend(ax, counts: dict[str, int], extra: Iterable[Line2D] = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker=_style(s)["marker"],
            color=_style(s)["color"],
            markersize=7,
            label=f"{_style(s)['label']} ({n})",
        )
        for s, n in counts.items()
        if n
    ]
    handles += list(extra)
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)


REFERENCE_STYLE: dict[str, Any] = {"color": "#b8860b", "ls": "--", "lw": 1.4}  # the functionals baseline's devel line


def _reference(ax, reference: tuple[str, float] | None) -> list[Line2D]:
    """A horizontal line at the baseline's devel score (reference: (label, value)); its legend entry."""
    from matplotlib.lines import Line2D

    if reference is None or not np.isfinite(reference[1]):
        return []
    ax.axhline(reference[1], zorder=1, **REFERENCE_STYLE)
    lo, hi = ax.get_ylim()
    margin = 0.05 * (max(hi, reference[1]) - min(lo, reference[1]))
    ax.set_ylim(min(lo, reference[1] - margin), max(hi, reference[1] + margin))  # the line clear of the frame
    return [Line2D([], [], label=reference[0], **REFERENCE_STYLE)]


def plot_best_so_far(
    points: pd.DataFrame,
    steps: pd.DataFrame,
    x_label: str,
    y_label: str,
    integer_x: bool = False,
    x_from_zero: bool = False,
    reference: tuple[str, float] | None = None,
) -> Figure:
    """Best-so-far line (steps: x, y in order) and one point per trial (points: x, y, status; y NaN =
    no score, drawn on the bottom edge); a dashed line at `reference` (label, value) where given."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = _figure(5.4, 3.7)
    ax = fig.add_subplot()
    finite = points["y"].dropna()
    if reference is not None and np.isfinite(reference[1]):
        finite = pd.concat([finite, pd.Series([reference[1]])])
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
        ax.scatter(
            scored["x"],
            scored["y"],
            s=size,
            marker=style["marker"],
            color=style["color"],
            edgecolor="white",
            linewidth=0.6,
            zorder=3,
        )
        unscored = group[group["y"].isna()]
        if len(unscored):
            ax.scatter(
                unscored["x"],
                [bottom + pad] * len(unscored),
                s=size,
                marker=style["marker"],
                color=style["color"],
                zorder=3,
                clip_on=False,
            )
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
    line += _reference(ax, reference)
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
        bars = ax.barh(
            y - 0.4 + height * (j + 0.5), values, height=height * 0.92, color=colors[j % len(colors)], label=ev
        )
        for bar, value in zip(bars, values):
            ax.text(
                bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.2f}", va="center", fontsize=7.5
            )
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
            ticks = [(((np.log10(u) if use_log else u) - lo) / (hi - lo) if hi > lo else 0.5, f"{u:g}") for u in uniq]
        else:
            ticks = [
                (f, f"{(10 ** (lo + f * (hi - lo)) if use_log else lo + f * (hi - lo)):.3g}")
                for f in ((0.0, 0.5, 1.0) if hi > lo else (0.5,))
            ]
        return pos, ticks
    cats = sorted({str(v) for v in present}, key=lambda s: (0, float(s), s) if _is_float(s) else (1, 0.0, s))
    where = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    pos = np.array([where.get(str(v), np.nan) if pd.notna(v) else np.nan for v in values], dtype=float)
    return pos, [(where[c], c) for c in cats]


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def plot_parallel(
    trials: pd.DataFrame, params: list[str], best_col: str, y_label: str, log_params: set[str], top: int = TOP_PARALLEL
) -> Figure:
    """Parallel coordinates of the `top` trials by best metric: one axis per searched parameter, then
    the metric; lines coloured by the metric, the best trial in black."""
    from matplotlib.lines import Line2D

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
    matplotlib = _matplotlib()
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
            ax.text(
                j + 0.05,
                p,
                _mpl_text(text),
                fontsize=9,
                va="center",
                ha="left",
                zorder=4,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
        if missing:
            ax.text(j + 0.05, -0.14, "n/a", fontsize=7.5, va="center", ha="left", color="#555555", zorder=4)
    labels = [c.removeprefix("config.") for c in params] + [f"best {y_label}"]
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


def plot_curves(
    curves: dict[str, pd.DataFrame],
    statuses: dict[str, str],
    metric: str,
    y_label: str,
    best_id: str | None,
    max_epochs: int | None,
    reference: tuple[str, float] | None = None,
) -> Figure:
    """Devel metric per epoch of every trial, coloured by status; where a trial ended is marked; a dashed
    line at `reference` (label, value) where given."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

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
        ax.plot(
            data[EPOCH],
            data[metric],
            color=style["color"],
            lw=lw,
            alpha=alpha,
            zorder=2,
            ls="-" if status == "completed" else "--",
            marker="o" if len(data) == 1 else None,
            markersize=4,
        )
        if status != "completed":
            ax.scatter(
                data[EPOCH].iloc[-1:],
                data[metric].iloc[-1:],
                marker=style["marker"],
                s=30 if many else 46,
                color=style["color"],
                edgecolor="white",
                linewidth=0.6,
                zorder=5 if status == "errored" else 3,
            )
    extra = []
    if best_id is not None and best_id in curves and len(curves[best_id][curves[best_id][metric].notna()]):
        data = curves[best_id][curves[best_id][metric].notna()]
        ax.plot(data[EPOCH], data[metric], color="black", lw=2.6, zorder=4)
        extra.append(Line2D([], [], color="black", lw=2.6, label=f"best: trial {best_id}"))
    if max_epochs:
        ax.axvline(max_epochs, color="#888888", ls=":", lw=1.2, zorder=1)
        extra.append(Line2D([], [], color="#888888", ls=":", lw=1.2, label=f"max_epochs = {max_epochs}"))
    extra += _reference(ax, reference)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    order = {s: counts[s] for s in [*STATUS_STYLE, *counts] if s in counts}
    handles = [
        Line2D(
            [],
            [],
            color=_style(s)["color"],
            ls="-" if s == "completed" else "--",
            marker=None if s == "completed" else _style(s)["marker"],
            label=f"{_style(s)['label']} ({n})",
        )
        for s, n in order.items()
    ]
    ax.legend(handles=handles + extra, loc="best", fontsize=8, framealpha=0.9)
    return fig


def plot_predictions(true: np.ndarray, pred: np.ndarray, lo: float, hi: float, title: str) -> Figure:
    """Predicted vs true label: a confusion heat map for integer labels and predictions (KSS),
    else a jittered scatter."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(5.0, 4.3)
    ax = fig.add_subplot()
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    integral = (
        np.all(np.mod(true, 1) == 0)
        and np.all(np.mod(pred, 1) == 0)
        and float(lo).is_integer()
        and float(hi).is_integer()
    )
    lo = min(lo, float(true.min()), float(pred.min()))
    hi = max(hi, float(true.max()), float(pred.max()))
    if integral and hi - lo <= 30:
        labels = np.arange(int(lo), int(hi) + 1)
        counts = np.zeros((len(labels), len(labels)), dtype=int)
        for t, p in zip(true.astype(int), pred.astype(int)):
            counts[t - labels[0], p - labels[0]] += 1
        image = ax.imshow(
            counts,
            origin="lower",
            cmap="Blues",
            aspect="equal",
            extent=(labels[0] - 0.5, labels[-1] + 0.5, labels[0] - 0.5, labels[-1] + 0.5),
        )
        top = counts.max() if counts.size else 0
        if len(labels) <= 15:
            for i, t in enumerate(labels):
                for j, p in enumerate(labels):
                    if counts[i, j]:
                        ax.text(
                            float(p),
                            float(t),
                            str(counts[i, j]),
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="white" if counts[i, j] > 0.6 * top else "black",
                        )
        ax.plot(
            [labels[0] - 0.5, labels[-1] + 0.5],
            [labels[0] - 0.5, labels[-1] + 0.5],
            color="#D55E00",
            lw=1,
            ls="--",
            alpha=0.7,
        )
        ax.set_xticks(labels)
        ax.set_yticks(labels)
        bar = fig.colorbar(image, ax=ax, label="clips", fraction=0.046, pad=0.03)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    else:
        rng = np.random.default_rng(0)
        span = max(hi - lo, 1.0)
        jitter = 0.015 * span
        ax.scatter(
            true + rng.uniform(-jitter, jitter, len(true)),
            pred + rng.uniform(-jitter, jitter, len(pred)),
            s=14,
            alpha=0.6,
            color="#0072B2",
            edgecolor="none",
        )
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
    _matplotlib()
    import matplotlib.pyplot as plt  # after the backend is chosen

    fig.savefig(folder / name, dpi=DPI, format="png", facecolor="white")
    plt.close(fig)  # a no-op for figures pyplot does not track; frees it if it does
    return name
