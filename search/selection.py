"""Choosing the configuration to export, in a way that resists luck.

Many trials x epochs on a small devel set make the single best devel score optimistic. So:
1. each trial is ranked by its selection score (experiment.select: by default the mean of its last
   select_last scores), read from the checkpoint it would be exported from;
2. the top experiment.confirm_top configurations are trained again from scratch with
   experiment.confirm_seeds new training seeds (Ray tasks with a trial's resources), each scored the
   same way;
3. the exported best is the configuration with the best mean selection score over its seeds (the
   original trial's among them). Test rho, where test labels are known, is recorded for every seed
   and shown, never used to choose.
The checkpoint a trial is ranked and exported by is chosen here too (tuning.PruneCheckpoints keeps only it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from auttention import import_tensorflow_quietly, storage
from auttention.config import PipelineConfig, ScoringConfig
from auttention.engine import Engine, selection_score
from auttention.errors import TrainingDiverged, UserError
from auttention.formatting import format_rho
from auttention.record import (
    CHECKPOINT_REPORT,
    FUSION,
    SELECTION,
    TRIAL_PREFIX,
    EpochReport,
    Predictions,
    metric_branch,
)
from auttention.svr import postprocess

from .budget import Budget, Plan
from .resources import configure_tensorflow, trial_resources
from .runfolder import local_checkpoint

if TYPE_CHECKING:
    from auttention.spectrogram import Spectrograms
    from auttention.storage import Location

    from .space import ExperimentConfig, ResourcesConfig, Space

log = logging.getLogger(__name__)


def trial_id(result) -> str:
    """A Tune result's trial id: the id it reported, else its folder's name without TRIAL_PREFIX."""
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix(TRIAL_PREFIX))


@dataclasses.dataclass
class SeedRun:
    """One model of a candidate's configuration: the trial's own (`trial`) or a confirmation seed's, trained
    from scratch; its selection score, the test rho of its model (None without test labels) and predictions
    (None where its training diverged, `diverged` saying how)."""

    seed: int
    selection_score: float
    test_rho: float | None
    epochs: int
    predictions: Predictions | None = None
    trial: bool = False
    diverged: str | None = None

    def record(self) -> dict[str, Any]:
        """What metrics.json's `confirmation` holds of it."""
        out: dict[str, Any] = {
            "seed": self.seed,
            SELECTION: self.selection_score,
            "test_rho": self.test_rho,
            "epochs": self.epochs,
        }
        if self.trial:
            out["trial"] = True
        if self.diverged:
            out["diverged"] = self.diverged
        return out


@dataclasses.dataclass
class Candidate:
    """A trial as a candidate for export: its configuration, selected checkpoint and its models' runs."""

    trial_id: str
    result: Any
    config: PipelineConfig  # the trial's configuration (Space.trial_config), built once
    checkpoint: str  # the selected checkpoint's folder: a local path, or a URI on object storage
    epoch: int
    score: float  # the trial's own selection score
    finished: bool = True  # the trial trained all its epochs
    runs: list[SeedRun] = dataclasses.field(default_factory=list)  # the trial's model first, then each seed's
    # the selected checkpoint scored once (confirm): {branch: Evaluation}, and its feature tables (empty before)
    evaluations: dict[str, Any] = dataclasses.field(default_factory=dict)
    features: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def predictions(self) -> list[Predictions]:
        """The predictions of every model that trained (the trial's first)."""
        return [run.predictions for run in self.runs if run.predictions is not None]

    @property
    def mean_selection(self) -> float:
        """The mean selection score over every seed (the original trial's first); -inf when a seed diverged
        (a configuration that diverges with another seed ranks below every one whose seeds all trained)."""
        if any(run.diverged for run in self.runs):
            return -math.inf
        values = [run.selection_score for run in self.runs if math.isfinite(run.selection_score)]
        return float(np.mean(values)) if values else self.score

    def record(self) -> dict[str, Any]:
        """What metrics.json and the report show of it."""
        tests = [run.test_rho for run in self.runs if run.test_rho is not None]
        return {
            "trial_id": self.trial_id,
            SELECTION: self.score,
            "mean_selection_score": self.mean_selection,
            "mean_test_rho": float(np.mean(tests)) if tests else None,
            "seeds": [r.record() for r in self.runs],
        }


