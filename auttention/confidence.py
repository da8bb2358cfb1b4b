"""Bootstrap confidence intervals of Spearman's rho, resampling speakers where they are known.

A resample is a vector of multiplicities over the clips (how often each clip is drawn), so that
B resamples are one (B, n) array and every statistic is computed for all of them at once:
Spearman's rho of a resample is the weighted Pearson correlation of its weighted mid-ranks, the
ranks that the explicitly repeated clips would get (ties share their average rank). No loop over
resamples, no copies of the data: B = 1000 at ComParE's size (n = 5,328) takes a fraction of a second.

Speakers are resampled, not clips, where they are known: a speaker's clips are not independent
(the same voice, often the same label), so resampling clips would make the interval too narrow.
"""

from __future__ import annotations

import math

import numpy as np

N_BOOT = 1000
LEVEL = 0.95
_BLOCK = 1 << 21  # elements of a (resamples, clips) block: bounds memory at ~16 MB per array


def rho_interval(
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho between `y` and `pred`.

    Parameters
    ----------
    y, pred : array, shape (n,)
        Labels and predictions of the same n clips (finite).
    groups : array, shape (n,), optional
        Each clip's speaker (any hashable values). Given: speakers are drawn with replacement, each draw
        bringing all its clips; None: clips are drawn with replacement.
    n_boot : int
        Number of resamples B.
    seed : int
        Seed of the resampling (the same seed, data and groups give the same interval).
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    (lo, hi) : tuple of float
        The (1 - level)/2 and (1 + level)/2 percentiles of rho over the resamples where it is defined
        (resamples with constant labels or predictions are skipped); (nan, nan) if fewer than half are.
    """
    rhos = _bootstrap(y, [pred], groups, n_boot, seed)[0]
    return _percentiles(rhos, level)


def difference_interval(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """The paired difference rho(y, pred_a) - rho(y, pred_b) and its percentile bootstrap interval.

    Both rhos are computed on the same resamples (same clips, same speakers), so what the two
    predictions share (hard speakers, label noise) cancels out. Shapes and parameters as in
    `rho_interval`; returns (diff, lo, hi), diff on the data as given (NaN if either rho is undefined).
    """
    ones = np.ones((1, len(np.asarray(y))))
    point = (
        _weighted_spearman(np.asarray(y, float), np.asarray(pred_a, float), ones)[0]
        - _weighted_spearman(np.asarray(y, float), np.asarray(pred_b, float), ones)[0]
    )
    rho_a, rho_b = _bootstrap(y, [pred_a, pred_b], groups, n_boot, seed)
    return (float(point), *_percentiles(rho_a - rho_b, level))


def mean_rho_interval(
    y: np.ndarray,
    pred: np.ndarray,
    folds: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over folds of Spearman's rho (a cross-validated score:
    each fold's held-out predictions against its labels).

    The folds are resampled independently (a stratified bootstrap: the folds hold disjoint speakers or
    partitions, and each keeps its size), speakers within a fold where `groups` is given, clips otherwise;
    a resample's statistic is the mean of its folds' rhos (NaN where one is undefined). Shapes and
    parameters as in `rho_interval`; `folds` (n,) holds each clip's fold."""
    return _percentiles(_fold_bootstrap(y, [pred], folds, groups, n_boot, seed)[0], level)


def mean_difference_interval(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    folds: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the paired difference of two cross-validated scores (the mean over
    folds of rho(y, pred_a) minus that of rho(y, pred_b)), both on the same stratified resamples (see
    `mean_rho_interval`)."""
    mean_a, mean_b = _fold_bootstrap(y, [pred_a, pred_b], folds, groups, n_boot, seed)
    return _percentiles(mean_a - mean_b, level)


def _fold_bootstrap(y, preds: list, folds, groups, n_boot: int, seed: int) -> list[np.ndarray]:
    """The mean over folds of each prediction's rho on the same stratified resamples: arrays (n_boot,)."""
    y, folds = np.asarray(y, float), np.asarray(folds)
    preds = [np.asarray(p, float) for p in preds]
    per_fold = []
    for k, fold in enumerate(np.unique(folds)):
        rows = folds == fold
        per_fold.append(
            _bootstrap(
                y[rows],
                [p[rows] for p in preds],
                None if groups is None else np.asarray(groups)[rows],
                n_boot,
                seed + k,
            )
        )
    return [np.mean([fold_rhos[i] for fold_rhos in per_fold], axis=0) for i in range(len(preds))]


def resamples(n: int, groups: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """The multiplicities of n clips in each of `n_boot` resamples: int array, shape (n_boot, n).

    With `groups` (shape (n,)), G distinct groups are drawn G times with replacement and each clip gets
    its group's count; otherwise the n clips are drawn n times."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(codes.max()) + 1
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)[:, codes.ravel()]


def _bootstrap(y, preds: list, groups, n_boot: int, seed: int) -> list[np.ndarray]:
    """Spearman's rho of each prediction in `preds` against y on the same n_boot resamples: arrays (n_boot,)."""
    y = np.asarray(y, float)
    preds = [np.asarray(p, float) for p in preds]
    n = len(y)
    if any(p.shape != y.shape for p in preds) or y.ndim != 1 or (groups is not None and len(groups) != n):
        raise ValueError(
            f"y, predictions and groups must be 1-d of one length, got {y.shape}, "
            f"{[p.shape for p in preds]}, {None if groups is None else np.shape(groups)}"
        )
    if n < 2:
        return [np.full(n_boot, math.nan) for _ in preds]
    weights = resamples(n, groups, n_boot, seed)
    out = [np.empty(n_boot) for _ in preds]
    step = max(1, _BLOCK // n)
    for start in range(0, n_boot, step):
        w = weights[start : start + step].astype(float)
        y_rank, y_ok = _midranks(y, w)
        for rho, p in zip(out, preds):
            p_rank, p_ok = _midranks(p, w)
            rho[start : start + step] = np.where(y_ok & p_ok, _weighted_pearson(y_rank, p_rank, w), math.nan)
    return out


def _weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman's rho of x and y (n,) under each row of multiplicities w (B, n): shape (B,), NaN where undefined."""
    x_rank, x_ok = _midranks(x, w)
    y_rank, y_ok = _midranks(y, w)
    return np.where(x_ok & y_ok, _weighted_pearson(x_rank, y_rank, w), math.nan)


def _midranks(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-ranks (B, n) of x (n,) in each resample w (B, n), as scipy.stats.rankdata('average') gives the
    repeated clips; and (B,) whether x takes at least two values there (its rank is defined).

    In sorted order, a run of equal values with cumulative multiplicity c_before before it and c_end at
    its end holds ranks c_before + 1 .. c_end, so each of its copies gets (c_before + 1 + c_end) / 2."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ends = np.flatnonzero(np.append(sorted_x[1:] != sorted_x[:-1], True))  # last index of each run of ties
    run = np.repeat(np.arange(len(ends)), np.diff(np.append(-1, ends)))  # run of each sorted position
    c_end = np.cumsum(w[:, order], axis=1)[:, ends]
    c_before = np.concatenate([np.zeros((len(w), 1)), c_end[:, :-1]], axis=1)
    mid = (c_before + 1 + c_end) / 2
    ranks = np.empty_like(w)
    ranks[:, order] = mid[:, run]
    return ranks, ((c_end - c_before) > 0).sum(axis=1) >= 2


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson's r of a and b (B, n) with multiplicities w (B, n), row by row: shape (B,)."""
    total = w.sum(axis=1, keepdims=True)
    da = a - (w * a).sum(axis=1, keepdims=True) / total
    db = b - (w * b).sum(axis=1, keepdims=True) / total
    cov = (w * da * db).sum(axis=1)
    var = (w * da * da).sum(axis=1) * (w * db * db).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(cov / np.sqrt(var), -1.0, 1.0)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` interval of the defined (non-NaN) values; (nan, nan) if fewer than half are defined."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    defined = values[~np.isnan(values)]
    if len(defined) == 0 or 2 * len(defined) < len(values):
        return math.nan, math.nan
    lo, hi = np.percentile(defined, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def interval_json(ci: tuple[float, float] | None) -> list[float] | None:
    """An interval as JSON holds it: [lo, hi], or None where there is none or it is undefined."""
    if ci is None or any(math.isnan(v) for v in ci):
        return None
    return [float(ci[0]), float(ci[1])]


def rho_ci(y: np.ndarray, pred: np.ndarray, groups: np.ndarray | None) -> tuple[float, float] | None:
    """The 95% bootstrap interval of a rho as the product reports it (seed 0, B = 1000; speakers resampled
    when `groups` is given); None where there are fewer than two clips."""
    return rho_interval(y, pred, groups) if len(y) >= 2 else None
