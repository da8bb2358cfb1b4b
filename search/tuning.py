"""Ray Tune + Optuna: the searcher (TPE, honest about pruned and failed trials), ASHA, the Tuner."""

from __future__ import annotations

import dataclasses
import logging
import math
import posixpath
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from auttention import storage
from auttention.config import ScoringConfig, build
from auttention.errors import UserError
from auttention.formatting import VALIDATION_TEXT
from auttention.record import EPOCH, NETWORKS, SELECTION, TRIAL_PREFIX, EpochReport, metric_name, validation_label

from . import compat, tracking
from .budget import Budget, duration
from .keys import flat_params
from .selection import checkpoint_reports, selected_checkpoint

if TYPE_CHECKING:
    from .runfolder import RunFolder
    from .space import Space

log = logging.getLogger(__name__)

SETTLED = "settled"  # the user attribute that says why a trial's state was recorded for it
LOST = "asked by the searcher after Tune's last snapshot before the driver stopped; never resumed"
BUDGET_ENDED = "ended by the time budget"  # (settled) a trial the trials' share of the budget ended


def settle_trials(study, trials, why: str) -> None:
    """Record trials left RUNNING as what happened to them: PRUNED where they reported epochs (their
    intermediate values stay), FAIL where they never reported; `why` goes into their user attributes."""
    import optuna

    for trial in trials:
        state = optuna.trial.TrialState.PRUNED if trial.intermediate_values else optuna.trial.TrialState.FAIL
        try:
            compat.set_user_attr(study, trial, SETTLED, why)
            study.tell(trial.number, state=state)
        except Exception as exc:  # noqa: BLE001 - finished meanwhile: said, and the search goes on
            log.warning("warning: optuna: could not settle trial %s: %s", trial.number, exc)