def _folder(trial_dir: Path | Location) -> Location:
    return trial_dir if isinstance(trial_dir, storage.Location) else storage.location(str(trial_dir))


def checkpoint_reports(trial_dir: Path | Location) -> list[tuple[Path | str, EpochReport]]:
    """(checkpoint folder, its report) of every checkpoint of a trial, in epoch order. trial_dir: a local
    path or a storage.Location (a trial on object storage: the folders are then URIs)."""
    folder = _folder(trial_dir)
    selector = pafs.FileSelector(folder.path, allow_not_found=True)
    names = sorted(
        posixpath.basename(i.path)
        for i in folder.fs.get_file_info(selector)
        if i.type == pafs.FileType.Directory or (folder.remote and i.type != pafs.FileType.File)
    )
    out = []
    for name in names:
        if not name.startswith("checkpoint_"):
            continue
        try:
            report = EpochReport.from_result(json.loads((folder / name / CHECKPOINT_REPORT).read_text()))
        except (OSError, ValueError):
            continue  # a checkpoint being written or damaged: never the best
        out.append(((folder / name).uri if folder.remote else Path(folder.path) / name, report))
    return out


def selected_checkpoint(
    trial_dir: Path | Location, metric: str, select: str
) -> tuple[Path | str, EpochReport, float] | None:
    """(checkpoint folder, its report, the trial's selection score) of the checkpoint a trial is chosen and
    exported by: under select: best, its best epoch (the earliest on ties); otherwise its last epoch, scored
    by the selection statistic it reported there. None when no checkpoint has a finite score."""
    selected: tuple[Path | str, EpochReport, float] | None = None
    for folder, report in checkpoint_reports(trial_dir):
        value = report.score(metric)
        if select != "best" and math.isfinite(report.selection_score):
            value = report.selection_score
        if not math.isfinite(value):
            continue
        if select == "best" and selected is not None and value <= selected[2]:
            continue
        if select != "best" and selected is not None and report.epoch < selected[1].epoch:
            continue
        selected = (folder, report, float(value))
    return selected


def rank_trials(results, space: Space) -> list[Candidate]:
    """Every trial with a scored checkpoint, best selection score first; only those that trained all their
    epochs when there are any (a trial ASHA stopped early is not exported as if it were finished). Reads each
    trial where Tune stored it (local disk or object storage)."""
    exp = space.experiment
    ranked = []
    for result in results:
        folder = storage.of_filesystem(getattr(result, "filesystem", None), result.path) if result.path else None
        found = selected_checkpoint(folder, exp.metric, exp.select) if folder else None
        if found:
            checkpoint, report, score = found
            finished = EpochReport.from_result(result.metrics).finished
            ranked.append(
                Candidate(
                    trial_id(result),
                    result,
                    space.trial_config(result.config),
                    str(checkpoint),
                    report.epoch,
                    score,
                    finished,
                )
            )
    done = [c for c in ranked if c.finished]
    return sorted(done or ranked, key=lambda c: c.score, reverse=True)


def evaluate_checkpoint(
    checkpoint: str, source, cfg: PipelineConfig, resources: ResourcesConfig | None = None, functionals=None
):
    """(evaluations, feature sets, epoch) of a trial checkpoint's two models on every partition
    (`source`: the spectrograms' search.sources.Source; `resources`: the space's, which TensorFlow keeps to;
    `functionals`: the feature set where the configuration fuses it)."""

    import_tensorflow_quietly()  # before the engine builds a model: TensorFlow's start-up lines kept off stderr
    if resources is not None:
        configure_tensorflow(resources.cpu, resources.gpu)
    spec = source.get()
    with local_checkpoint(checkpoint) as folder:  # a checkpoint on object storage: fetched to this node
        engine = Engine.load(folder, cfg, spec, functionals=functionals)
    with _damage_named(spec, source.folder):
        features, evaluations = engine.evaluate()
    return evaluations, features, engine.epoch


