"""experiment.time_budget over the whole search: trials, confirmation, export and report.

The clock starts when `run` starts. What is left after the start (Ray, the spectrograms, the baseline)
is split, and the run says so before the first trial:
- the export and the report keep AFTER_SHARE of the budget (at least AFTER_MIN_S, at most AFTER_MAX_S);
- the confirmation keeps experiment.confirm_share of it (none without confirmation);
- the trials get the rest (Tune's time_budget_s: no trial runs past it).
When the trials end, the confirmation is planned from what the trials measured (each candidate's wall
time for all max_epochs, scaled from the epochs it ran) and the time actually left: the configured top
and seeds where they fit, else fewer seeds, else fewer candidates, else none (the best trial's own model
is exported). The plan, with its estimate, is said before it runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from auttention.errors import UserError
from auttention.record import EpochReport

if TYPE_CHECKING:
    from .space import ExperimentConfig

log = logging.getLogger(__name__)

AFTER_SHARE, AFTER_MIN_S, AFTER_MAX_S = 0.03, 15.0, 120.0  # the export and the report


def duration(seconds: float) -> str:
    """A duration as the run prints it: 45 s, 7m 05s, 2h 03m."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@dataclasses.dataclass(frozen=True)
class Plan:
    """The confirmation as it will run: the top `top` candidates, each with `seeds` new training seeds."""

    top: int
    seeds: int
    estimate_s: float = 0.0  # its expected wall time

    @property
    def runs(self) -> int:
        return self.top * self.seeds


@dataclasses.dataclass
class Budget:
    """The search's time budget (total_s None: no budget) and the clock it is spent on (`clock`: seconds, as
    time.monotonic counts them); `trials_end` is the clock's reading at which the trials must have ended
    (set by `for_trials`; search.tuning's BudgetStopper ends them there)."""

    total_s: float | None
    clock: Callable[[], float] = time.monotonic
    started: float = math.nan
    trials_end: float | None = None
    trials_s: float | None = None  # the trials' share (seconds)

    def __post_init__(self) -> None:
        if math.isnan(self.started):
            self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def trials_over(self) -> bool:
        """Whether the trials' share of the budget is spent."""
        return self.trials_end is not None and self.clock() >= self.trials_end

    def left(self) -> float:
        return math.inf if self.total_s is None else self.total_s - self.elapsed()

    @property
    def after_s(self) -> float:
        """What the export and the report keep."""
        return min(AFTER_MAX_S, max(AFTER_MIN_S, AFTER_SHARE * (self.total_s or 0.0)))

    def for_trials(self, experiment: ExperimentConfig) -> float | None:
        """Tune's time_budget_s: the budget left now less the confirmation's and the export's shares (None: no
        budget), said in one line; a budget that leaves the trials nothing is refused in one line."""
        if self.total_s is None:
            return None
        confirm = experiment.confirm_share * self.total_s if experiment.confirm_top else 0.0
        trials = self.left() - confirm - self.after_s
        spent = self.elapsed()
        if trials < 1:
            raise UserError(
                f"experiment.time_budget {duration(self.total_s)} leaves the trials no time: {duration(spent)} "
                f"went to starting Ray, the spectrograms and the baseline, and the confirmation "
                f"(experiment.confirm_share) and the export keep {duration(confirm + self.after_s)}; "
                f"raise the budget"
            )
        shares = (
            f"the confirmation {duration(confirm)} (confirm_share {experiment.confirm_share:g}), " if confirm else ""
        )
        self.trials_end, self.trials_s = self.clock() + trials, trials
        log.info(
            f"budget: {duration(self.total_s)} in all: {duration(spent)} so far (Ray, spectrograms, baseline); "
            f"trials {duration(trials)}; {shares}export and report {duration(self.after_s)}"
        )
        return trials

    def plan(self, candidates: Sequence[Any], experiment: ExperimentConfig, max_epochs: int, slots: int) -> Plan:
        """The confirmation that fits the time left (see the module), said in one line. `candidates`: the
        ranked trials (selection.Candidate, best first); `slots`: how many confirmation runs the cluster
        holds at once."""
        wanted = Plan(min(experiment.confirm_top, len(candidates)), experiment.confirm_seeds)
        if not experiment.confirm_top or not candidates:
            return Plan(min(1, len(candidates)), 0)
        if self.total_s is None:
            return wanted
        available = self.left() - self.after_s
        runs = [run_seconds(c, max_epochs) for c in candidates]
        options = [Plan(top, seeds) for top, seeds in _fallbacks(wanted.top, wanted.seeds)]
        for option in options:
            estimate = makespan(runs[: option.top], option.seeds, max_epochs, slots)
            if estimate <= available:
                chosen = dataclasses.replace(option, estimate_s=estimate)
                break
        else:
            chosen = Plan(1, 0, makespan(runs[:1], 0, max_epochs, slots))
        said = (
            f"budget: the trials ended at {duration(self.elapsed())} of {duration(self.total_s)}; "
            f"{duration(available)} left for the confirmation (the best trial's {max_epochs} epochs take about "
            f"{duration(runs[0])}, {slots} run(s) at a time): "
        )
        if chosen.seeds == 0:
            said += "no time for confirmation runs; the best trial's own model is exported"
        elif (chosen.top, chosen.seeds) == (wanted.top, wanted.seeds):
            said += f"the top {chosen.top} with {chosen.seeds} new seed(s) each, about {duration(chosen.estimate_s)}"
        else:
            said += (
                f"the top {chosen.top} with {chosen.seeds} new seed(s) each, about {duration(chosen.estimate_s)} "
                f"(of confirm_top {experiment.confirm_top} x confirm_seeds {experiment.confirm_seeds}: the "
                f"budget leaves time for no more)"
            )
        log.info(said)
        return chosen


def _fallbacks(top: int, seeds: int) -> list[tuple[int, int]]:
    """The confirmations to try, most wanted first: fewer seeds before fewer candidates, and more than one
    candidate before one with more seeds (comparing configurations is what confirmation is for)."""
    out = [(top, s) for s in range(seeds, 0, -1)]
    out += [(t, 1) for t in range(top - 1, 0, -1)]
    return list(dict.fromkeys(out))


def run_seconds(candidate: Any, max_epochs: int) -> float:
    """How long a confirmation run of a candidate's (selection.Candidate) configuration takes: its trial's
    wall time, scaled from the epochs it ran to max_epochs (the start-up of a run is in it once)."""
    report = EpochReport.from_result(candidate.result.metrics)
    epochs = max(report.epoch, 1)
    total = report.trial_seconds if math.isfinite(report.trial_seconds) else 0.0
    return total * max(max_epochs, epochs) / epochs


def makespan(runs: Sequence[float], seeds: int, max_epochs: int, slots: int) -> float:
    """The wall time of the confirmation's tasks on `slots` at once, in the order confirm submits them: per
    candidate, its checkpoint's evaluation (about one epoch) and then `seeds` runs (runs[i] each)."""
    jobs = []
    for run in runs:
        jobs.append(run / max(max_epochs, 1))
        jobs += [run] * seeds
    ends = [0.0] * max(slots, 1)
    for job in jobs:  # each task starts on the slot that frees first
        i = min(range(len(ends)), key=ends.__getitem__)
        ends[i] += job
    return max(ends) if jobs else 0.0
