"""experiment.time_budget over the whole search (search/budget.py): the split said up front, and the
confirmation planned from what the trials measured and the time left."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auttention.errors import UserError
from search.budget import Budget, duration, makespan, run_seconds
from search.space import ExperimentConfig


def candidate(total_s: float, epochs: int):
    return SimpleNamespace(result=SimpleNamespace(metrics={"time_total_s": total_s, "epoch": epochs}))


def clock(total_s: float, elapsed: float) -> Budget:
    budget = Budget(total_s)
    budget.started -= elapsed
    return budget


def test_the_split_is_said_up_front_and_the_trials_get_the_rest(log_lines):
    exp = ExperimentConfig(time_budget="10m", confirm_top=2, confirm_seeds=1, confirm_share=0.25)
    trials = clock(600, 30).for_trials(exp)
    # 600 - 30 spent - 150 confirmation - 18 export/report (3%, at least 15 s)
    assert trials == pytest.approx(402, abs=1)
    assert log_lines[-1] == ("budget: 10m 00s in all: 30 s so far (Ray, spectrograms, baseline); trials 6m 42s; "
                             "the confirmation 2m 30s (confirm_share 0.25), export and report 18 s")
    # no confirmation: no share kept for it
    assert clock(600, 30).for_trials(ExperimentConfig(time_budget="10m", confirm_top=0)) == pytest.approx(552, abs=1)
    assert Budget(None).for_trials(exp) is None
    with pytest.raises(UserError, match=r"experiment.time_budget 1m 00s leaves the trials no time: 50 s went to"):
        clock(60, 50).for_trials(exp)


def test_a_trial_measures_a_confirmation_run():
    # arithmetic on synthetic trial records, nothing measured here
    completed, stopped = run_seconds(candidate(120, 10), 10), run_seconds(candidate(30, 2), 10)
    assert completed == 120  # completed: its own record
    assert stopped == 150  # stopped at 2 of 10 epochs: scaled
    # per candidate its checkpoint's evaluation (one epoch's time) then its seeds, on the slots that free first
    assert makespan([100.0, 100.0], 1, 10, 2) == pytest.approx(110 + 10)
    assert makespan([100.0], 2, 10, 1) == pytest.approx(210)
    assert makespan([], 1, 10, 2) == 0


def test_the_confirmation_fits_the_time_left(log_lines):
    exp = ExperimentConfig(time_budget="20m", confirm_top=3, confirm_seeds=2)
    ranked = [candidate(100, 10), candidate(100, 10), candidate(100, 10)]
    # plenty of time: as configured (3 x (10 + 2 x 100) on 2 slots)
    plan = clock(1200, 300).plan(ranked, exp, 10, 2)
    assert (plan.top, plan.seeds) == (3, 2) and plan.estimate_s == pytest.approx(320)
    assert log_lines[-1].startswith("budget: the trials ended at 5m 00s of 20m 00s; 14m 24s left for the confirmation "
                                    "(the best trial's 10 epochs take about 1m 40s, 2 run(s) at a time): the top 3 "
                                    "with 2 new seed(s) each, about 5m 20s")
    # less time: fewer seeds before fewer candidates
    plan = clock(1200, 1200 - 36 - 250).plan(ranked, exp, 10, 2)
    assert (plan.top, plan.seeds) == (3, 1)
    assert "(of confirm_top 3 x confirm_seeds 2: the budget leaves time for no more)" in log_lines[-1]
    plan = clock(1200, 1200 - 36 - 125).plan(ranked, exp, 10, 2)
    assert (plan.top, plan.seeds) == (2, 1)
    # no time: the best trial's own model
    plan = clock(1200, 1200 - 36 - 20).plan(ranked, exp, 10, 2)
    assert (plan.top, plan.seeds) == (1, 0)
    assert log_lines[-1].endswith("no time for confirmation runs; the best trial's own model is exported")
    # no budget: as configured; no confirmation configured: the best trial alone
    assert (Budget(None).plan(ranked, exp, 10, 2).top, Budget(None).plan(ranked, exp, 10, 2).seeds) == (3, 2)
    none = Budget(None).plan(ranked, ExperimentConfig(confirm_top=0), 10, 2)
    assert (none.top, none.seeds) == (1, 0)


def test_durations_read_as_a_person_writes_them():
    shown = [duration(s) for s in (0, 44.6, 60, 425, 3600 * 2 + 190)]
    assert shown == ["0 s", "45 s", "1m 00s", "7m 05s", "2h 03m"]
