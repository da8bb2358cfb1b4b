"""The paper's scoring: min-max scaling fit on train, linear SVR with C chosen on devel by
Spearman's rho of rounded and clipped predictions, refit on train+devel, predictions for test.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import ScoringConfig
from .corpus import check_label_range, read_labels, speakers_beside, with_speakers
from .errors import UserError
from .features import matrix, read_features, speakers
from .io import write_csv, write_json


def spearman(truth: np.ndarray, pred: np.ndarray) -> float:
    """Spearman's rho; NaN where it is undefined (fewer than two labels, or every label equal: there is
    nothing to rank), 0.0 for constant predictions (a model that ranks nothing scores as chance, so that
    C and trials stay comparable)."""
    from scipy.stats import spearmanr

    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    if len(truth) < 2 or np.ptp(truth) == 0:
        return math.nan
    if np.ptp(pred) == 0:
        return 0.0
    rho = spearmanr(truth, pred).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)


RHO_UNDEFINED = "undefined (every label equal)"


def format_rho(rho: float | None, digits: int = 3, missing: str = "n/a") -> str:
    """A Spearman's rho as every command and the report print it: `digits` decimals; RHO_UNDEFINED where it
    is undefined (NaN, see `spearman`), never a number; `missing` where there is none (None: labels unknown)."""
    if rho is None:
        return missing
    if math.isnan(rho):
        return RHO_UNDEFINED
    return f"{rho:.{digits}f}"


def format_rho_ci(rho: float | None, ci: Sequence[float] | None, missing: str = "n/a") -> str:
    """A rho with its 95% interval as every command and the report print it: "0.577 [0.41, 0.72]" (the rho
    as `format_rho` prints it everywhere else; the interval, see auttention/confidence.py, to 2 decimals);
    `format_rho`'s words where rho is undefined or missing, the rho alone where there is no interval (none
    computed, or undefined in most resamples)."""
    shown = format_rho(rho, missing=missing)
    if rho is None or math.isnan(rho) or ci is None or any(v is None or math.isnan(v) for v in ci):
        return shown
    return f"{shown} [{ci[0]:.2f}, {ci[1]:.2f}]"


def postprocess(pred: np.ndarray, cfg: ScoringConfig) -> np.ndarray:
    """Round (if cfg.round) and clip predictions to [label_min, label_max]."""
    pred = np.round(pred) if cfg.round else np.asarray(pred, float)
    return np.clip(pred, cfg.label_min, cfg.label_max)


def model(complexities: Sequence[float], cfg: ScoringConfig):
    """The paper's model for every C of `complexities`: min-max scaling, then the linear SVR.

    `LinearSVRPath` minimises LinearSVR's objective (epsilon-insensitive loss, epsilon 0; the intercept
    regularised as liblinear does) for the whole grid with one factorisation and warm starts: the
    same models, far faster where clips outnumber features (see auttention/svr.py)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from .svr import LinearSVRPath

    return make_pipeline(MinMaxScaler(), LinearSVRPath(complexities, max_iter=cfg.max_iter))


def fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_pred: np.ndarray, c: float, cfg: ScoringConfig) -> np.ndarray:
    """Min-max scaler + linear SVR (C=c) fit on (x_fit, y_fit); post-processed predictions for x_pred."""
    return postprocess(_fit(model([c], cfg), x_fit, y_fit).predict(x_pred)[:, 0], cfg)


def _fit(pipeline, x: np.ndarray, y: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # as with liblinear before: a C that stops at max_iter is scored as it stands
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y)


@dataclass
class DevelScore:
    """The outcome of choosing C on devel."""

    c: float
    rho: float
    predictions: np.ndarray
    rho_per_c: dict[float, float] = field(default_factory=dict)


