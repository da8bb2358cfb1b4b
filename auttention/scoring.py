"""The paper's scoring: min-max scaling fit on train, linear SVR with C chosen on devel by
Spearman's rho of rounded and clipped predictions, refit on train+devel, predictions for test.

scoring.validation may choose C (and so every choice a search makes, which all read the score the
engine reports) on more labelled speakers than devel's: `swap` (train->devel and devel->train, the
two rhos averaged) or `speaker_folds` (K speaker-disjoint folds over train+devel). The test
predictions come from the SVR refit on train+devel whatever the validation.
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
    x = np.vstack([x_train, x_devel])
    folds = np.r_[np.full(len(y_train), FIT_ONLY), np.zeros(len(y_devel), int)]
    chosen = cross_validate(x, np.concatenate([y_train, y_devel]), folds, cfg)
    return DevelScore(chosen.c, chosen.rho, chosen.predictions[len(y_train):], chosen.rho_per_c)


FIT_ONLY = -1  # the fold of a clip every fit uses and none holds out (train under validation: devel)


VALIDATION_TEXT = {  # what each validation's score is, in the words of every table's footnote
    "devel": "devel rho of the SVR fit on train",
    "swap": "the mean of devel's rho (SVR fit on train) and train's (SVR fit on devel)",
    "speaker_folds": "the mean rho of speaker-disjoint folds over train+devel, each predicted by the SVR fit on the others",
}


def validation_label(cfg: ScoringConfig) -> str:
    """The validation's name in every line and table: "devel", "swap" or "5-fold" (speaker_folds)."""
    return f"{cfg.folds}-fold" if cfg.validation == "speaker_folds" else cfg.validation


def validation_folds(partition: np.ndarray, groups: np.ndarray | None, cfg: ScoringConfig) -> np.ndarray:
    """Each train+devel clip's fold under scoring.validation (clips in the order of `partition`, which holds
    "train" or "devel"; `groups` their speakers, or None): every fold k >= 0 is held out in turn and
    predicted by the SVR fit on all other clips (FIT_ONLY clips are fit on, never held out).

    - devel: train FIT_ONLY, devel fold 0 (the paper's);
    - swap: devel fold 0 (fit on train), train fold 1 (fit on devel); speaker-disjoint where the partitions are;
    - speaker_folds: the speakers of train+devel dealt into scoring.folds folds, the speaker with the most
      clips first, each to the fold with the fewest clips so far (ties: the speaker's name, the lower fold):
      balanced, deterministic, and no speaker in two folds."""
    partition = np.asarray(partition)
    if cfg.validation == "devel":
        return np.where(partition == "devel", 0, FIT_ONLY)
    if cfg.validation == "swap":
        return np.where(partition == "devel", 0, 1)
    if groups is None:
        raise UserError("scoring.validation: speaker_folds needs every clip's speaker (lab/speakers.csv with "
                        "file_name,speaker, or a manifest's speaker column); use swap or devel without them")
    names, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
    if len(names) < cfg.folds:
        raise UserError(f"scoring.folds: {cfg.folds} speaker-disjoint folds need at least {cfg.folds} speakers in "
                        f"train+devel, and there are {len(names)}; lower scoring.folds or use validation: swap")
    sizes = np.zeros(cfg.folds, int)
    fold_of = {}
    for i in sorted(range(len(names)), key=lambda i: (-counts[i], names[i])):
        k = int(np.argmin(sizes))
        fold_of[names[i]] = k
        sizes[k] += counts[i]
    return np.array([fold_of[g] for g in np.asarray(groups).astype(str)], int)


def check_validation(corpus: pd.DataFrame, cfg: ScoringConfig) -> None:
    """Refuse, in one line and before anything is extracted or trained, a validation the corpus (file_name,
    partition, speaker where known) cannot give: speaker_folds without speakers or with too few."""
    fit = corpus[corpus["partition"].isin(["train", "devel"])]
    validation_folds(fit["partition"].to_numpy(), fit["speaker"].to_numpy(dtype=object) if "speaker" in fit else None,
                     cfg)


