"""What a finished search leaves in runs/NAME: trials.csv, best/ (config, predictions, metrics,
features), and the summary printed at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from auttention.config import to_dict
from auttention.io import write_csv, write_json, write_yaml

FLAT_SEP = "."


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}{FLAT_SEP}"))
        else:
            out[name] = value
    return out


def trial_status(result) -> str:
    """completed (all epochs), stopped (ended early by ASHA or the budget) or errored."""
    if result.error is not None:
        return "errored"
    metrics = result.metrics or {}
    if metrics.get("epoch", 0) >= metrics.get("max_epochs", math.inf):
        return "completed"
    return "stopped"


def trials_table(results, metric: str) -> pd.DataFrame:
    """One row per trial: id, status, best metric, epochs, wall time, node(s), error, configuration."""
    from .rundata import read_progress

    rows = []
    for result in results:
        metrics = result.metrics or {}
        # every epoch from the trial's progress.csv: Tune's own metrics_dataframe comes from result.json,
        # which Tune starts afresh when it restores a trial (after a node loss it would forget the
        # epochs, best score and node from before the restore)
        history = read_progress(Path(result.path), metric) if result.path else pd.DataFrame()
        if not len(history) and result.metrics_dataframe is not None:
            history = result.metrics_dataframe
        best = history[metric].max() if metric in history else float("nan")
        nodes = sorted(set(history["node_id"].dropna())) if "node_id" in history else []
        error = ""
        if result.error is not None:
            lines = [ln.strip() for ln in str(result.error).strip().splitlines() if ln.strip()]
            error = lines[-1] if lines else type(result.error).__name__
        rows.append({
            "trial_id": metrics.get("trial_id") or Path(result.path).name,
            "status": trial_status(result),
            f"best_{metric}": best,
            "epochs": int(metrics.get("epoch", 0) or 0),
            "wall_seconds": round(float(metrics.get("time_total_s", 0.0) or 0.0), 1),
            "node_ids": " ".join(nodes),
            "error": error,
            **{f"config.{k}": v for k, v in _flatten(result.config or {}).items()},
        })
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(f"best_{metric}", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    return table


def export_best(run_dir: Path, cfg, epoch: int, evaluations: dict, frames: dict, trial_id: str) -> Path:
    """Write best/: config.yaml (re-runnable with `pipeline --config`), predictions, metrics, features."""
    from auttention.features import write_features
    from auttention.scoring import write_predictions

    best = run_dir / "best"
    best.mkdir(parents=True, exist_ok=True)
    config = to_dict(cfg)
    config["training"]["epochs"] = int(epoch)
    write_yaml(best / "config.yaml", config)
    fusion = evaluations["fusion"]
    write_predictions(best / "predictions.test.csv", fusion.test, cfg.scoring)
    write_predictions(best / "predictions.devel.csv", fusion.devel, cfg.scoring)
    write_json(best / "metrics.json", {"trial_id": trial_id, "epoch": int(epoch),
                                       **{name: ev.metrics() for name, ev in evaluations.items()}})
    fused = frames["fusion"]
    for part in ("train", "devel", "test"):
        write_features(fused[fused["partition"] == part], best / "features" / part)
    return best


def _short(value: Any) -> str:
    """A configuration value as a short cell: floats to 3 significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary(table: pd.DataFrame, metric: str, evaluations: dict | None, top: int = 5) -> str:
    """The text printed at the end: counts, the top trials, and the best's devel/test table."""
    from auttention.pipeline import table as paper_table

    counts = table["status"].value_counts().to_dict() if len(table) else {}
    lines = [f"{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if len(table):
        params = [c for c in table.columns if c.startswith("config.")]
        varied = [c for c in params if table[c].astype(str).nunique() > 1][:5]
        head = table.head(top)
        columns = {"trial": head["trial_id"], "status": head["status"], "epochs": head["epochs"],
                   metric: head[f"best_{metric}"].map(lambda v: f"{v:.3f}" if pd.notna(v) else "-")}
        columns.update({c[len("config."):]: head[c].map(_short) for c in varied})
        cells = {name: [str(v) for v in values] for name, values in columns.items()}
        widths = {name: max(len(name), *(len(v) for v in vals)) for name, vals in cells.items()}
        lines.append("")
        lines.append("  ".join(name.ljust(widths[name]) for name in cells).rstrip())
        for i in range(len(head)):
            lines.append("  ".join(cells[name][i].ljust(widths[name]) for name in cells).rstrip())
    if evaluations:
        lines += ["", "best configuration (SVR refit on train+devel for test):", paper_table(evaluations)]
    return "\n".join(lines)
