"""Ray Tune + Optuna: the searcher (TPE, honest about pruned and failed trials), ASHA, the Tuner."""

from __future__ import annotations

import logging
import math
import posixpath
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from .keys import flat_params

logger = logging.getLogger(__name__)
SELECTION = "selection_score"  # what a trial reports as its rank (search/trial.py selection_score)


SETTLED = "settled"  # the user attribute that says why a trial's state was recorded for it
LOST = "asked by the searcher after Tune's last snapshot before the driver stopped; never resumed"


def settle_trials(study, trials, why: str) -> None:
    """Record trials left RUNNING as what happened to them: PRUNED where they reported epochs (their
    intermediate values stay), FAIL where they never reported; `why` goes into their user attributes."""
    import optuna

    for trial in trials:
        state = optuna.trial.TrialState.PRUNED if trial.intermediate_values else optuna.trial.TrialState.FAIL
        try:
            study._storage.set_trial_user_attr(trial._trial_id, SETTLED, why)
            study.tell(trial.number, state=state)
        except Exception as exc:  # finished meanwhile
            logger.warning("optuna: could not settle trial %s: %s", trial.number, exc)


def settle_study(run_dir: Path, study_name: str) -> tuple[dict[str, int], int]:
    """After a search: every Optuna trial still RUNNING (the trials a time budget ended, or never started)
    is settled. Returns the study's counts per state and how many trials a driver restart lost."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=optuna_storage_url(run_dir))
    settle_trials(study, study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)),
                  "still running when the search ended")
    counts: dict[str, int] = {}
    lost = 0
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        lost += trial.user_attrs.get(SETTLED) == LOST
    return counts, lost


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials ASHA stopped as PRUNED and errored trials as FAIL.

    Ray's OptunaSearch tells Optuna every trial that ends with a result as COMPLETE with its
    last (possibly one-epoch) score, so TPE would learn from truncated scores as if final. A completed
    trial's value here is its selection score (experiment.select over its epochs), what the search
    ranks trials by; each epoch's metric is an intermediate value.
    Checked against Ray 2.60's OptunaSearch (its private _ot_trials, _ot_study, _completed_trials).
    """

    def restore(self, checkpoint_path: str) -> None:
        """After a driver restart: a trial the searcher asked for after Tune's last snapshot is in the study
        but unknown to the restored Tune, which never resumes it; settle it now (so TPE's constant liar
        does not count it as running), marked as lost."""
        import optuna

        super().restore(checkpoint_path)
        known = {ot_trial._trial_id for ot_trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        settle_trials(self._ot_study, [t for t in running if t._trial_id not in known], LOST)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Record the metric as an intermediate value at its epoch (what TPE ranks pruned trials by)."""
        ot_trial = self._ot_trials.get(trial_id)
        value = result.get(self.metric)
        if ot_trial is None or trial_id in self._completed_trials or value is None or not math.isfinite(value):
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        frozen = ot_trial.storage.get_trial(ot_trial._trial_id)
        # after a driver restart, Tune may resume a trial from a snapshot older than the study, which
        # already recorded how it ended: the study keeps that, and the search goes on
        if frozen.state.is_finished() or step in frozen.intermediate_values:
            return
        ot_trial.report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if result:
            self.on_trial_result(trial_id, result)  # Tune hands the last result only to this method
        value = (result or {}).get(SELECTION, (result or {}).get(self.metric))
        finished = bool(result) and result.get("epoch", 0) >= result.get("max_epochs", math.inf)
        if error or (value is not None and not math.isfinite(value)):
            state, value = optuna.trial.TrialState.FAIL, None
        elif value is None or not finished:
            state, value = optuna.trial.TrialState.PRUNED, None
        else:
            state = optuna.trial.TrialState.COMPLETE
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. told already before a driver restart
            logger.warning("optuna: could not record trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def make_sampler(space):
    """The seeded Optuna sampler the searcher section asks for."""
    import optuna

    s = space.searcher
    seed = space.experiment.seed
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, multivariate=s.multivariate,
                                      group=s.group and s.multivariate,
                                      constant_liar=space.experiment.max_concurrent > 1)


def optuna_storage_url(run_dir: Path) -> str:
    """The SQLite study the search persists (optuna-dashboard can open it while the search runs)."""
    return f"sqlite:///{(run_dir / 'optuna.db').resolve()}"


def make_searcher(space, run_dir: Path):
    """OptunaSearch (define-by-run, persisted study, the space's first points) behind a ConcurrencyLimiter."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group option
    storage = optuna.storages.RDBStorage(optuna_storage_url(run_dir))
    points = [flat_params(point) for point in space.searcher.points_to_evaluate]
    searcher = HonestOptunaSearch(space=space.define_by_run, metric=space.experiment.metric, mode="max",
                                  sampler=make_sampler(space), storage=storage, study_name=space.experiment.name,
                                  points_to_evaluate=points or None)
    return ConcurrencyLimiter(searcher, max_concurrent=space.experiment.max_concurrent)


def make_scheduler(space):
    """ASHA on the per-epoch metric (or none)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = space.scheduler
    if sch.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=sch.max_epochs, grace_period=sch.grace_period,
                         reduction_factor=sch.reduction_factor)


class ProgressLog(tune.Callback):
    """One line per scored epoch and per finished trial, instead of Tune's wide tables."""

    def __init__(self, metric: str, echo=print) -> None:
        self.metric, self.echo, self.best = metric, echo, -math.inf

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        value = result.get(self.metric, float("nan"))
        self.best = max(self.best, value) if math.isfinite(value) else self.best
        self.echo(f"  {trial.trial_id} epoch {result.get('epoch')}/{result.get('max_epochs')}: "
                  f"{self.metric} {value:.3f} (attention {result.get('attention_rho', float('nan')):.3f}, "
                  f"seq2seq {result.get('seq2seq_rho', float('nan')):.3f}; selection score "
                  f"{result.get(SELECTION, float('nan')):.3f}; best epoch so far {self.best:.3f})")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        how = "completed" if last.get("epoch", 0) >= last.get("max_epochs", math.inf) else "stopped early"
        self.echo(f"  {trial.trial_id} {how} after {last.get('epoch', 0)} epoch(s)")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.echo(f"  {trial.trial_id} failed: {error_line(trial)}")


def _folder(trial_dir):
    from auttention import storage

    return trial_dir if isinstance(trial_dir, storage.Location) else storage.location(str(trial_dir))


def checkpoint_metrics(trial_dir) -> list[tuple[Path | str, dict]]:
    """(checkpoint folder, its metrics) of every checkpoint of a trial, in epoch order. trial_dir: a local
    path or a storage.Location (a trial on object storage: the folders are then URIs)."""
    import json

    import pyarrow.fs as pafs

    folder = _folder(trial_dir)
    selector = pafs.FileSelector(folder.path, allow_not_found=True)
    names = sorted(posixpath.basename(i.path) for i in folder.fs.get_file_info(selector)
                   if i.type == pafs.FileType.Directory or (folder.remote and i.type != pafs.FileType.File))
    out = []
    for name in names:
        if not name.startswith("checkpoint_"):
            continue
        try:
            metrics = json.loads((folder / name / "metrics.json").read_text())
        except (OSError, ValueError):
            continue  # a checkpoint being written or damaged: never the best
        out.append(((folder / name).uri if folder.remote else Path(folder.path) / name, metrics))
    return out


def selected_checkpoint(trial_dir, metric: str, select: str) -> tuple[Path | str, dict, float] | None:
    """(checkpoint folder, its metrics, the trial's selection score) of the checkpoint a trial is chosen and
    exported by: under select: best, its best epoch (the earliest on ties); otherwise its last epoch, scored
    by the selection statistic it reported there. None when no checkpoint has a finite score."""
    best = None
    for folder, metrics in checkpoint_metrics(trial_dir):
        value = metrics.get(metric) if select == "best" else metrics.get(SELECTION, metrics.get(metric))
        if value is None or not math.isfinite(value):
            continue
        if select == "best" and best is not None and value <= best[2]:
            continue
        if select != "best" and best is not None and metrics.get("epoch", 0) < best[1].get("epoch", 0):
            continue
        best = (folder, metrics, float(value))
    return best


class PruneCheckpoints(tune.Callback):
    """When a trial has ended, keep only its selected checkpoint (what the export needs), on local disk
    or object storage alike."""

    def __init__(self, metric: str, select: str) -> None:
        self.metric, self.select = metric, select

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        from auttention import storage

        if not trial.path:
            return
        folder = storage.of_filesystem(trial.storage.storage_filesystem, trial.storage.trial_fs_path)
        best = selected_checkpoint(folder, self.metric, self.select)
        for checkpoint, _ in checkpoint_metrics(folder):
            if best is None or checkpoint != best[0]:
                try:
                    (folder / posixpath.basename(str(checkpoint))).delete()
                except OSError as exc:
                    logger.warning("could not remove checkpoint %s: %s", checkpoint, exc)


class SyncStudy(tune.Callback):
    """A run folder on object storage: the Optuna study (a SQLite file on the driver) copied there as the
    search goes, and once more at the end."""

    def __init__(self, run) -> None:
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
    return f"trial_{trial.trial_id}"


def make_tuner(space, trainable, run, echo=print):
    """A Tuner for the space: searcher, scheduler, budget, checkpoints, retries, all under the run folder's
    tune/ (run: a search.runfolder.RunFolder, local or on object storage)."""
    exp = space.experiment
    tune_config = tune.TuneConfig(search_alg=make_searcher(space, run.local), scheduler=make_scheduler(space),
                                  num_samples=exp.num_samples, metric=exp.metric, mode="max",
                                  time_budget_s=exp.time_budget_s, trial_name_creator=trial_name,
                                  trial_dirname_creator=trial_name)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config(space, run, echo))


def run_config(space, run, echo=print):
    """Where Tune keeps the experiment, what it checkpoints, how it retries."""
    exp = space.experiment
    storage_path, filesystem = run.storage()
    callbacks = [ProgressLog(exp.metric, echo), PruneCheckpoints(exp.metric, exp.select)]
    if run.remote:
        callbacks.append(SyncStudy(run))
    return tune.RunConfig(
        name="tune", storage_path=storage_path, storage_filesystem=filesystem, verbose=0,
        # the trials' own files (TensorBoard logs, the record of a final error) go to the run folder too
        sync_config=tune.SyncConfig(sync_artifacts=True),
        # Tune keeps every checkpoint while a trial runs (its own pruning can delete the checkpoint an
        # older experiment snapshot points to, and then --resume fails); PruneCheckpoints thins a
        # trial's checkpoints to its best one once the trial has ended.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        failure_config=tune.FailureConfig(max_failures=exp.max_failures),
        callbacks=callbacks)