def fold_score(y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> float:
    """The validation score of held-out predictions: the mean over folds (FIT_ONLY clips left out) of each
    fold's Spearman rho; the folds whose rho is undefined are left out (NaN where all are)."""
    rhos = [spearman(y[folds == k], pred[folds == k]) for k in np.unique(folds[folds != FIT_ONLY])]
    defined = [r for r in rhos if not math.isnan(r)]
    return float(np.mean(defined)) if defined else math.nan


@dataclass
class Validated:
    """The C chosen by the validation score, that score per C, and the held-out predictions at that C."""

    c: float
    rho: float  # the validation score at c
    predictions: np.ndarray  # every clip's held-out prediction at c (NaN for FIT_ONLY clips)
    rho_per_c: dict[float, float] = field(default_factory=dict)


def cross_validate(x: np.ndarray, y: np.ndarray, folds: np.ndarray, cfg: ScoringConfig) -> Validated:
    """For every fold, the scaler + SVR fit on the other clips for the whole C grid at once (one fit per
    fold) predicts the fold; the C with the best validation score (`fold_score`) wins (the first on ties;
    a defined score beats an undefined one)."""
    held = np.full((len(y), len(cfg.complexities)), np.nan)
    for k in np.unique(folds[folds != FIT_ONLY]):
        out = folds == k
        held[out] = postprocess(_fit(model(cfg.complexities, cfg), x[~out], y[~out]).predict(x[out]), cfg)
    best: Validated | None = None
    scores: dict[float, float] = {}
    for j, c in enumerate(cfg.complexities):
        score = fold_score(y, held[:, j], folds)
        scores[float(c)] = score
        if best is None or score > best.rho or (math.isnan(best.rho) and not math.isnan(score)):
            best = Validated(float(c), score, held[:, j])
    best.rho_per_c = scores
    return best


def held_out_score(held_out: pd.DataFrame, truth: pd.DataFrame, intervals: bool = True
                   ) -> tuple[float, tuple[float, float] | None]:
    """The validation score of held-out predictions (file_name, fold, prediction: an Evaluation's `held_out`,
    or an ensemble's average of them) against `truth` (file_name, label, speaker where known), with its 95%
    bootstrap interval (confidence.mean_rho_interval: folds resampled independently, speakers within them
    where known) when `intervals`."""
    from .confidence import mean_rho_interval

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
    rho_per_c: dict[float, float]
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
        return {"c": self.c, "devel_rho": self.devel_rho, "test_rho": self.test_rho,
                "devel_rho_ci": interval_json(self.devel_ci), "test_rho_ci": interval_json(self.test_ci),
                "resampled": self.resampled, "validation": self.validation, "score_name": self.label, "score": self.score,
                "score_ci": interval_json(self.score_ci),
                "score_per_c": {f"{c:g}": r for c, r in self.rho_per_c.items()},
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


def compare_held_out(a: pd.DataFrame, b: pd.DataFrame, truth: pd.DataFrame) -> dict | None:
    """The paired difference of two validation scores (`fold_score` of held-out predictions: file_name, fold,
    prediction) on the clips both hold out with the same fold whose label `truth` knows, with its 95%
    bootstrap interval (confidence.mean_difference_interval: folds resampled independently, speakers within
    them where known). `compare`'s entry; None where fewer than two such clips have a label."""
    from .confidence import mean_difference_interval

    both = truth.merge(a[["file_name", "fold", "prediction"]], on="file_name") \
        .merge(b[["file_name", "fold", "prediction"]], on=["file_name", "fold"], suffixes=("_a", "_b"))
    both = both[both["label"].notna()]
    if len(both) < 2:
        return None
    y, folds = both["label"].to_numpy(float), both["fold"].to_numpy(int)
    pa, pb = both["prediction_a"].to_numpy(float), both["prediction_b"].to_numpy(float)
    groups = both["speaker"].to_numpy(dtype=object) if "speaker" in both.columns else None
    lo, hi = mean_difference_interval(y, pa, pb, folds, groups)
    return {"difference": fold_score(y, pa, folds) - fold_score(y, pb, folds), "ci": interval_json((lo, hi)),
            "clips": int(len(both)), "resampled": "clips" if groups is None else "speakers"}


def format_evaluation(ev: "Evaluation", missing: str = "n/a") -> str:
    """An evaluation's figures as the commands print them on one line (see `format_scores`)."""
    return format_scores(ev.metrics(), missing)


def format_scores(entry: dict, missing: str = "n/a") -> str:
    """The figures of a metrics.json entry (an evaluation's, or an ensemble's with its score_name) on one line:
    the validation score C was chosen by where it is not devel's, then devel and test rho, each with its 95%
    interval: "swap 0.433 [0.13, 0.66], devel 0.282 [-0.26, 0.69], test 0.757 [0.47, 0.88]"."""
    shown = (f"devel {format_rho_ci(entry.get('devel_rho'), entry.get('devel_rho_ci'))}, "
             f"test {format_rho_ci(entry.get('test_rho'), entry.get('test_rho_ci'), missing)}")
    name = entry.get("score_name") or "devel"
    if name == "devel" or entry.get("score") is None:
        return shown
    return f"{name} {format_rho_ci(entry['score'], entry.get('score_ci'))}, {shown}"


def format_difference(entry: dict | None, missing: str = "n/a") -> str:
    """A paired difference (`compare`) as every command and the report print it: "+0.099 [-0.06, +0.25]"."""
    if not entry or entry.get("difference") is None or math.isnan(entry["difference"]):
        return missing
    shown = f"{entry['difference']:+.3f}"
    ci = entry.get("ci")
    return f"{shown} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else shown


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
        devel_pred = chosen.predictions[len(y_tr):]
    test_pred = np.empty(0)
    if len(x_te):
        test_pred = fit_predict(x_fit, y_fit, x_te, chosen.c, cfg)
    known = ~np.isnan(y_te)
    test_rho = spearman(y_te[known], test_pred[known]) if known.any() else None
    held = folds != FIT_ONLY
    files = np.concatenate([f_tr, f_dv])
    ev = Evaluation(chosen.c, spearman(y_dv, devel_pred),
                    pd.DataFrame({"file_name": f_dv, "prediction": devel_pred}),
                    pd.DataFrame({"file_name": f_te, "prediction": test_pred}), test_rho, chosen.rho_per_c,
                    n_train=len(y_tr), validation=cfg.validation, label=validation_label(cfg), score=chosen.rho,
                    held_out=pd.DataFrame({"file_name": files[held], "fold": folds[held],
                                           "prediction": chosen.predictions[held]}))
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
