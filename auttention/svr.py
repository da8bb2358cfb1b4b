"""The linear SVR of scikit-learn's LinearSVR, for a whole grid of C at once, fast where clips >> features.

LinearSVR (liblinear) minimises, for one C,

    0.5 * ||w||^2 + 0.5 * b^2 + C * sum_i max(0, |y_i - x_i.w - b| - epsilon)

(the intercept b is the weight of a constant feature, intercept_scaling = 1, so it is regularised
too) by coordinate descent over the n dual variables, one pass over all clips per iteration and
from zero for every C. On ComParE-size features (5,564 clips x 1,024) its C = 0.1 and C = 1 fits
ran out of passes (max_iter) after tens of seconds without converging. `LinearSVRPath` minimises
the same objective by ADMM in the primal (Boyd et al. 2011, section 6.1: least absolute deviations
with a ridge term): one eigendecomposition of A'A (A = [x, 1], (d+1) x (d+1)) serves every C and
iteration, an iteration is two matrix-vector products with A, and each C starts from the
previous C's solution (the grid is walked from the smallest C up). It stops on a certified bound,
the relative duality gap, where liblinear stops on the size of its dual gradient.

`model` composes the paper's regressor (min-max scaling, then this SVR), `fit` fits it, `postprocess`
rounds and clips its predictions to the label range.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from .config import ScoringConfig

_RELAX = 1.6  # over-relaxation (Boyd et al. 2011, 3.4.3; 1.5-1.8 is the usual range)
_CHECK_EVERY = 10  # iterations between duality-gap checks (each costs one more pass over A)
# float32 iterates: each iteration reads A twice, and float64 doubled the time (5,564 x 1,024: 9.7 vs
# 16.3 s) without changing a chosen C; a tighter tol than 1e-5 needs float64 (float32 sums floor the gap)
_DTYPE = np.float32


class LinearSVRPath(RegressorMixin, BaseEstimator):
    """LinearSVR's model fit for every C of `complexities`; predict gives one column per C.

    Parameters
    ----------
    complexities : sequence of float > 0
        The C grid (any order; the columns of `predict` follow it).
    epsilon : float >= 0
        Width of the insensitive tube, in label units (LinearSVR's default, 0: absolute error).
    tol : float > 0
        Stop a C when (primal - dual) / primal <= tol: the objective is then within that relative
        distance of its minimum.
    max_iter : int >= 1
        Iterations per C at most (a ConvergenceWarning names the C that reached it).

    Attributes
    ----------
    coef_path_ : ndarray, shape (n_complexities, n_features)
    intercept_path_ : ndarray, shape (n_complexities,)
    n_iter_ : ndarray of int, shape (n_complexities,)
    duality_gap_ : ndarray, shape (n_complexities,)
        The relative duality gap each C stopped at.
    """

    def __init__(
        self, complexities: Sequence[float] = (1.0,), epsilon: float = 0.0, tol: float = 1e-5, max_iter: int = 10000
    ):
        self.complexities = complexities
        self.epsilon = epsilon
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, y) -> LinearSVRPath:
        """Fit every C on X (n_samples, n_features) and y (n_samples,)."""
        X, y = check_X_y(X, y, dtype=(np.float64, np.float32), y_numeric=True)
        cs = np.asarray(self.complexities, dtype=np.float64).ravel()
        if cs.size == 0 or not np.all(cs > 0) or not np.all(np.isfinite(cs)):
            raise ValueError(f"complexities must be positive numbers, got {self.complexities!r}")
        if self.epsilon < 0 or self.tol <= 0 or self.max_iter < 1:
            raise ValueError("epsilon must be >= 0, tol > 0 and max_iter >= 1")
        self.n_features_in_ = X.shape[1]
        a = np.hstack([X, np.ones((len(X), 1), X.dtype)])  # the intercept as a regularised constant feature
        basis, lam, b = _spectral(a)
        coef = np.empty((cs.size, a.shape[1]))
        self.n_iter_ = np.zeros(cs.size, dtype=int)
        self.duality_gap_ = np.zeros(cs.size)
        state = None
        for k in np.argsort(cs, kind="stable"):  # warm starts need increasing C (the old dual stays feasible)
            vt, state, self.n_iter_[k], self.duality_gap_[k] = _admm(
                b, lam, y, cs[k], self.epsilon, self.tol, self.max_iter, state
            )
            coef[k] = basis @ vt
            if self.duality_gap_[k] > self.tol:
                warnings.warn(
                    f"LinearSVRPath: C={cs[k]:g} stopped at max_iter={self.max_iter} with a relative "
                    f"duality gap of {self.duality_gap_[k]:.2g} (tol {self.tol:g})",
                    ConvergenceWarning,
                )
        self.coef_path_, self.intercept_path_ = coef[:, :-1], coef[:, -1]
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples, n_complexities), column k for complexities[k]."""
        check_is_fitted(self, "coef_path_")
        X = check_array(X, dtype=(np.float64, np.float32))
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fit on {self.n_features_in_}")
        return X.astype(np.float64, copy=False) @ self.coef_path_.T + self.intercept_path_


def _spectral(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V, lam, B = a V), float32 B: A'A = V diag(lam) V' on the row space of a (V orthonormal columns).

    The model lives in that row space (its other components only add to ||w||), so the iterations
    work on B: (n, k), k = min(n, d + 1)."""
    a64 = a.astype(np.float64, copy=False)
    if a.shape[0] >= a.shape[1]:
        lam, basis = np.linalg.eigh(a64.T @ a64)
    else:  # fewer clips than features: from the n x n Gram matrix
        lam, u = np.linalg.eigh(a64 @ a64.T)
        keep = lam > lam.max() * 1e-12
        lam, u = lam[keep], u[:, keep]
        basis = (a64.T @ u) / np.sqrt(lam)
    lam = np.maximum(lam, 0.0)
    b = a.astype(_DTYPE, copy=False) @ basis.astype(_DTYPE)
    return basis, lam.astype(_DTYPE), b


def _admm(b, lam, y, c, epsilon, tol, max_iter, state):
    """One C: ADMM on min 0.5 ||v||^2 + c * sum(max(0, |z| - epsilon)) subject to z = y - B v.

    Float32 iterates (the predictions are rounded to whole labels; the gap is summed in float64).
    state: (z, beta, rho) of the previous, smaller C, or None. Returns (v, state, iterations, gap)."""
    c, epsilon = float(c), float(epsilon)  # Python floats keep float32 arrays float32 (NumPy 2 promotion)
    y32 = y.astype(_DTYPE)
    by = b.T @ y32
    if state is None:
        z, beta = y32.copy(), np.zeros_like(y32)
    else:
        z, beta, _ = state
    rho = _DTYPE(c)  # the z step's threshold c / rho then starts at one label unit, whatever c
    u = beta / rho  # the scaled dual (Boyd's u = beta / rho)
    gap = np.inf
    it = 0
    while it < max_iter:
        it += 1
        vt = rho * (by - b.T @ (z + u)) / (1 + rho * lam)
        fit = b @ vt
        relaxed = _RELAX * fit + (1 - _RELAX) * (y32 - z)
        w = y32 - relaxed - u
        z_old = z
        z = _prox(w, c / rho, epsilon)
        u = u + relaxed + z - y32
        if it % _CHECK_EVERY and it < max_iter:
            continue
        beta = np.clip(rho * u, -c, c)  # a feasible dual point
        bt = b.T @ np.stack([beta, z - z_old], axis=1)
        resid = y - fit.astype(np.float64)
        primal = 0.5 * float(vt @ vt) + c * float(np.maximum(np.abs(resid) - epsilon, 0).sum())
        beta64 = beta.astype(np.float64)
        dual = -0.5 * float(bt[:, 0] @ bt[:, 0]) - float(y @ beta64) - epsilon * float(np.abs(beta64).sum())
        gap = (primal - dual) / max(abs(primal), 1e-12)
        if gap <= tol:
            break
        # residual balancing (Boyd et al. 2011, 3.4.1); the eigendecomposition makes a new rho free
        r_norm, s_norm = float(np.linalg.norm(fit + z - y32)), float(rho * np.linalg.norm(bt[:, 1]))
        if r_norm > 10 * s_norm:
            rho, u = rho * 2, u / 2
        elif s_norm > 10 * r_norm:
            rho, u = rho / 2, u * 2
    return vt.astype(np.float64), (z, np.clip(rho * u, -c, c), rho), it, max(gap, 0.0)


def _prox(w: np.ndarray, kappa: float, epsilon: float) -> np.ndarray:
    """argmin_z kappa * max(0, |z| - epsilon) + 0.5 (z - w)^2, elementwise."""
    magnitude = np.abs(w)
    return np.sign(w) * np.maximum(np.minimum(magnitude, epsilon), magnitude - kappa)


def postprocess(pred: np.ndarray, cfg: ScoringConfig) -> np.ndarray:
    """Round (if cfg.round) and clip predictions to [label_min, label_max]."""
    pred = np.round(pred) if cfg.round else np.asarray(pred, float)
    return np.clip(pred, cfg.label_min, cfg.label_max)


def model(complexities: Sequence[float], cfg: ScoringConfig) -> Pipeline:
    """The paper's model for every C of `complexities`: min-max scaling, then the linear SVR.

    `LinearSVRPath` minimises LinearSVR's objective (epsilon-insensitive loss, epsilon 0; the intercept
    regularised as liblinear does) for the whole grid with one factorisation and warm starts: the
    same models, far faster where clips outnumber features."""
    return make_pipeline(MinMaxScaler(), LinearSVRPath(complexities, max_iter=cfg.max_iter))


def fit(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """`pipeline` (a `model`) fit on (x, y), a C that stops at max_iter scored as it stands (as liblinear's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y)


def fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_pred: np.ndarray, c: float, cfg: ScoringConfig) -> np.ndarray:
    """Min-max scaler + linear SVR (C=c) fit on (x_fit, y_fit); post-processed predictions for x_pred."""
    return postprocess(fit(model([c], cfg), x_fit, y_fit).predict(x_pred)[:, 0], cfg)
