"""The metric every score is: Spearman's rho, with the conventions that keep trials and C comparable."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr


def spearman(truth: np.ndarray, pred: np.ndarray) -> float:
    """Spearman's rho; NaN where it is undefined (fewer than two labels, or every label equal: there is
    nothing to rank), 0.0 for constant predictions (a model that ranks nothing scores as chance, so that
    C and trials stay comparable)."""
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    if len(truth) < 2 or np.ptp(truth) == 0:
        return math.nan
    if np.ptp(pred) == 0:
        return 0.0
    rho = spearmanr(truth, pred).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)
