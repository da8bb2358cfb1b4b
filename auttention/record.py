"""The records that cross module boundaries, typed in one place: the names of the branches and of their scores,
one scored epoch of a configuration (`EpochReport`: what the engine measures, what a Tune trial reports and
checkpoints), and the predictions of one model or an ensemble (`Predictions`).

A report goes to and comes from Tune's result dict, a trial's progress.csv and a checkpoint's metrics.json
only through `EpochReport.to_result`, `to_json` and `from_result` here, and tables read back from run
folders (progress.csv, trials.csv) get today's column names from `renamed_columns`. The validation score
(scoring.validation's: what C, ASHA, the selection and the ensembles choose by) is a branch's `score`
everywhere; devel's rho is `devel_rho`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Protocol

import pandas as pd

NETWORKS = ("attention", "seq2seq")  # the two recurrent autoencoders
FUNCTIONALS = "functionals"  # the utterance functionals (auttention.baseline): a feature set, a folder, a row
FUSION = "fusion"  # the early fusion (scoring.fuse): one name in YAML, trials.csv, report, metrics
BRANCHES = (*NETWORKS, FUSION)  # what a trial scores every epoch

SCORE = "_score"  # a branch's validation score in a report: fusion_score, and its C: fusion_c
OLD_SCORE = "_rho"  # what earlier versions called it (fusion_rho), read and renamed
EPOCH = "epoch"
SELECTION = "selection_score"  # the statistic a trial is ranked by over its scores (engine.selection_score)
TRIAL_PREFIX = "trial_"  # of a trial's name and folder
CHECKPOINT_REPORT = "metrics.json"  # a trial checkpoint's report (EpochReport.to_json), beside its models

STATUSES = ("completed", "stopped", "errored")


def metric_name(branch: str) -> str:
    """The score of `branch` as a report, a YAML metric and a table name it: `fusion_score`."""
    return f"{branch}{SCORE}"


def metric_branch(metric: str) -> str:
    """The branch a metric scores: fusion_score (or an earlier version's fusion_rho) -> fusion."""
    for suffix in (SCORE, OLD_SCORE):
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


def renamed_metric(metric: str) -> str | None:
    """Today's name of a metric an earlier version named (fusion_rho -> fusion_score); None if it is current."""
    branch = metric.removesuffix(OLD_SCORE)
    return metric_name(branch) if metric.endswith(OLD_SCORE) and branch in BRANCHES else None


def validation_label(validation: str, folds: int) -> str:
    """The name of a validation (scoring.validation and scoring.folds) in every line, table, file and axis:
    "devel", "swap" or "5-fold"."""
    return f"{folds}-fold" if validation == "speaker_folds" else validation


def renamed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A table an earlier version wrote (progress.csv, trials.csv) with today's column names: fusion_rho ->
    fusion_score, best_fusion_rho -> best_fusion_score (a column of the new name wins where both exist)."""
    renames = {}
    for column in map(str, frame.columns):
        prefix = "best_" if column.startswith("best_") else ""
        new = renamed_metric(column.removeprefix(prefix))
        if new is not None and prefix + new not in frame.columns:
            renames[column] = prefix + new
    return frame.rename(columns=renames)


def recorded_validation(metrics: Mapping[str, Any]) -> str:
    """The validation a run's best/metrics.json was chosen by, as it records it ("devel", "swap", "5-fold")."""
    return str((metrics.get(FUSION) or {}).get("score_name") or "devel")


@dataclasses.dataclass(frozen=True)
class BranchScore:
    """A branch's validation score (what its C was chosen by) and that C."""

    score: float
    c: float


def _number(value: Any, default: float = math.nan) -> float:
    """A float from a result's value (None, missing or not a number: `default`)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


@dataclasses.dataclass(frozen=True)
class EpochReport:
    """One scored epoch of a configuration: what the engine measured and, in a search, what its trial adds.

    epoch : epochs every network has trained
    scores : {branch: BranchScore} of the branches scored (BRANCHES; the functionals alone do not change)
    losses : {network: its mean training loss in the epoch}
    seconds : the epoch's wall time (training every network, then the scoring)
    max_epochs : the epochs a trial that is never stopped trains (scheduler.max_epochs; None outside a search)
    node_id : the Ray node the trial ran this epoch on
    history : the trial's metric (experiment.metric) at every scored epoch so far, this one last
    selection_score : experiment.select over `history`: what the trial is ranked by
    trial_seconds : the trial's wall time up to this report (Tune's time_total_s; read back only)
    """

    epoch: int
    scores: Mapping[str, BranchScore]
    losses: Mapping[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = math.nan
    max_epochs: int | None = None
    node_id: str | None = None
    history: tuple[float, ...] = ()
    selection_score: float = math.nan
    trial_seconds: float = math.nan

    @property
    def finished(self) -> bool:
        """Whether the trial trained all its epochs (not stopped early by ASHA or the budget)."""
        return self.max_epochs is not None and self.epoch >= self.max_epochs

    def score(self, metric: str) -> float:
        """The score a metric names (fusion_score: the fusion's validation score); NaN where not scored."""
        found = self.scores.get(metric_branch(metric))
        return found.score if found is not None else math.nan

    def to_result(self) -> dict[str, Any]:
        """The flat dict a trial reports to Tune (and Tune writes to progress.csv): no history."""
        out: dict[str, Any] = {EPOCH: self.epoch, "epoch_seconds": self.seconds}
        for branch, scored in self.scores.items():
            out[metric_name(branch)], out[f"{branch}_c"] = scored.score, scored.c
        out.update({f"{network}_loss": loss for network, loss in self.losses.items()})
        if self.max_epochs is not None:
            out["max_epochs"] = self.max_epochs
        if self.node_id is not None:
            out["node_id"] = self.node_id
        out[SELECTION] = self.selection_score
        return out

    def to_json(self) -> dict[str, Any]:
        """What a trial checkpoint's metrics.json holds: the result and the history."""
        return {**self.to_result(), "history": list(self.history)}

    @classmethod
    def from_result(cls, result: Mapping[str, Any] | None) -> EpochReport:
        """The report in a Tune result dict, a progress.csv row or a checkpoint's metrics.json (also as an
        earlier version wrote them: fusion_rho for fusion_score); an empty report (epoch 0) from None."""
        result = result or {}
        scores = {}
        for branch in BRANCHES:
            key = next((branch + suffix for suffix in (SCORE, OLD_SCORE) if branch + suffix in result), None)
            if key is not None:
                scores[branch] = BranchScore(_number(result[key]), _number(result.get(f"{branch}_c")))
        losses = {n: _number(result[f"{n}_loss"]) for n in NETWORKS if f"{n}_loss" in result}
        max_epochs = result.get("max_epochs")
        node = result.get("node_id")
        return cls(
            epoch=int(_number(result.get(EPOCH), 0.0)),
            scores=scores,
            losses=losses,
            seconds=_number(result.get("epoch_seconds")),
            max_epochs=None if max_epochs is None or pd.isna(max_epochs) else int(max_epochs),
            node_id=None if node is None or pd.isna(node) else str(node),
            history=tuple(float(v) for v in result.get("history") or ()),
            selection_score=_number(result.get(SELECTION)),
            trial_seconds=_number(result.get("time_total_s")),
        )


def status(report: EpochReport | None, errored: bool) -> str:
    """A trial's status: completed (all its epochs), stopped (ended early by ASHA or the budget) or errored."""
    if errored:
        return "errored"
    return "completed" if report is not None and report.finished else "stopped"


class Predicted(Protocol):
    """What holds one model's predictions (an evaluation.Evaluation)."""

    devel: pd.DataFrame
    test: pd.DataFrame
    held_out: pd.DataFrame | None


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One model's (or an ensemble's) predictions: devel and test (file_name, prediction), and the held-out
    predictions its validation score is computed from (file_name, fold, prediction)."""

    devel: pd.DataFrame
    test: pd.DataFrame
    held_out: pd.DataFrame | None = None

    @classmethod
    def of(cls, ev: Predicted) -> Predictions:
        """An evaluation's predictions."""
        return cls(ev.devel, ev.test, ev.held_out)

    def part(self, name: str) -> pd.DataFrame:
        """The predictions of "devel", "test" or "held_out" (ValueError where these have no held-out part)."""
        frame = {"devel": self.devel, "test": self.test, "held_out": self.held_out}[name]
        if frame is None:
            raise ValueError(f"these predictions have no {name} part")
        return frame
