import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from auttention.confidence import difference_interval, resamples, rho_interval


def _data(n=60, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 10, n).astype(float)  # KSS-like: many ties
    pred = np.clip(np.round(y + rng.normal(0, 2.5, n)), 1, 9)  # rounded predictions: ties too
    groups = np.array([f"s{i % 7}" for i in range(n)])
    return y, pred, groups


@pytest.mark.parametrize("grouped", [False, True], ids=["clips", "speakers"])
def test_each_resample_equals_scipy_on_the_repeated_clips(grouped):
    from auttention.confidence import _weighted_spearman

    y, pred, groups = _data()
    w = resamples(len(y), groups if grouped else None, n_boot=20, seed=3)
    rhos = _weighted_spearman(y, pred, w.astype(float))
    for row, rho in zip(w, rhos):
        idx = np.repeat(np.arange(len(y)), row)
        assert rho == pytest.approx(spearmanr(y[idx], pred[idx]).statistic, abs=1e-12)


def test_speakers_are_drawn_whole():
    _, _, groups = _data()
    w = resamples(len(groups), groups, n_boot=50, seed=0)
    for g in np.unique(groups):
        members = w[:, groups == g]
        assert (members == members[:, :1]).all()  # every clip of a speaker drawn as often as the speaker
    assert (w[:, groups == "s0"].sum(axis=1) % (groups == "s0").sum() == 0).all()


def test_interval_contains_rho_and_speakers_widen_it():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(20), 15)
    y = np.repeat(rng.integers(1, 10, 20), 15).astype(float) + rng.normal(0, 0.5, 300)  # labels follow the speaker
    pred = y + np.repeat(rng.normal(0, 2, 20), 15) + rng.normal(0, 1, 300)  # speaker-level errors
    rho = spearmanr(y, pred).statistic
    lo_c, hi_c = rho_interval(y, pred)
    lo_s, hi_s = rho_interval(y, pred, speakers)
    assert lo_c < rho < hi_c and lo_s < rho < hi_s
    assert hi_s - lo_s > hi_c - lo_c  # clips of one speaker are not independent


def test_deterministic_and_seeded():
    y, pred, groups = _data()
    assert rho_interval(y, pred, groups) == rho_interval(y, pred, groups)
    assert rho_interval(y, pred, groups, seed=1) != rho_interval(y, pred, groups)


def test_degenerate_cases():
    y, pred, _ = _data()
    assert all(math.isnan(v) for v in rho_interval(np.full(10, 3.0), np.arange(10.0)))  # constant labels
    assert all(math.isnan(v) for v in rho_interval(y, np.full(len(y), 5.0)))  # constant predictions
    assert all(math.isnan(v) for v in rho_interval(y[:1], pred[:1]))
    # two speakers with one label each: most resamples draw one speaker twice, so rho is undefined
    y2, p2 = np.array([1.0, 1, 1, 9, 9, 9]), np.array([2.0, 1, 3, 8, 9, 7])
    assert all(math.isnan(v) for v in rho_interval(y2, p2, np.array(list("aaabbb")), n_boot=200))
    with pytest.raises(ValueError):
        rho_interval(y, pred[:-1])


def test_difference_interval_is_paired():
    y, pred, groups = _data(n=200)
    rng = np.random.default_rng(5)
    other = np.clip(np.round(y + rng.normal(0, 3, len(y))), 1, 9)
    diff, lo, hi = difference_interval(y, pred, other, groups)
    assert diff == pytest.approx(spearmanr(y, pred).statistic - spearmanr(y, other).statistic)
    assert lo < diff < hi
    same = difference_interval(y, pred, pred, groups)
    assert same == (0.0, 0.0, 0.0)


def test_compare_pairs_two_prediction_files_on_the_clips_both_have():
    """scoring.compare: rho(a) - rho(b) on the labelled clips both predict, speakers resampled where the truth
    names them; None where fewer than two labelled clips are shared."""
    import pandas as pd

    from auttention.evaluation import compare
    from auttention.formatting import format_difference
    from auttention.metric import spearman

    rng = np.random.default_rng(1)
    n = 60
    names = [f"c{i:03d}" for i in range(n)]
    label = rng.integers(1, 10, n).astype(float)
    truth = pd.DataFrame({"file_name": names, "label": label, "speaker": [f"s{i % 12}" for i in range(n)]})
    truth.loc[5, "label"] = np.nan  # an unlabelled clip is left out
    a = pd.DataFrame({"file_name": names, "prediction": label + rng.normal(0, 1, n)})
    b = pd.DataFrame({"file_name": names[::-1], "prediction": (label + rng.normal(0, 3, n))[::-1]})  # any row order
    b = b[b["file_name"] != "c007"]  # a clip one set lacks is left out
    entry = compare(a, b, truth)
    both = truth.dropna().merge(a, on="file_name").merge(b, on="file_name", suffixes=("_a", "_b"))
    assert entry["clips"] == len(both) == n - 2 and entry["resampled"] == "speakers"
    expected = spearman(both["label"], both["prediction_a"]) - spearman(both["label"], both["prediction_b"])
    assert entry["difference"] == pytest.approx(expected)
    assert entry["ci"][0] <= entry["difference"] <= entry["ci"][1]
    assert format_difference(entry) == f"{expected:+.3f} [{entry['ci'][0]:+.2f}, {entry['ci'][1]:+.2f}]"
    assert compare(a, b, truth.drop(columns="speaker"))["resampled"] == "clips"
    assert compare(a.head(1), b, truth) is None and format_difference(None) == "n/a"


def test_fold_intervals_resample_each_fold_and_pair_the_two_scores():
    """A cross-validated score's interval holds the mean of the folds' rhos; the paired difference of two
    scores is 0 with a zero-width interval for identical predictions, and its interval lies above 0 where one
    prediction is far better on every fold."""
    from auttention.confidence import mean_difference_interval, mean_rho_interval

    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(1, 10, n).astype(float)
    folds = np.repeat([0, 1, 2], n // 3)
    groups = np.array([f"fold{k}-speaker{i % 4}" for i, k in enumerate(folds)])  # 4 speakers per fold, none in two
    good, poor = y + rng.normal(0, 1, n), y + rng.normal(0, 6, n)
    mean = np.mean([spearmanr(y[folds == k], good[folds == k]).statistic for k in range(3)])
    lo, hi = mean_rho_interval(y, good, folds, groups)
    assert lo <= mean <= hi and hi - lo < 0.5
    assert mean_difference_interval(y, good, good, folds, groups) == (0.0, 0.0)
    lo, hi = mean_difference_interval(y, good, poor, folds, groups)
    assert 0 < lo < hi
    assert mean_rho_interval(y, good, folds, groups) == mean_rho_interval(y, good, folds, groups)  # seeded
