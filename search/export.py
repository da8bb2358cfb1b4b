"""What a finished search leaves in runs/NAME: trials.csv, best/ (config, predictions, metrics,
features), and the summary printed at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auttention.config import to_dict
from auttention.io import write_csv, write_json, write_yaml

from .keys import flat_columns

SELECTION = "selection_score"


def trial_status(result) -> str:
    """completed (all epochs), stopped (ended early by ASHA or the budget) or errored."""
    if result.error is not None:
        return "errored"
    metrics = result.metrics or {}
    if metrics.get("epoch", 0) >= metrics.get("max_epochs", math.inf):
        return "completed"
    return "stopped"


def trials_table(results, metric: str, confirmed: list | None = None, folder_of=None) -> pd.DataFrame:
    """One row per trial: id, status, selection score, best metric, epochs, wall time, node(s), error, the
    confirmation over further seeds (for the confirmed trials), configuration. Sorted by selection score.
    folder_of(result): the local folder holding the trial's progress.csv (default: result.path)."""
    confirmation = {c.trial_id: c for c in confirmed or []}
    from .rundata import read_progress

    rows = []
    for result in results:
        metrics = result.metrics or {}
        # every epoch from the trial's progress.csv: Tune's own metrics_dataframe comes from result.json,
        # which Tune starts afresh when it restores a trial (after a node loss it would forget the
        # epochs, best score and node from before the restore)
        history = read_progress(folder_of(result) if folder_of else Path(result.path), metric) if result.path \
            else pd.DataFrame()
        if not len(history) and result.metrics_dataframe is not None:
            history = result.metrics_dataframe
        best = history[metric].max() if metric in history else float("nan")
        selection = history[SELECTION].dropna().iloc[-1] if SELECTION in history and history[SELECTION].notna().any() \
            else float("nan")
        nodes = sorted(set(history["node_id"].dropna())) if "node_id" in history else []
        error = ""
        if result.error is not None:
            lines = [ln.strip() for ln in str(result.error).strip().splitlines() if ln.strip()]
            error = lines[-1] if lines else type(result.error).__name__
        trial_id = metrics.get("trial_id") or Path(result.path).name
        cand = confirmation.get(str(trial_id))
        rows.append({
            "trial_id": trial_id,
            "status": trial_status(result),
            SELECTION: selection,
            f"best_{metric}": best,
            "confirmation_devel_rho": cand.mean_devel if cand else float("nan"),
            "confirmation_seeds": " ".join(_seed_text(s) for s in cand.seeds) if cand else "",
            "epochs": int(metrics.get("epoch", 0) or 0),
            "wall_seconds": round(float(metrics.get("time_total_s", 0.0) or 0.0), 1),
            "node_ids": " ".join(nodes),
            "error": error,
            **{f"config.{k}": v for k, v in flat_columns(result.config or {}).items()},
        })
    table = pd.DataFrame(rows)
    if len(table):
        # the exported trial first (the best mean over confirmation seeds), then by selection score
        table = table.sort_values(["confirmation_devel_rho", SELECTION, f"best_{metric}"], ascending=False,
                                  na_position="last", kind="stable").reset_index(drop=True)
    return table


def _seed_text(seed: dict) -> str:
    """seed=devel/test of one confirmation run (test 'n/a' without test labels)."""
    test = f"{seed['test_rho']:.3f}" if seed.get("test_rho") is not None else "n/a"
    return f"{seed['seed']}={seed['devel_rho']:.3f}/{test}"


