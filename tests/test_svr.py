import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVR

from auttention.svr import LinearSVRPath


def _objective(w, b, x, y, c, epsilon=0.0):
    """LinearSVR's primal objective (liblinear: the intercept is a regularised constant feature)."""
    return 0.5 * (w @ w + b * b) + c * np.maximum(np.abs(y - x @ w - b) - epsilon, 0).sum()


def _data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, d))
    y = np.clip(np.round(5 + 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 1.5, n)), 1, 9)
    return x, y


@pytest.mark.parametrize("n,d,epsilon", [(300, 20, 0.0), (60, 150, 0.0), (300, 20, 0.5)])
def test_path_minimises_linearsvr_objective(n, d, epsilon):
    # the same problem as liblinear's: at every C our objective is at most liblinear's (a hair above
    # where both have converged), and never more than tol above the certified minimum
    x, y = _data(n, d)
    cs = [1.0, 1e-3, 0.1, 1e-5]  # any order: columns follow it
    path = LinearSVRPath(cs, epsilon=epsilon).fit(x, y)
    assert (path.duality_gap_ <= path.tol).all()
    for k, c in enumerate(cs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = LinearSVR(C=c, epsilon=epsilon, random_state=0, max_iter=100000, tol=1e-6).fit(x, y)
        ours = _objective(path.coef_path_[k], path.intercept_path_[k], x, y, c, epsilon)
        theirs = _objective(ref.coef_, ref.intercept_[0], x, y, c, epsilon)
        assert ours <= theirs * (1 + 2 * path.tol)
        pred = path.predict(x)[:, k]
        assert np.allclose(pred, x @ path.coef_path_[k] + path.intercept_path_[k])
        assert np.abs(pred - ref.predict(x)).max() < 0.05 * np.ptp(y)


def test_path_checks_its_inputs_and_warns_at_max_iter():
    x, y = _data(50, 4)
    with pytest.raises(ValueError, match="complexities"):
        LinearSVRPath([0.0]).fit(x, y)
    with pytest.warns(ConvergenceWarning, match="C=1 stopped at max_iter=1"):
        LinearSVRPath([1.0], max_iter=1).fit(x, y)
    with pytest.raises(ValueError, match="3 features"):
        LinearSVRPath([1.0]).fit(x, y).predict(x[:, :3])