@contextlib.contextmanager
def _damage_named(spec: Spectrograms, folder: Location) -> Iterator[None]:
    """Turn a TrainingDiverged that non-finite frames of the spectrograms `spec` caused (a damaged cache
    entry, e.g. of a test clip, which no trial reads before this) into one line naming the cache `folder`."""
    try:
        yield
    except TrainingDiverged:
        bad: set[str] = set()
        for start in range(0, len(spec.x), 1024):  # block by block: no boolean copy of a whole corpus
            rows = slice(start, start + 1024)
            bad.update(spec.file_name[rows][~np.isfinite(spec.x[rows]).all(axis=(1, 2))])
        if not bad:
            raise  # the model's own divergence, not the data's
        raise UserError(
            f"{folder}: the spectrograms of {len(bad)} clip(s) hold NaN or Inf values (e.g. "
            f"{min(bad)}), so this cache entry is damaged; delete that folder so that the next "
            f"run extracts it again"
        ) from None


def scored_branch(evaluations: dict[str, Any], metric: str) -> Any:
    """The evaluation of the branch `metric` scores (the fusion's where that branch is not evaluated)."""
    return evaluations.get(metric_branch(metric), evaluations[FUSION])


def train_seed(
    cfg: PipelineConfig,
    source,
    seed: int,
    experiment: ExperimentConfig,
    max_epochs: int,
    resources: ResourcesConfig | None = None,
    functionals=None,
) -> SeedRun:
    """The configuration trained from scratch with training seed `seed` by the engine as a trial is (with the
    space's `resources`), without checkpoints: its selection score over the epochs it scores, and the test
    rho and predictions of its last epoch (None without test labels)."""
    import_tensorflow_quietly()  # before the engine builds a model: TensorFlow's start-up lines kept off stderr
    if resources is not None:
        configure_tensorflow(resources.cpu, resources.gpu)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, seed=seed))
    spec = source.get()
    engine = Engine.new(cfg, spec, functionals=functionals)
    try:
        with _damage_named(spec, source.folder):
            reports = engine.run(max_epochs, score_every=experiment.report_every)
            _, evaluations = engine.evaluate()
    except TrainingDiverged as exc:  # this seed's training, not the data (_damage_named said so): recorded
        return SeedRun(seed, math.nan, None, engine.epoch, diverged=str(exc))
    history = [report.score(experiment.metric) for report in reports]
    ev = scored_branch(evaluations, experiment.metric)
    return SeedRun(
        seed,
        selection_score(history, experiment.select, experiment.select_last),
        ev.test_rho,
        engine.epoch,
        Predictions.of(ev),
    )


def confirm(
    ranked: list[Candidate], space: Space, sources: dict[str, Any], plan: Plan, functionals=None
) -> list[Candidate]:
    """Train the top plan.top candidates again with plan.seeds new seeds each (experiment.confirm_top and
    confirm_seeds, or fewer where the budget says so: search.budget), in parallel as Ray tasks with a trial's
    resources; fill each candidate's `runs` (its own first), and its `evaluations` and `features` from its
    selected checkpoint, scored once here (the export uses them)."""
    import ray

    exp = space.experiment
    top = ranked[: max(plan.top, 1)]
    need = trial_resources(space)
    task = ray.remote(train_seed).options(num_cpus=need["CPU"], num_gpus=need["GPU"], memory=need.get("memory"))
    own = ray.remote(evaluate_checkpoint).options(num_cpus=need["CPU"], num_gpus=need["GPU"], memory=need.get("memory"))
    shared = ray.put(functionals) if functionals is not None else None  # once, for every task
    jobs: list[tuple[Candidate, int | None, Any]] = []  # (candidate, training seed (None: its own model), task)
    for cand in top:
        source = sources[cand.config.spectrogram.hash()]
        jobs.append((cand, None, own.remote(cand.checkpoint, source, cand.config, space.resources, shared)))
        base = cand.config.training.seed
        for i in range(1, plan.seeds + 1):
            jobs.append(
                (
                    cand,
                    base + i,
                    task.remote(
                        cand.config, source, base + i, exp, space.scheduler.max_epochs, space.resources, shared
                    ),
                )
            )
    if len(jobs) > len(top):
        log.info(
            f"selection: training the top {len(top)} configuration(s) again with {plan.seeds} new seed(s) "
            f"each ({len(jobs) - len(top)} runs)"
        )
    for cand, seed, ref in jobs:
        out = _get(ref)
        if seed is None:
            cand.evaluations, cand.features, cand.epoch = out
            ev = scored_branch(cand.evaluations, exp.metric)
            cand.runs.insert(
                0,
                SeedRun(cand.config.training.seed, cand.score, ev.test_rho, cand.epoch, Predictions.of(ev), trial=True),
            )
            continue
        cand.runs.append(out)
        if out.diverged:
            log.warning(
                f"warning: trial {cand.trial_id} seed {seed} diverged ({out.diverged}); this configuration "
                f"ranks below every configuration whose seeds all trained"
            )
        else:
            shown = f", test {format_rho(out.test_rho)}" if out.test_rho is not None else ""
            log.info(f"  trial {cand.trial_id} seed {seed}: selection score {out.selection_score:.3f}{shown}")
    return top