def export_best(run_dir: Path, cfg, epoch: int, evaluations: dict, frames: dict, best, confirmed: list,
                experiment) -> Path:
    """Write best/: config.yaml (re-runnable with `pipeline --config`), predictions, metrics (with how the
    configuration was chosen: its selection score and every confirmed candidate's seeds), features."""
    from auttention.features import write_features
    from auttention.scoring import write_predictions

    best_trial, best = best, run_dir / "best"
    best.mkdir(parents=True, exist_ok=True)
    config = to_dict(cfg)
    config["training"]["epochs"] = int(epoch)
    write_yaml(best / "config.yaml", config)
    fusion = frames["fusion"]
    # the exported predictions: the chosen configuration's models over its seeds, averaged (one model's
    # where there was no confirmation); the trial's own model's beside them in single/
    combined = ensemble_scores(best_trial, fusion, cfg.scoring) if len(best_trial.predictions) > 1 else None
    chosen = combined["predictions"] if combined else {"devel": evaluations["fusion"].devel,
                                                      "test": evaluations["fusion"].test}
    for part in ("devel", "test"):
        write_predictions(best / f"predictions.{part}.csv", chosen[part], cfg.scoring)
        write_predictions(best / "single" / f"predictions.{part}.csv", getattr(evaluations["fusion"], part),
                          cfg.scoring)
    write_json(best / "metrics.json", {
        "trial_id": best_trial.trial_id, "epoch": int(epoch),
        **{name: ev.metrics() for name, ev in evaluations.items()},
        "selection": {"select": experiment.select, "select_last": experiment.select_last,
                      "selection_score": best_trial.score, "mean_devel_rho_over_seeds": best_trial.mean_devel,
                      "chosen_by": "the best mean selection score over seeds (test rho shown, never used to choose)"},
        "confirmation": [c.record() for c in confirmed],
        "ensemble": {k: v for k, v in combined.items() if k != "predictions"} if combined else None,
        "made_from": fusion.attrs.get("made_from", {}),
    })
    for part in ("train", "devel", "test"):
        write_features(fusion[fusion["partition"] == part], best / "features" / part)
    return best


def ensemble_scores(cand, frame: pd.DataFrame, scoring) -> dict[str, Any]:
    """The seed ensemble's predictions and their devel and test rho (test where labels are known)."""
    from auttention.scoring import spearman

    from .selection import ensemble

    predictions = ensemble(cand, scoring)
    labels = frame.set_index("file_name")["label"]
    rho = {}
    for part, pred in predictions.items():
        y = labels.loc[pred["file_name"]].to_numpy(dtype=float)
        known = ~np.isnan(y)
        rho[part] = spearman(y[known], pred["prediction"].to_numpy()[known]) if known.any() else None
    return {"seeds": [s["seed"] for s in cand.seeds], "devel_rho": rho["devel"], "test_rho": rho["test"],
            "predictions": predictions}


def _short(value: Any) -> str:
    """A configuration value as a short cell: floats to 3 significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary(table: pd.DataFrame, metric: str, evaluations: dict | None, top: int = 5,
            ensemble: dict | None = None) -> str:
    """The text printed at the end: counts, the top trials, and the best's devel/test table."""
    from auttention.pipeline import table as paper_table

    counts = table["status"].value_counts().to_dict() if len(table) else {}
    lines = [f"{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if len(table):
        params = [c for c in table.columns if c.startswith("config.")]
        varied = [c for c in params if table[c].astype(str).nunique() > 1][:5]
        head = table.head(top)
        cell = lambda v: f"{v:.3f}" if pd.notna(v) else "-"  # noqa: E731
        columns = {"trial": head["trial_id"], "status": head["status"], "epochs": head["epochs"],
                   "selection": head[SELECTION].map(cell), f"best epoch {metric}": head[f"best_{metric}"].map(cell),
                   "over seeds": head["confirmation_devel_rho"].map(cell)}
        columns.update({c[len("config."):]: head[c].map(_short) for c in varied})
        cells = {name: [str(v) for v in values] for name, values in columns.items()}
        widths = {name: max(len(name), *(len(v) for v in vals)) for name, vals in cells.items()}
        lines.append("")
        lines.append("  ".join(name.ljust(widths[name]) for name in cells).rstrip())
        for i in range(len(head)):
            lines.append("  ".join(cells[name][i].ljust(widths[name]) for name in cells).rstrip())
    if evaluations:
        lines += ["", "best configuration, the trial's own model (SVR refit on train+devel for test):",
                  paper_table(evaluations)]
    if ensemble:
        test = f"{ensemble['test_rho']:.3f}" if ensemble.get("test_rho") is not None else "n/a"
        lines += [f"exported: its fusion predictions averaged over seeds {', '.join(map(str, ensemble['seeds']))}: "
                  f"devel {ensemble['devel_rho']:.3f}, test {test}"]
    return "\n".join(lines)
