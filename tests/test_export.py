"""The export's ensemble across configurations (search/export.py configurations_ensemble): the best k
confirmed configurations averaged, k chosen by the validation score (devel rho under the default
validation), never by test; each member's contribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from auttention.config import ScoringConfig
from search.export import configurations_ensemble, ensemble_scores
from auttention.record import Predictions
from search.selection import Candidate, SeedRun

N = 40


def _truth(rng) -> pd.DataFrame:
    names = [f"{part}_{i:03d}" for part in ("train", "devel", "test") for i in range(N)]
    return pd.DataFrame({"file_name": names, "partition": [n.split("_")[0] for n in names],
                         "label": rng.integers(1, 10, len(names)).astype(float)})


def _candidate(tid: str, score: float, truth: pd.DataFrame, noise: list[np.ndarray], validation: str = "devel"
               ) -> Candidate:
    """A confirmed configuration whose seeds predict the label plus `noise` (one array per seed); its held-out
    predictions are devel's (fold 0) under `validation` devel, devel's and train's (fold 1) under swap."""
    runs = []
    for i, n in enumerate(noise):
        pred = np.clip(np.round(truth["label"].to_numpy() + n), 1, 9)
        table = pd.DataFrame({"file_name": truth["file_name"], "prediction": pred})
        parts = {part: table[truth["partition"] == part].reset_index(drop=True) for part in ("devel", "test")}
        held = table[truth["partition"].isin(["devel"] if validation == "devel" else ["train", "devel"])].copy()
        held.insert(1, "fold", np.where(held["file_name"].str.startswith("devel"), 0, 1))
        runs.append(SeedRun(i, score, None, 3, Predictions(**parts, held_out=held.reset_index(drop=True))))
    return Candidate(tid, None, None, "", 3, score, runs=runs)


def test_k_is_chosen_by_devel_and_each_member_says_what_it_adds():
    rng = np.random.default_rng(0)
    truth = _truth(rng)
    n = len(truth)
    # three configurations with independent errors: averaging them cancels some of each one's noise
    cands = [_candidate(t, s, truth, [rng.normal(0, 3, n), rng.normal(0, 3, n)])
             for t, s in (("a", 0.5), ("b", 0.4), ("c", 0.3))]
    scoring = ScoringConfig()
    out = configurations_ensemble(cands, truth, scoring, top=3)
    by_k = {row["k"]: row["devel_rho"] for row in out["by_k"]}
    assert out["k"] == max(by_k, key=lambda k: (by_k[k], -k))  # the best devel rho, the smallest k on ties
    assert [row["k"] for row in out["by_k"]] == [1, 2, 3]
    assert out["members"] == ["a", "b", "c"][:out["k"]]
    assert by_k[1] == pytest.approx(ensemble_scores(cands[0], truth, scoring)["devel_rho"])  # k=1: the chosen one
    if out["k"] > 1:
        for tid, share in out["contributions"].items():
            others = [c for c in cands[:out["k"]] if c.trial_id != tid]
            assert share == pytest.approx(out["devel_rho"] - ensemble_scores(others, truth, scoring)["devel_rho"])
    assert out["devel_rho_ci"][0] <= out["devel_rho"] <= out["devel_rho_ci"][1]
    assert all(row["score"] == pytest.approx(row["devel_rho"]) for row in out["by_k"])  # devel: the score is devel's
    # the order is the mean selection score over seeds, whatever the list's order; a diverged one is left out
    shaky = _candidate("d", 0.9, truth, [rng.normal(0, 1, n)])
    shaky.runs.append(SeedRun(1, float("nan"), None, 2, diverged="loss NaN"))
    again = configurations_ensemble([cands[2], shaky, cands[0], cands[1]], truth, scoring, top=3)
    assert [row["devel_rho"] for row in again["by_k"]] == pytest.approx(list(by_k.values()))
    # off (top 1) or a single configuration: nothing to average
    assert configurations_ensemble(cands, truth, scoring, top=1) is None
    assert configurations_ensemble(cands[:1], truth, scoring, top=3) is None


def test_test_labels_never_move_k():
    rng = np.random.default_rng(1)
    truth = _truth(rng)
    cands = [_candidate(t, s, truth, [rng.normal(0, 2, len(truth))]) for t, s in (("a", 0.5), ("b", 0.4))]
    scoring = ScoringConfig()
    k = configurations_ensemble(cands, truth, scoring, top=2)["k"]
    shuffled = truth.copy()
    test = shuffled["partition"] == "test"
    shuffled.loc[test, "label"] = rng.permutation(shuffled.loc[test, "label"].to_numpy())
    assert configurations_ensemble(cands, shuffled, scoring, top=2)["k"] == k


def test_k_follows_the_validation_score_not_devel_alone():
    """Under validation swap, k is chosen by the swap score of the averaged held-out predictions (devel's and
    train's), which can disagree with devel's rho; each member's contribution is to that score."""
    from auttention.validation import fold_score

    rng = np.random.default_rng(2)
    truth = _truth(rng)
    n = len(truth)
    scoring = ScoringConfig(validation="swap")
    cands = [_candidate(t, s, truth, [rng.normal(0, 3, n), rng.normal(0, 3, n)], "swap")
             for t, s in (("a", 0.5), ("b", 0.4), ("c", 0.3))]
    out = configurations_ensemble(cands, truth, scoring, top=3)
    scores = {row["k"]: row["score"] for row in out["by_k"]}
    assert out["k"] == max(scores, key=lambda k: (scores[k], -k))
    assert "swap" in out["chosen_by"]
    one = ensemble_scores(cands[0], truth, scoring)
    held = one["predictions"].held_out.merge(truth, on="file_name")
    assert set(held["fold"]) == {0, 1} and len(held) == 2 * N  # train and devel both held out once
    assert one["score"] == pytest.approx(fold_score(held["label"].to_numpy(), held["prediction"].to_numpy(),
                                                    held["fold"].to_numpy()))
    assert one["score_ci"][0] <= one["score"] <= one["score_ci"][1]
    if out["k"] > 1:
        for tid, share in out["contributions"].items():
            others = [c for c in cands[:out["k"]] if c.trial_id != tid]
            assert share == pytest.approx(out["score"] - ensemble_scores(others, truth, scoring)["score"])
