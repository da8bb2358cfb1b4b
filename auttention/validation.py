"""What C, a trial's score, the selection and the ensembles are scored on (scoring.validation): devel (the
paper's), train and devel swapped, or speaker-disjoint folds over train+devel; and the cross-validation of the
paper's model over a C grid on those folds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import ScoringConfig
from .errors import UserError
from .metric import spearman
from .svr import fit, model, postprocess

FIT_ONLY = -1  # the fold of a clip every fit uses and none holds out (train under validation: devel)


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
        raise UserError(
            "scoring.validation: speaker_folds needs every clip's speaker (lab/speakers.csv with "
            "file_name,speaker, or a manifest's speaker column); use swap or devel without them"
        )
    names, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
    if len(names) < cfg.folds:
        raise UserError(
            f"scoring.folds: {cfg.folds} speaker-disjoint folds need at least {cfg.folds} speakers in "
            f"train+devel, and there are {len(names)}; lower scoring.folds or use validation: swap"
        )
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
    validation_folds(
        fit["partition"].to_numpy(), fit["speaker"].to_numpy(dtype=object) if "speaker" in fit else None, cfg
    )


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
    score: float  # the validation score at c
    predictions: np.ndarray  # every clip's held-out prediction at c (NaN for FIT_ONLY clips)
    score_per_c: dict[float, float] = field(default_factory=dict)


def cross_validate(x: np.ndarray, y: np.ndarray, folds: np.ndarray, cfg: ScoringConfig) -> Validated:
    """For every fold, the scaler + SVR fit on the other clips for the whole C grid at once (one fit per
    fold) predicts the fold; the C with the best validation score (`fold_score`) wins (the first on ties;
    a defined score beats an undefined one)."""
    held = np.full((len(y), len(cfg.complexities)), np.nan)
    for k in np.unique(folds[folds != FIT_ONLY]):
        out = folds == k
        held[out] = postprocess(fit(model(cfg.complexities, cfg), x[~out], y[~out]).predict(x[out]), cfg)
    best: Validated | None = None
    scores: dict[float, float] = {}
    for j, c in enumerate(cfg.complexities):
        score = fold_score(y, held[:, j], folds)
        scores[float(c)] = score
        if best is None or score > best.score or (math.isnan(best.score) and not math.isnan(score)):
            best = Validated(float(c), score, held[:, j])
    assert best is not None  # ScoringConfig refuses an empty grid
    best.score_per_c = scores
    return best