def _get(ref):
    """ray.get(ref); a UserError the task raised (a damaged cache entry) as its one line, not Ray's traceback."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise UserError(str(exc.cause)) from None
        raise


@dataclasses.dataclass
class Selection:
    """What the select-and-confirm stage decided: every ranked trial, the confirmed top, the one chosen."""

    ranked: list[Candidate]
    confirmed: list[Candidate]
    chosen: Candidate | None  # None when no trial scored an epoch


def select_and_confirm(
    results, space: Space, sources: dict[str, Any], budget: Budget | None = None, functionals=None
) -> Selection:
    """The select-and-confirm stage: trials ranked by their selection score (rank_trials), the top confirmed
    with new seeds (confirm) as far as the `budget` allows (search.budget), the best mean over seeds chosen
    (choose). functionals: the feature set where a configuration fuses it."""
    exp = space.experiment
    ranked = rank_trials(results, space)
    if not ranked:
        return Selection(ranked, [], None)
    plan = (budget or Budget(None)).plan(ranked, exp, space.scheduler.max_epochs, confirmation_slots(space))
    confirmed = confirm(ranked, space, sources, plan, functionals)
    return Selection(ranked, confirmed, choose(confirmed))


def confirmation_slots(space: Space) -> int:
    """How many confirmation runs the cluster holds at once: its CPUs (and GPUs) over a trial's."""
    import ray

    need, have = trial_resources(space), ray.cluster_resources()
    slots = [have.get(k, 0.0) / v for k, v in need.items() if k in ("CPU", "GPU") and v]
    return max(1, int(min(slots))) if slots else 1


def ensemble(members: Candidate | list[Candidate], scoring: ScoringConfig) -> Predictions:
    """Configurations' predictions averaged: each member's over its seeds (the trial's model and every
    confirmation seed's), then the members' alike, post-processed as one model's; the held-out predictions of
    the validation (scoring.validation) keep their folds (every model's clips share them). Averaging the seeds'
    models removes much of the variance a single training seed carries; averaging configurations, some of what
    one configuration gets wrong."""
    members = members if isinstance(members, list) else [members]
    out = {}
    for part in ("devel", "test", "held_out"):
        means = [
            pd.concat([p.part(part).set_index("file_name")["prediction"] for p in m.predictions], axis=1).mean(axis=1)
            for m in members
        ]
        mean = pd.concat(means, axis=1).mean(axis=1)
        out[part] = pd.DataFrame({"file_name": mean.index, "prediction": postprocess(mean.to_numpy(), scoring)})
    folds = members[0].predictions[0].part("held_out").set_index("file_name")["fold"]
    out["held_out"].insert(1, "fold", folds.loc[out["held_out"]["file_name"]].to_numpy())
    return Predictions(**out)


def choose(confirmed: list[Candidate]) -> Candidate | None:
    """The candidate with the best mean selection score over its seeds (the first on ties)."""
    chosen = None
    for cand in confirmed:
        if chosen is None or cand.mean_selection > chosen.mean_selection:
            chosen = cand
    return chosen