def settle_study(run_dir: Path, study_name: str, budget_ended: bool = False) -> tuple[dict[str, int], int]:
    """After a search: every Optuna trial still RUNNING (the trials a time budget ended, or never started)
    is settled. Returns the study's counts (per state; `unstarted`: the trials the budget ended before their
    first epoch, FAIL in the study, where TPE leaves them out) and how many trials a driver restart lost."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=optuna_storage_url(run_dir))
    settle_trials(
        study,
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)),
        BUDGET_ENDED if budget_ended else "still running when the search ended",
    )
    counts: dict[str, int] = {}
    lost = 0
    for trial in study.get_trials(deepcopy=False):
        unstarted = trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get(SETTLED) == BUDGET_ENDED
        state = "unstarted" if unstarted else trial.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
        lost += trial.user_attrs.get(SETTLED) == LOST
    return counts, lost


def counts_line(counts: dict[str, int], lost: int, budget_ended: bool) -> str:
    """The study's trials as the settle stage says them: what each count means, the budget's part named."""
    words = {
        "complete": "complete",
        "fail": "failed (trials.csv has their errors)",
        "pruned": "pruned (stopped early by ASHA" + (" or the time budget)" if budget_ended else ")"),
        "unstarted": "ended by the time budget before their first epoch",
        "running": "still running",
    }
    shown = [f"{counts[state]} {words[state]}" for state in words if counts.get(state)]
    shown += [f"{n} {state}" for state, n in sorted(counts.items()) if state not in words]
    lost_text = f" ({lost} lost when the driver stopped: asked after its last snapshot)" if lost else ""
    return "optuna: " + ", ".join(shown) + lost_text


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials ASHA stopped as PRUNED and errored trials as FAIL.

    Ray's OptunaSearch tells Optuna every trial that ends with a result as COMPLETE with its
    last (possibly one-epoch) score, so TPE would learn from truncated scores as if final. A completed
    trial's value here is its selection score (experiment.select over its epochs), what the search
    ranks trials by; each epoch's metric is an intermediate value.
    It keeps to OptunaSearch's private bookkeeping through search/compat.py (checked against its versions).
    """

    def restore(self, checkpoint_path: str) -> None:
        """After a driver restart: a trial the searcher asked for after Tune's last snapshot is in the study
        but unknown to the restored Tune, which never resumes it; settle it now (so TPE's constant liar
        does not count it as running), marked as lost."""
        import optuna

        super().restore(checkpoint_path)
        study = compat.searcher_study(self)
        known = {compat.storage_trial_id(ot_trial) for ot_trial in compat.searcher_trials(self).values()}
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        settle_trials(study, [t for t in running if compat.storage_trial_id(t) not in known], LOST)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Record the metric as an intermediate value at its epoch (what TPE ranks pruned trials by)."""
        ot_trial = compat.searcher_trials(self).get(trial_id)
        report = EpochReport.from_result(result)
        value = report.score(self.metric)
        if ot_trial is None or trial_id in compat.searcher_completed(self) or not math.isfinite(value):
            return
        step = report.epoch or int(result.get("training_iteration", 0))
        frozen = ot_trial.storage.get_trial(compat.storage_trial_id(ot_trial))
        # after a driver restart, Tune may resume a trial from a snapshot older than the study, which
        # already recorded how it ended: the study keeps that, and the search goes on
        if frozen.state.is_finished() or step in frozen.intermediate_values:
            return
        ot_trial.report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        completed, ot_trials = compat.searcher_completed(self), compat.searcher_trials(self)
        if trial_id in completed or trial_id not in ot_trials:
            return
        ot_trial = ot_trials[trial_id]
        if result:
            self.on_trial_result(trial_id, result)  # Tune hands the last result only to this method
        report = EpochReport.from_result(result) if result else None
        value = None
        if report is not None:
            value = report.selection_score if result and SELECTION in result else report.score(self.metric)
        if error or (value is not None and not math.isfinite(value)):
            state, value = optuna.trial.TrialState.FAIL, None
        elif value is None or report is None or not report.finished:
            state, value = optuna.trial.TrialState.PRUNED, None
        else:
            state = optuna.trial.TrialState.COMPLETE
        try:
            compat.searcher_study(self).tell(ot_trial, value, state=state)
        except Exception as exc:  # noqa: BLE001 - e.g. told already before a driver restart: said, the search goes on
            log.warning("warning: optuna: could not record trial %s: %s", trial_id, exc)
        completed.add(trial_id)


def make_sampler(space: Space):
    """The seeded Optuna sampler the searcher section asks for."""
    import optuna

    s = space.searcher
    seed = space.experiment.seed
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=s.n_startup_trials,
        multivariate=s.multivariate,
        group=s.group and s.multivariate,
        constant_liar=space.experiment.max_concurrent > 1,
    )


def optuna_storage_url(run_dir: Path) -> str:
    """The SQLite study the search persists (optuna-dashboard can open it while the search runs)."""
    return f"sqlite:///{(run_dir / 'optuna.db').resolve()}"


def make_searcher(space: Space, run_dir: Path):
    """OptunaSearch (define-by-run, persisted study, the space's first points) behind a ConcurrencyLimiter."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group option
    storage = optuna.storages.RDBStorage(optuna_storage_url(run_dir))
    points = [flat_params(point) for point in space.searcher.points_to_evaluate]
    searcher = HonestOptunaSearch(
        space=space.define_by_run,
        metric=space.experiment.metric,
        mode="max",
        sampler=make_sampler(space),
        storage=storage,
        study_name=space.experiment.name,
        points_to_evaluate=points or None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=space.experiment.max_concurrent)


def make_scheduler(space: Space):
    """ASHA on the per-epoch metric (or none)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = space.scheduler
    if sch.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=EPOCH, max_t=sch.max_epochs, grace_period=sch.grace_period, reduction_factor=sch.reduction_factor
    )


class ProgressLog(tune.Callback):
    """One line per scored epoch and per finished trial, instead of Tune's wide tables."""

    def __init__(self, metric: str) -> None:
        self.metric, self.best = metric, -math.inf

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        report = EpochReport.from_result(result)
        value = report.score(self.metric)
        self.best = max(self.best, value) if math.isfinite(value) else self.best
        networks = ", ".join(f"{n} {report.score(metric_name(n)):.3f}" for n in NETWORKS)
        log.info(
            f"  {trial.trial_id} epoch {report.epoch}/{report.max_epochs}: {self.metric} {value:.3f} ({networks}; "
            f"selection score {report.selection_score:.3f}; best epoch so far {self.best:.3f})"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        report = EpochReport.from_result(trial.last_result)
        how = "completed" if report.finished else "stopped early"
        log.info(f"  {trial.trial_id} {how} after {report.epoch} epoch(s)")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        log.warning(f"  {trial.trial_id} failed: {error_line(trial)}")


class PruneCheckpoints(tune.Callback):
    """When a trial has ended, keep only its selected checkpoint (what the export needs), on local disk
    or object storage alike."""

    def __init__(self, metric: str, select: str) -> None:
        self.metric, self.select = metric, select

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:

        if not trial.path:
            return
        folder = storage.of_filesystem(trial.storage.storage_filesystem, trial.storage.trial_fs_path)
        selected = selected_checkpoint(folder, self.metric, self.select)
        for checkpoint, _ in checkpoint_reports(folder):
            if selected is None or checkpoint != selected[0]:
                try:
                    (folder / posixpath.basename(str(checkpoint))).delete()
                except OSError as exc:
                    log.warning("warning: could not remove checkpoint %s: %s", checkpoint, exc)


class SyncStudy(tune.Callback):
    """A run folder on object storage: the Optuna study (a SQLite file on the driver) copied there as the
    search goes, and once more at the end."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.run.push_study()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.run.push_study(force=True)


def error_line(trial) -> str:
    """The last line of a trial's error, for logs and trials.csv."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def trial_name(trial) -> str:
    """Short, stable trial names (folders, dashboard) instead of Tune's config-laden ones."""
    return f"{TRIAL_PREFIX}{trial.trial_id}"


def scored_on(space: Space) -> str:
    """What the metric is where scoring.validation is not devel (fixed in a space), as the start line says it."""
    scoring = build(
        ScoringConfig,
        {k: v for k, v in space.fixed.get("scoring", {}).items() if k in ("validation", "folds")},
        "scoring",
    )
    if scoring.validation == "devel":
        return ""
    return f" ({validation_label(scoring.validation, scoring.folds)}: {VALIDATION_TEXT[scoring.validation]})"


class BudgetStopper(tune.Stopper):
    """Ends every trial when the trials' share of the time budget is spent (search.budget: `Budget.trials_end`,
    on the budget's own clock), as Tune's time_budget_s would, and says so once."""

    def __init__(self, budget: Budget) -> None:
        self.budget, self.said = budget, False

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if not self.budget.trials_over():
            return False
        if not self.said:
            self.said = True
            log.info(
                f"budget: the trials' share is spent at {duration(self.budget.elapsed())}; the running trials "
                f"stop now (each keeps the epochs it reported)"
            )
        return True


def make_tuner(space: Space, trainable, run: RunFolder, budget: Budget, tracking_uri: str | None = None):
    """A Tuner for the space: searcher, scheduler, the trials' share of the budget (search.budget),
    checkpoints, retries, all under the run folder's tune/ (run: a search.runfolder.RunFolder, local or on
    object storage); MLflow tracking at `tracking_uri` where given."""
    exp = space.experiment
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(space, run.local),
        scheduler=make_scheduler(space),
        num_samples=exp.num_samples,
        metric=exp.metric,
        mode="max",
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config(space, run, budget, tracking_uri))


def fit(
    space: Space, trainable, run: RunFolder, resume: bool, budget: Budget, tracking_uri: str | None = None
) -> tune.ResultGrid:
    """The tune stage: the trials run by a new Tuner, or by the run folder's restored one (--resume), until the
    trials' share of `budget` is spent (for_trials set it; a resumed search gets the budget of this run)."""
    exp = space.experiment
    if resume:
        if not run.can_restore():
            raise UserError(f"{run}/tune: the experiment state cannot be restored; start a new --name")
        log.info(f"search: resuming {exp.name}")
        path, filesystem = run.storage()
        tuner = tune.Tuner.restore(
            f"{path}/tune", trainable=trainable, resume_errored=False, storage_filesystem=filesystem
        )
        compat.restored_run_config(tuner).stop = BudgetStopper(budget)  # the budget of this run, not the first's
    else:
        tuner = make_tuner(space, trainable, run, budget, tracking_uri)
    log.info(
        f"search: {exp.num_samples} trials, {exp.max_concurrent} at a time, "
        f"{space.resources.cpu:g} CPU / {space.resources.gpu:g} GPU each; metric {exp.metric}{scored_on(space)}; "
        f"run folder {run}"
    )
    return tuner.fit()


@dataclasses.dataclass
class Settled:
    """The study after the search: its trials per state, and how many a driver restart lost."""

    counts: dict[str, int]
    lost: int
    budget_ended: bool = False  # the trials' share of the time budget ended the trials


def settle(run: RunFolder, study_name: str, budget: Budget) -> Settled:
    """The settle stage: the study's RUNNING trials settled (settle_study) and its counts shown, the study and
    the trials' results brought together in the run folder (object storage: up and down)."""
    ended = budget.trials_over()
    counts, lost = settle_study(run.local, study_name, ended)
    run.push_study(force=True)
    log.info(counts_line(counts, lost, ended))
    run.pull()  # a run folder on object storage: the trials' results (not their models) into the mirror
    return Settled(counts, lost, ended)


def run_config(space: Space, run: RunFolder, budget: Budget, tracking_uri: str | None = None):
    """Where Tune keeps the experiment, what it checkpoints, how it retries, when the budget ends the trials."""
    exp = space.experiment
    storage_path, filesystem = run.storage()
    callbacks = [
        ProgressLog(exp.metric),
        PruneCheckpoints(exp.metric, exp.select),
        *tracking.tune_callbacks(exp.name, tracking_uri),
    ]  # MLflow, where `run --mlflow` asks for it
    if run.remote:
        callbacks.append(SyncStudy(run))
    return tune.RunConfig(
        name="tune",
        storage_path=storage_path,
        storage_filesystem=filesystem,
        verbose=0,
        stop=BudgetStopper(budget),
        # the trials' own files (TensorBoard logs, the record of a final error) go to the run folder too
        sync_config=tune.SyncConfig(sync_artifacts=True),
        # Tune keeps every checkpoint while a trial runs (its own pruning can delete the checkpoint an
        # older experiment snapshot points to, and then --resume fails); PruneCheckpoints thins a
        # trial's checkpoints to its best one once the trial has ended.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        failure_config=tune.FailureConfig(max_failures=exp.max_failures),
        callbacks=callbacks,
    )
