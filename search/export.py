"""What a finished search leaves in runs/NAME: trials.csv, best/ (config, predictions, metrics,
features), and the summary printed at the end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from auttention.confidence import interval_json, rho_ci
from auttention.config import to_dict
from auttention.evaluation import Evaluation, held_out_score, versus_entry
from auttention.features import write_features
from auttention.formatting import format_rho, format_scores, versus_line
from auttention.formatting import table as paper_table
from auttention.io import write_csv, write_json, write_yaml
from auttention.metric import spearman
from auttention.predictions import write_predictions
from auttention.record import (
    FUNCTIONALS,
    FUSION,
    SELECTION,
    EpochReport,
    Predictions,
    recorded_validation,
    status,
    validation_label,
)

from .keys import flat_columns
from .rundata import read_progress
from .selection import Candidate, SeedRun, Selection, ensemble, trial_id

VERSUS = f"exported_vs_{FUNCTIONALS}"  # best/metrics.json's entry of the paired difference to the baseline

if TYPE_CHECKING:
    from auttention.config import PipelineConfig, ScoringConfig

    from .space import ExperimentConfig, Space


def trials_table(
    results, metric: str, confirmed: list[Candidate] | None = None, folder_of: Callable[[Any], Path] | None = None
) -> pd.DataFrame:
    """One row per trial: id, status, selection score, best metric, epochs, wall time, node(s), error, the
    confirmation over further seeds (for the confirmed trials), configuration. Sorted by selection score.
    folder_of(result): the local folder holding the trial's progress.csv (default: result.path)."""
    confirmation = {c.trial_id: c for c in confirmed or []}

    rows = []
    for result in results:
        last = EpochReport.from_result(result.metrics)
        # every epoch from the trial's progress.csv: Tune's own metrics_dataframe comes from result.json,
        # which Tune starts afresh when it restores a trial (after a node loss it would forget the
        # epochs, best score and node from before the restore)
        history = (
            read_progress(folder_of(result) if folder_of else Path(result.path), metric)
            if result.path
            else pd.DataFrame()
        )
        if not len(history) and result.metrics_dataframe is not None:
            history = result.metrics_dataframe
        best = history[metric].max() if metric in history else float("nan")
        selection = (
            history[SELECTION].dropna().iloc[-1]
            if SELECTION in history and history[SELECTION].notna().any()
            else float("nan")
        )
        nodes = sorted(set(history["node_id"].dropna())) if "node_id" in history else []
        error = ""
        if result.error is not None:
            lines = [ln.strip() for ln in str(result.error).strip().splitlines() if ln.strip()]
            error = lines[-1] if lines else type(result.error).__name__
        tid = trial_id(result)
        cand = confirmation.get(tid)
        rows.append(
            {
                "trial_id": tid,
                "status": status(last, result.error is not None),
                SELECTION: selection,
                f"best_{metric}": best,
                "confirmation_selection_score": cand.mean_selection if cand else float("nan"),
                "confirmation_seeds": " ".join(_seed_text(run) for run in cand.runs) if cand else "",
                "epochs": last.epoch,
                "wall_seconds": round(last.trial_seconds if math.isfinite(last.trial_seconds) else 0.0, 1),
                "node_ids": " ".join(nodes),
                "error": error,
                **{f"config.{k}": v for k, v in flat_columns(result.config or {}).items()},
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        # the exported trial first (the best mean over confirmation seeds), then by selection score
        table = table.sort_values(
            ["confirmation_selection_score", SELECTION, f"best_{metric}"],
            ascending=False,
            na_position="last",
            kind="stable",
        ).reset_index(drop=True)
    return table


def _seed_text(run: SeedRun) -> str:
    """seed=selection score/test rho of one confirmation run (test 'n/a' without test labels)."""
    if run.diverged:
        return f"{run.seed}=diverged"
    return f"{run.seed}={run.selection_score:.3f}/{format_rho(run.test_rho)}"


@dataclasses.dataclass
class Reference:
    """The functionals baseline of the corpus (runner.reference): its feature set, the SVR settings it was
    scored with, and that evaluation."""

    frame: pd.DataFrame
    scoring: ScoringConfig
    evaluation: Evaluation

    def fused(self, space: Space) -> pd.DataFrame | None:
        """The feature set, where a configuration of `space` fuses it (scoring.fuse), for the trials and the
        confirmation; else None (nothing to ship to them)."""
        return self.frame if any(FUNCTIONALS in str(v).split("+") for v in space.values("scoring", "fuse")) else None

    def evaluated(self, scoring: ScoringConfig) -> Evaluation:
        """Its evaluation by `scoring` (the exported configuration's SVR settings; scored again if they differ)."""
        from auttention.evaluation import evaluate

        return self.evaluation if scoring == self.scoring else evaluate(self.frame, scoring)


@dataclasses.dataclass
class Exported:
    """What the export stage wrote: trials.csv's table and, where a trial was chosen, best/ (its folder,
    the metrics.json written there, the chosen trial's own model's evaluations)."""

    table: pd.DataFrame
    folder: Path | None = None
    metrics: dict[str, Any] | None = None
    evaluations: dict[str, Any] | None = None  # with the functionals baseline's where there is one


def export(
    run_dir: Path,
    results,
    selection: Selection,
    space: Space,
    folder_of: Callable[[Any], Path] | None = None,
    reference: Reference | None = None,
) -> Exported:
    """The export stage: trials.csv (folder_of: as trials_table's), and best/ for the chosen candidate (with
    the `reference` baseline beside it where given)."""
    table = trials_table(results, space.experiment.metric, selection.confirmed, folder_of=folder_of)
    write_csv(run_dir / "trials.csv", table)
    if selection.chosen is None:
        return Exported(table)
    cfg = selection.chosen.config
    folder, metrics = export_best(run_dir, cfg, selection.chosen, selection.confirmed, space.experiment, reference)
    evaluations = dict(selection.chosen.evaluations)
    if reference is not None:  # the rows in the order every table has them: networks, functionals, fusion
        fusion = evaluations.pop(FUSION)
        evaluations.update({FUNCTIONALS: reference.evaluated(cfg.scoring), FUSION: fusion})
    return Exported(table, folder, metrics, evaluations)


def export_best(
    run_dir: Path,
    cfg: PipelineConfig,
    chosen: Candidate,
    confirmed: list[Candidate],
    experiment: ExperimentConfig,
    reference: Reference | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write best/: config.yaml (re-runnable with `pipeline --config`), predictions, metrics (with how the
    configuration was chosen: its selection score and every confirmed candidate's seeds), features, from
    `chosen`'s checkpoint as confirm scored it; with a `reference`, its evaluation by the same SVR settings
    (metrics.json's `functionals`, its predictions in best/functionals/) and the paired difference of the
    exported predictions to it on the same clips (`exported_vs_functionals`). Returns best/ and the metrics
    written to its metrics.json."""
    folder = run_dir / "best"
    folder.mkdir(parents=True, exist_ok=True)
    evaluations, fusion = chosen.evaluations, chosen.features[FUSION]
    config = to_dict(cfg)
    config["training"]["epochs"] = int(chosen.epoch)
    write_yaml(folder / "config.yaml", config)
    # the exported predictions: the chosen configuration's models over its seeds, averaged (one model's
    # where there was no confirmation); the trial's own model's beside them in single/
    combined = ensemble_scores(chosen, fusion, cfg.scoring) if len(chosen.predictions) > 1 else None
    predictions = combined["predictions"] if combined else Predictions.of(evaluations[FUSION])
    # several configurations averaged, where experiment.ensemble_top allows it and devel says it pays
    across = configurations_ensemble(confirmed, fusion, cfg.scoring, experiment.ensemble_top)
    if across and across["k"] > 1:
        predictions = across["predictions"]
    for part in ("devel", "test"):
        write_predictions(folder / f"predictions.{part}.csv", predictions.part(part), cfg.scoring)
        write_predictions(
            folder / "single" / f"predictions.{part}.csv", getattr(evaluations[FUSION], part), cfg.scoring
        )
    metrics = {
        "trial_id": chosen.trial_id,
        "epoch": int(chosen.epoch),
        **{name: ev.metrics() for name, ev in evaluations.items()},
        "selection": {
            "select": experiment.select,
            "select_last": experiment.select_last,
            SELECTION: chosen.score,
            "mean_selection_score_over_seeds": chosen.mean_selection,
            "chosen_by": "the best mean selection score over seeds (test rho shown, never used to choose)",
        },
        "confirmation": [c.record() for c in confirmed],
        "ensemble": {k: v for k, v in combined.items() if k != "predictions"} if combined else None,
        "configurations": {k: v for k, v in across.items() if k != "predictions"} if across else None,
        "made_from": fusion.attrs.get("made_from", {}),
    }
    if reference is not None:
        baseline = reference.evaluated(cfg.scoring)
        truth = fusion[[c for c in ("file_name", "label", "speaker") if c in fusion.columns]]
        metrics[FUNCTIONALS] = baseline.metrics()
        metrics[VERSUS] = versus_entry(predictions, baseline, truth)
        for part in ("devel", "test"):
            write_predictions(folder / FUNCTIONALS / f"predictions.{part}.csv", getattr(baseline, part), cfg.scoring)
    write_json(folder / "metrics.json", metrics)
    for part in ("train", "devel", "test"):
        write_features(fusion[fusion["partition"] == part], folder / "features" / part)
    return folder, metrics


def configurations_ensemble(
    confirmed: list[Candidate], frame: pd.DataFrame, scoring: ScoringConfig, top: int
) -> dict[str, Any] | None:
    """The best k <= `top` confirmed configurations (by mean selection score over seeds; any with a diverged
    seed left out) averaged, each over its seeds (selection.ensemble): k is the one whose average has the
    best validation score (scoring.validation's; the devel rho under devel; the smallest k on ties), never
    chosen by test. {k, members, by_k: [{k, score, devel_rho, test_rho}], contributions: {trial: score of
    the k-ensemble minus that of the others without it}, the chosen k's score, devel/test rho and intervals,
    predictions}; None with top 1 or fewer than two members."""
    ranked = sorted(
        (c for c in confirmed if math.isfinite(c.mean_selection)), key=lambda c: c.mean_selection, reverse=True
    )[:top]
    if top < 2 or len(ranked) < 2:
        return None
    options = [ensemble_scores(ranked[:k], frame, scoring) for k in range(1, len(ranked) + 1)]
    scores = [o["score"] if o["score"] is not None and math.isfinite(o["score"]) else -math.inf for o in options]
    k = scores.index(max(scores)) + 1
    best = options[k - 1]
    contributions = {}
    if k > 1:
        for member in ranked[:k]:
            others = ensemble_scores([m for m in ranked[:k] if m is not member], frame, scoring)
            contributions[member.trial_id] = best["score"] - others["score"]
    return {
        "k": k,
        "members": [c.trial_id for c in ranked[:k]],
        "by_k": [
            {"k": i + 1, "score": o["score"], "devel_rho": o["devel_rho"], "test_rho": o.get("test_rho")}
            for i, o in enumerate(options)
        ],
        "contributions": contributions,
        "chosen_by": f"the {validation_label(scoring.validation, scoring.folds)} score of the average "
        f"(test shown, never used to choose)",
        **{key: value for key, value in best.items() if key != "seeds"},
    }


def ensemble_scores(cand: Candidate | list[Candidate], frame: pd.DataFrame, scoring: ScoringConfig) -> dict[str, Any]:
    """The ensemble's (one configuration's seeds, or several configurations': selection.ensemble) predictions,
    their devel and test rho (test where labels are known) and validation score (scoring.validation's, on the
    averaged held-out predictions), each with its 95% bootstrap interval (*_ci: [lo, hi] or None; speakers
    resampled where the frame has them)."""
    predictions = ensemble(cand, scoring)
    indexed = frame.set_index("file_name")
    members = cand if isinstance(cand, list) else [cand]
    out: dict[str, Any] = {
        "seeds": [run.seed for m in members for run in m.runs],
        "resampled": "speakers" if "speaker" in indexed.columns else "clips",
        "validation": scoring.validation,
    }
    for part in ("devel", "test"):
        pred = predictions.part(part)
        y = indexed.loc[pred["file_name"], "label"].to_numpy(dtype=float)
        known = ~np.isnan(y)
        p = pred["prediction"].to_numpy()[known]
        groups = indexed.loc[pred["file_name"], "speaker"].to_numpy()[known] if "speaker" in indexed.columns else None
        out[f"{part}_rho"] = spearman(y[known], p) if known.any() else None
        out[f"{part}_rho_ci"] = interval_json(rho_ci(y[known], p, groups)) if known.any() else None
    truth = frame[[c for c in ("file_name", "label", "speaker") if c in frame.columns]]
    score, ci = held_out_score(predictions.held_out, truth)
    out["score"], out["score_ci"] = score, interval_json(ci)
    return {**out, "predictions": predictions}


def _short(value: Any) -> str:
    """A configuration value as a short cell: floats to 3 significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary(exported: Exported, metric: str, top: int = 5) -> str:
    """The text printed at the end: counts, the top trials, and the chosen trial's devel/test table."""

    table, evaluations = exported.table, exported.evaluations
    seed_ensemble = (exported.metrics or {}).get("ensemble")
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    lines = [f"{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if len(table):
        params = [c for c in table.columns if c.startswith("config.")]
        varied = [c for c in params if table[c].astype(str).nunique() > 1][:5]
        head = table.head(top)
        cell = lambda v: f"{v:.3f}" if pd.notna(v) else "-"
        columns = {
            "trial": head["trial_id"],
            "status": head["status"],
            "epochs": head["epochs"],
            "selection": head[SELECTION].map(cell),
            f"best epoch {metric}": head[f"best_{metric}"].map(cell),
            "over seeds": head["confirmation_selection_score"].map(cell),
        }
        columns.update({c[len("config.") :]: head[c].map(_short) for c in varied})
        cells = {name: [str(v) for v in values] for name, values in columns.items()}
        widths = {name: max(len(name), *(len(v) for v in vals)) for name, vals in cells.items()}
        lines.append("")
        lines.append("  ".join(name.ljust(widths[name]) for name in cells).rstrip())
        for i in range(len(head)):
            lines.append("  ".join(cells[name][i].ljust(widths[name]) for name in cells).rstrip())
    metrics = exported.metrics or {}
    across = metrics.get("configurations")
    if evaluations:
        lines += [
            "",
            (
                "best configuration, the trial's own model, and the functionals baseline by the same SVR "
                "(refit on train+devel for test):"
            ),
            paper_table(evaluations),
        ]
    label = recorded_validation(metrics)
    if seed_ensemble:  # what is exported, unless several configurations are averaged (below)
        what = "the chosen configuration" if across and across["k"] > 1 else "exported"
        lines += [
            (
                f"{what}: its fusion predictions averaged over seeds "
                f"{', '.join(map(str, seed_ensemble['seeds']))}: "
                f"{format_scores({**seed_ensemble, 'score_name': label})}"
            )
        ]
    if across and across["k"] > 1:
        shares = ", ".join(f"{tid} {d:+.3f}" for tid, d in across["contributions"].items())
        lines += [
            (
                f"exported: the best {across['k']} configurations averaged (each over its seeds; k by {label} "
                f"score): {format_scores({**across, 'score_name': label})}; each member's contribution to the "
                f"{label} score (the "
                f"average's minus the others'): {shares}"
            )
        ]
    elif across:
        lines.append(
            f"configurations averaged: none (one configuration has the best {label} score of the averages "
            f"of the best 1..{len(across['by_k'])})"
        )
    if metrics.get(VERSUS):
        lines.append(versus_line(metrics[VERSUS], "exported"))
    return "\n".join(lines)