def select_c(x_train: np.ndarray, y_train: np.ndarray, x_devel: np.ndarray, y_devel: np.ndarray,
             cfg: ScoringConfig) -> DevelScore:
    """Fit on train for every C of the grid; keep the C with the best devel rho (first on ties).

    x_train (n_train, d), x_devel (n_devel, d): features; y_*: labels. One pipeline fit serves the
    whole grid (the scaler fit once on train, the SVR warm-started from C to C)."""
    predictions = _fit(model(cfg.complexities, cfg), x_train, y_train).predict(x_devel)
    best: DevelScore | None = None
    rhos: dict[float, float] = {}
    for c, pred in zip(cfg.complexities, predictions.T):
        pred = postprocess(pred, cfg)
        rho = spearman(y_devel, pred)
        rhos[float(c)] = rho
        # a defined rho beats an undefined one (NaN compares False); the first C wins ties
        if best is None or rho > best.rho or (math.isnan(best.rho) and not math.isnan(rho)):
            best = DevelScore(float(c), rho, pred)
    best.rho_per_c = rhos
    return best


@dataclass
class Evaluation:
    """Devel choice of C, and test predictions of the scaler+SVR refit on train+devel."""

    c: float
    devel_rho: float
    devel: pd.DataFrame
    test: pd.DataFrame
    test_rho: float | None
    rho_per_c: dict[float, float]
    n_train: int  # training clips of the first fit (the refit for test adds the devel clips)
    # 95% bootstrap intervals (lo, hi) of devel_rho and test_rho (None: not computed, or no test labels)
    devel_ci: tuple[float, float] | None = None
    test_ci: tuple[float, float] | None = None
    resampled: str | None = None  # what the bootstrap drew: "speakers" (where known) or "clips"

    def metrics(self) -> dict:
        """Plain figures for metrics.json (n_train_devel: the clips the SVR predicting test was refit on;
        *_rho_ci: [lo, hi] of the 95% bootstrap interval, null where there is none)."""
        return {"c": self.c, "devel_rho": self.devel_rho, "test_rho": self.test_rho,
                "devel_rho_ci": interval_json(self.devel_ci), "test_rho_ci": interval_json(self.test_ci),
                "resampled": self.resampled,
                "devel_rho_per_c": {f"{c:g}": r for c, r in self.rho_per_c.items()},
                "n_train_devel": int(self.n_train + len(self.devel)), "n_test": int(len(self.test))}


def interval_json(ci: tuple[float, float] | None) -> list[float] | None:
    """An interval as JSON holds it: [lo, hi], or None where there is none or it is undefined."""
    if ci is None or any(math.isnan(v) for v in ci):
        return None
    return [float(ci[0]), float(ci[1])]


def rho_ci(y: np.ndarray, pred: np.ndarray, groups: np.ndarray | None) -> tuple[float, float] | None:
    """The 95% bootstrap interval of a rho as the product reports it (seed 0, B = 1000; speakers resampled
    when `groups` is given); None where there are fewer than two clips."""
    from .confidence import rho_interval

    return rho_interval(y, pred, groups) if len(y) >= 2 else None


def compare(a: pd.DataFrame, b: pd.DataFrame, truth: pd.DataFrame) -> dict | None:
    """The paired difference rho(a) - rho(b) of two sets of predictions (file_name, prediction) on the clips
    both predict whose label `truth` (file_name, label, and speaker where known) knows, with its 95%
    bootstrap interval (both rhos on the same resamples: speakers where known, clips otherwise; see
    confidence.difference_interval). {"difference", "ci": [lo, hi] or None, "clips", "resampled"}; None
    where fewer than two such clips have a label."""
    from .confidence import difference_interval

    both = truth.merge(a[["file_name", "prediction"]], on="file_name") \
        .merge(b[["file_name", "prediction"]], on="file_name", suffixes=("_a", "_b"))
    both = both[both["label"].notna()]
    if len(both) < 2:
        return None
    groups = both["speaker"].to_numpy(dtype=object) if "speaker" in both.columns else None
    diff, lo, hi = difference_interval(both["label"].to_numpy(float), both["prediction_a"].to_numpy(float),
                                       both["prediction_b"].to_numpy(float), groups)
    return {"difference": diff, "ci": interval_json((lo, hi)), "clips": int(len(both)),
            "resampled": "clips" if groups is None else "speakers"}


def format_difference(entry: dict | None, missing: str = "n/a") -> str:
    """A paired difference (`compare`) as every command and the report print it: "+0.099 [-0.06, +0.25]"."""
    if not entry or entry.get("difference") is None or math.isnan(entry["difference"]):
        return missing
    shown = f"{entry['difference']:+.3f}"
    ci = entry.get("ci")
    return f"{shown} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else shown


