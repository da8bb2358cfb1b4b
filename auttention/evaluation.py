"""The paper's protocol on a feature set: C chosen by the validation score, devel predicted by the SVR fit on
train, test by the SVR refit on train+devel, every figure with its 95% bootstrap interval; paired comparisons of
two systems on the same clips; the `evaluate` step."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .confidence import difference_interval, interval_json, mean_difference_interval, mean_rho_interval, rho_ci
from .config import ScoringConfig
from .corpus import check_label_range, read_labels, with_speakers
from .errors import UserError
from .features import matrix, read_features, speakers
from .io import write_json
from .metric import spearman
from .predictions import write_predictions
from .record import Predictions, validation_label
from .svr import fit_predict
from .validation import FIT_ONLY, cross_validate, fold_score, validation_folds


def held_out_score(
    held_out: pd.DataFrame, truth: pd.DataFrame, intervals: bool = True
) -> tuple[float, tuple[float, float] | None]:
    """The validation score of held-out predictions (file_name, fold, prediction: an Evaluation's `held_out`,
    or an ensemble's average of them) against `truth` (file_name, label, speaker where known), with its 95%
    bootstrap interval (confidence.mean_rho_interval: folds resampled independently, speakers within them
    where known) when `intervals`."""
    both = held_out.merge(truth, on="file_name")
    y, pred, folds = (both[c].to_numpy() for c in ("label", "prediction", "fold"))
    y, pred, folds = y.astype(float), pred.astype(float), folds.astype(int)
    score = fold_score(y, pred, folds)
    if not intervals or len(y) < 2:
        return score, None
    groups = both["speaker"].to_numpy(dtype=object) if "speaker" in both.columns else None
    return score, mean_rho_interval(y, pred, folds, groups)


@dataclass
class Evaluation:
    """Devel choice of C, and test predictions of the scaler+SVR refit on train+devel."""

    c: float
    devel_rho: float
    devel: pd.DataFrame
    test: pd.DataFrame
    test_rho: float | None
    score_per_c: dict[float, float]
    n_train: int  # training clips of the first fit (the refit for test adds the devel clips)
    # 95% bootstrap intervals (lo, hi) of devel_rho and test_rho (None: not computed, or no test labels)
    devel_ci: tuple[float, float] | None = None
    test_ci: tuple[float, float] | None = None
    resampled: str | None = None  # what the bootstrap drew: "speakers" (where known) or "clips"
    # what C was chosen by (scoring.validation, its name as printed), that score at C and its interval, and the
    # held-out predictions it was computed from (file_name, fold, prediction); under devel: devel_rho, devel
    validation: str = "devel"
    label: str = "devel"
    score: float = math.nan
    score_ci: tuple[float, float] | None = None
    held_out: pd.DataFrame | None = None

    def metrics(self) -> dict:
        """Plain figures for metrics.json (n_train_devel: the clips the SVR predicting test was refit on;
        *_rho_ci: [lo, hi] of the 95% bootstrap interval, null where there is none; score: what C was chosen
        by, scoring.validation's, per C in score_per_c)."""
        return {
            "c": self.c,
            "devel_rho": self.devel_rho,
            "test_rho": self.test_rho,
            "devel_rho_ci": interval_json(self.devel_ci),
            "test_rho_ci": interval_json(self.test_ci),
            "resampled": self.resampled,
            "validation": self.validation,
            "score_name": self.label,
            "score": self.score,
            "score_ci": interval_json(self.score_ci),
            "score_per_c": {f"{c:g}": r for c, r in self.score_per_c.items()},
            "n_train_devel": int(self.n_train + len(self.devel)),
            "n_test": len(self.test),
        }


def compare(a: pd.DataFrame, b: pd.DataFrame, truth: pd.DataFrame) -> dict | None:
    """The paired difference rho(a) - rho(b) of two sets of predictions (file_name, prediction) on the clips
    both predict whose label `truth` (file_name, label, and speaker where known) knows, with its 95%
    bootstrap interval (both rhos on the same resamples: speakers where known, clips otherwise; see
    confidence.difference_interval). {"difference", "ci": [lo, hi] or None, "clips", "resampled"}; None
    where fewer than two such clips have a label."""
    both = truth.merge(a[["file_name", "prediction"]], on="file_name").merge(
        b[["file_name", "prediction"]], on="file_name", suffixes=("_a", "_b")
    )
    both = both[both["label"].notna()]
    if len(both) < 2:
        return None
    groups = both["speaker"].to_numpy(dtype=object) if "speaker" in both.columns else None
    diff, lo, hi = difference_interval(
        both["label"].to_numpy(float),
        both["prediction_a"].to_numpy(float),
        both["prediction_b"].to_numpy(float),
        groups,
    )
    return {
        "difference": diff,
        "ci": interval_json((lo, hi)),
        "clips": len(both),
        "resampled": "clips" if groups is None else "speakers",
    }


def compare_held_out(a: pd.DataFrame, b: pd.DataFrame, truth: pd.DataFrame) -> dict | None:
    """The paired difference of two validation scores (`fold_score` of held-out predictions: file_name, fold,
    prediction) on the clips both hold out with the same fold whose label `truth` knows, with its 95%
    bootstrap interval (confidence.mean_difference_interval: folds resampled independently, speakers within
    them where known). `compare`'s entry; None where fewer than two such clips have a label."""
    both = truth.merge(a[["file_name", "fold", "prediction"]], on="file_name").merge(
        b[["file_name", "fold", "prediction"]], on=["file_name", "fold"], suffixes=("_a", "_b")
    )
    both = both[both["label"].notna()]
    if len(both) < 2:
        return None
    y, folds = both["label"].to_numpy(float), both["fold"].to_numpy(int)
    pa, pb = both["prediction_a"].to_numpy(float), both["prediction_b"].to_numpy(float)
    groups = both["speaker"].to_numpy(dtype=object) if "speaker" in both.columns else None
    lo, hi = mean_difference_interval(y, pa, pb, folds, groups)
    return {
        "difference": fold_score(y, pa, folds) - fold_score(y, pb, folds),
        "ci": interval_json((lo, hi)),
        "clips": len(both),
        "resampled": "clips" if groups is None else "speakers",
    }


def evaluate(features: pd.DataFrame, cfg: ScoringConfig, intervals: bool = True) -> Evaluation:
    """The paper's protocol on one feature set (labels in its label column): C chosen by scoring.validation
    (`validation_folds`; devel: the paper's), devel predicted by the SVR fit on train at that C, test by the
    SVR refit on train+devel; with `intervals`, the 95% bootstrap interval of each rho and of the validation
    score, resampling speakers where the set has a speaker column."""
    x_tr, y_tr, f_tr = matrix(features, "train")
    x_dv, y_dv, f_dv = matrix(features, "devel")
    x_te, y_te, f_te = matrix(features, "test")
    for name, y in (("train", y_tr), ("devel", y_dv)):
        if len(y) == 0:
            raise UserError(f"the feature set has no {name} clips; the SVR needs train and devel")
        if np.isnan(y).any():
            raise UserError(f"{int(np.isnan(y).sum())} {name} clip(s) have no label; train and devel need labels")
    g_tr, g_dv, g_te = (speakers(features, p) for p in ("train", "devel", "test"))
    x_fit, y_fit = np.vstack([x_tr, x_dv]), np.concatenate([y_tr, y_dv])
    groups = None if g_tr is None else np.concatenate([g_tr, g_dv])
    folds = validation_folds(np.r_[np.full(len(y_tr), "train"), np.full(len(y_dv), "devel")], groups, cfg)
    chosen = cross_validate(x_fit, y_fit, folds, cfg)
    if cfg.validation == "speaker_folds":  # devel as the paper scores it: the SVR fit on train at the chosen C
        devel_pred = fit_predict(x_tr, y_tr, x_dv, chosen.c, cfg)
    else:  # devel is a fold fit on train alone: its held-out predictions are those
        devel_pred = chosen.predictions[len(y_tr) :]
    test_pred = np.empty(0)
    if len(x_te):
        test_pred = fit_predict(x_fit, y_fit, x_te, chosen.c, cfg)
    known = ~np.isnan(y_te)
    test_rho = spearman(y_te[known], test_pred[known]) if known.any() else None
    held = folds != FIT_ONLY
    files = np.concatenate([f_tr, f_dv])
    ev = Evaluation(
        chosen.c,
        spearman(y_dv, devel_pred),
        pd.DataFrame({"file_name": f_dv, "prediction": devel_pred}),
        pd.DataFrame({"file_name": f_te, "prediction": test_pred}),
        test_rho,
        chosen.score_per_c,
        n_train=len(y_tr),
        validation=cfg.validation,
        label=validation_label(cfg.validation, cfg.folds),
        score=chosen.score,
        held_out=pd.DataFrame({"file_name": files[held], "fold": folds[held], "prediction": chosen.predictions[held]}),
    )
    if intervals:
        ev.resampled = "clips" if g_dv is None else "speakers"
        ev.devel_ci = rho_ci(y_dv, devel_pred, g_dv)
        if test_rho is not None:
            ev.test_ci = rho_ci(y_te[known], test_pred[known], None if g_te is None else g_te[known])
        if cfg.validation == "devel":
            ev.score_ci = ev.devel_ci
        else:
            truth = pd.DataFrame({"file_name": files, "label": y_fit})
            if groups is not None:
                truth["speaker"] = groups
            ev.score_ci = held_out_score(ev.held_out, truth)[1]
    return ev


def evaluate_features(
    features_path: str | os.PathLike, labels_path: str | os.PathLike | None, out: str | os.PathLike, cfg: ScoringConfig
) -> Evaluation:
    """The `evaluate` step: a feature folder scored by the paper's protocol, its test predictions written to `out`.

    Parameters
    ----------
    features_path : folder written by `write_features`
    labels_path : labels.csv (file_name,label) replacing the labels stored with the features, or None; a
        speakers.csv beside it (file_name,speaker) makes the intervals resample speakers
    out : the test predictions CSV; beside it NAME.devel.csv and NAME.metrics.json (NAME is `out`'s
        file name without .test.csv / .csv)
    cfg : the scoring settings; known labels must lie in [label_min, label_max]
    """
    frame = read_features(features_path)
    if labels_path:
        frame = attach_labels(frame, read_labels(labels_path))
        frame = with_speakers(frame.drop(columns="speaker", errors="ignore"), labels_path)  # the corpus' own
        frame.attrs["labels"] = labels_path
    check_label_range(frame, cfg.label_min, cfg.label_max)
    ev = evaluate(frame, cfg)
    write_predictions(out, ev.test, cfg)
    out_path = Path(out)
    stem = out_path.name.removesuffix(".csv").removesuffix(".test")
    write_predictions(out_path.with_name(f"{stem}.devel.csv"), ev.devel, cfg)
    write_json(out_path.with_name(f"{stem}.metrics.json"), ev.metrics())
    return ev


def attach_labels(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Replace a feature set's labels by those of a label table (file_name, label), joined on file_name."""
    table = labels.set_index("file_name")["label"]
    missing = sorted(set(features["file_name"]) - set(table.index))
    if missing:
        raise UserError(f"the label file has no row for {len(missing)} clip(s) of the features, e.g. {missing[0]}")
    out = features.copy()
    out["label"] = table.loc[out["file_name"]].to_numpy(dtype=float)
    return out


def versus(ev: Evaluation, reference: Evaluation, truth: pd.DataFrame) -> dict[str, Any]:
    """{devel, test: scoring.compare of ev's predictions against the reference's on the same clips; and where
    scoring.validation is not devel, score: scoring.compare_held_out of their validation scores}."""
    return versus_entry(Predictions.of(ev), reference, truth)


def versus_entry(predictions: Predictions, reference: Evaluation, truth: pd.DataFrame) -> dict[str, Any]:
    """The paired differences of `predictions` (one model's or an ensemble's) to the `reference` evaluation's on
    the same clips (see `versus`)."""
    out: dict[str, Any] = {
        part: compare(predictions.part(part), getattr(reference, part), truth) for part in ("devel", "test")
    }
    if reference.validation != "devel" and predictions.held_out is not None:
        out["score"] = compare_held_out(predictions.held_out, reference.held_out, truth)
        out["score_name"] = reference.label
    return out