def evaluate(features: pd.DataFrame, cfg: ScoringConfig, intervals: bool = True) -> Evaluation:
    """The paper's protocol on one feature set (labels in its label column); with `intervals`, the 95%
    bootstrap interval of each rho, resampling speakers where the set has a speaker column."""
    x_tr, y_tr, _ = matrix(features, "train")
    x_dv, y_dv, f_dv = matrix(features, "devel")
    x_te, y_te, f_te = matrix(features, "test")
    for name, y in (("train", y_tr), ("devel", y_dv)):
        if len(y) == 0:
            raise UserError(f"the feature set has no {name} clips; the SVR needs train and devel")
        if np.isnan(y).any():
            raise UserError(f"{int(np.isnan(y).sum())} {name} clip(s) have no label; train and devel need labels")
    chosen = select_c(x_tr, y_tr, x_dv, y_dv, cfg)
    test_pred = np.empty(0)
    if len(x_te):
        test_pred = fit_predict(np.vstack([x_tr, x_dv]), np.concatenate([y_tr, y_dv]), x_te, chosen.c, cfg)
    known = ~np.isnan(y_te)
    test_rho = spearman(y_te[known], test_pred[known]) if known.any() else None
    ev = Evaluation(chosen.c, chosen.rho,
                    pd.DataFrame({"file_name": f_dv, "prediction": chosen.predictions}),
                    pd.DataFrame({"file_name": f_te, "prediction": test_pred}), test_rho, chosen.rho_per_c,
                    n_train=len(y_tr))
    if intervals:
        g_dv, g_te = speakers(features, "devel"), speakers(features, "test")
        ev.resampled = "clips" if g_dv is None else "speakers"
        ev.devel_ci = rho_ci(y_dv, chosen.predictions, g_dv)
        if test_rho is not None:
            ev.test_ci = rho_ci(y_te[known], test_pred[known], None if g_te is None else g_te[known])
    return ev


def evaluate_features(features_path: str | os.PathLike, labels_path: str | os.PathLike | None,
                      out: str | os.PathLike, cfg: ScoringConfig) -> Evaluation:
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


def write_predictions(path: str | os.PathLike, predictions: pd.DataFrame, cfg: ScoringConfig) -> Path:
    """Write ComParE-style predictions (file_name,prediction), atomically."""
    out = predictions[["file_name", "prediction"]].copy()
    if cfg.round:
        out["prediction"] = out["prediction"].round().astype(int)
    write_csv(path, out)
    return Path(path)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions CSV (file_name,prediction)."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such predictions file") from None
    except Exception as exc:
        raise UserError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None
    if not {"file_name", "prediction"} <= set(table.columns):
        raise UserError(f"{path}: expected columns file_name,prediction")
    if not np.isfinite(pd.to_numeric(table["prediction"], errors="coerce")).all():
        raise UserError(f"{path}: some predictions are not numbers")
    return table


def score_predictions(predictions: pd.DataFrame, labels: pd.DataFrame
                      ) -> tuple[float, int, tuple[float, float] | None, str]:
    """Spearman's rho of predictions against known labels: (rho, number of clips scored, its 95% bootstrap
    interval, what was resampled). Speakers are resampled where the speakers.csv beside the label file
    (labels.attrs["labels"]) names every scored clip's speaker, clips otherwise."""
    merged = predictions.merge(labels[["file_name", "label"]], on="file_name", how="left")
    unknown = merged["label"].isna()
    if unknown.all():
        raise UserError("none of the predicted clips has a known label (ComParE ships test labels as '?'); "
                        "nothing to score")
    scored = merged[~unknown]
    y, pred = scored["label"].to_numpy(), scored["prediction"].to_numpy(dtype=float)
    table = speakers_beside(labels.attrs["labels"]) if labels.attrs.get("labels") else None
    groups = None
    if table is not None:
        speaker = scored["file_name"].map(dict(zip(table["file_name"], table["speaker"].str.strip())))
        groups = speaker.to_numpy(dtype=object) if speaker.notna().all() else None
    return spearman(y, pred), int(len(scored)), rho_ci(y, pred, groups), "clips" if groups is None else "speakers"
