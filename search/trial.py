"""One Tune trial: the engine (auttention/engine.py) on a configuration's two autoencoders, reporting
the fusion's score (its devel rho, or the score scoring.validation names).

The engine trains both autoencoders epoch by epoch and scores attention, seq2seq and their fusion on
devel every experiment.report_every epochs; its `scored` hook here checkpoints both models (weights,
optimizer, epoch) and reports, with the trial's selection score (experiment.select) so far. A
restarted trial continues from its checkpoint. Only what Tune needs is here: resources, reports,
checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auttention import import_tensorflow_quietly
from auttention import log as logs
from auttention.formatting import format_rho
from auttention.record import CHECKPOINT_REPORT, FUSION, NETWORKS, TRIAL_PREFIX, EpochReport, metric_name

from .compat import wrap_function
from .keys import column_name
from .resources import configure_tensorflow, trial_resources

if TYPE_CHECKING:
    from .space import Space


FINAL_ERROR = "final-error.txt"  # a trial that cannot succeed by retrying: its reason, for the retries


class TrialOutOfMemory(RuntimeError):
    """The trial's models or batches do not fit in the memory it may use."""


def memory_needed(trainer) -> int:
    """Bytes one autoencoder's training holds: weights, gradients and Adam's two moments (4 copies of
    the parameters), and one batch's activations kept for backpropagation through time (per frame,
    layer and direction: the state and the gates of encoder and decoder, forward and backward)."""
    cfg = trainer.model_cfg
    activations = 2 * 2 * 4 * trainer.train_cfg.batch_size * trainer.n_frames * cfg.units * cfg.layers * 2
    return 4 * (4 * trainer.autoencoder.count_params() + activations)


def out_of_memory(exc: BaseException, space: Space) -> TrialOutOfMemory:
    """A one-line reason for a trial that ran out of memory, with what to change."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first[first.find("OOM") :] if "OOM" in first else first
    if space.resources.memory_gb:
        advice = (
            f"it needs more than resources.memory_gb={space.resources.memory_gb:g}; lower units or batch_size, "
            f"or raise it"
        )
    else:
        advice = "lower units or batch_size, or give trials more memory (resources.gpu, resources.memory_gb)"
    return TrialOutOfMemory(f"out of memory ({first[:160]}); {advice}")


def describe(trial_id: str, config: dict[str, Any], space: Space) -> str:
    """`trial_<id>` and the trial's searched values, short enough for a dashboard column."""
    values = []
    for p in space.params:
        value = (config.get(p.section) or {}).get(p.key)
        if value is None:
            continue
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        values.append(f"{column_name(p.name)}={text}")
    text = f"{TRIAL_PREFIX}{trial_id} " + " ".join(values)
    return text if len(text) <= 240 else text[:237] + "..."


def make_trainable(space: Space, spectrograms: dict, functionals=None):
    """The Tune trainable: `run_trial` bound to the space, the spectrograms' sources (search.sources) and the
    functionals (a DataFrame where a configuration fuses them, else None), reserving the space's resources,
    as an actor class whose repr names the trial and its searched values (the Ray dashboard's Actors page
    shows it in the "Repr" column and can filter by it)."""
    from ray import tune
    from ray.tune import PlacementGroupFactory

    base: Any = wrap_function(
        tune.with_parameters(run_trial, space=space, spectrograms=spectrograms, functionals=functionals)
    )

    class AuttentionTrial(base):
        @classmethod
        def default_resource_request(cls, config: dict[str, Any]):
            return PlacementGroupFactory([trial_resources(space)])

        def __repr__(self) -> str:
            return describe(self.trial_id, self.config, space)

    AuttentionTrial.__qualname__ = AuttentionTrial.__name__  # the dashboard's "Class" column
    return AuttentionTrial


def run_trial(
    config: dict[str, Any], space: Space | None = None, spectrograms: dict | None = None, functionals=None
) -> None:
    """The Tune function trainable (bound with tune.with_parameters(space=..., spectrograms=...,
    functionals=...)): the engine's two autoencoders trained epoch by epoch and scored, each scored epoch
    checkpointed and reported."""
    import ray
    from ray import tune

    logs.setup()  # this worker's lines go to the trial actor's log, by the same policy as the driver's
    import_tensorflow_quietly()
    import tensorflow as tf

    from auttention.engine import Engine, Hooks, selection_score
    from auttention.training import TrainingDiverged

    assert space is not None and spectrograms is not None, "bound by tune.with_parameters (make_trainable)"
    cfg = space.trial_config(config)
    configure_tensorflow(space.resources.cpu, space.resources.gpu)
    spec = spectrograms[cfg.spectrogram.hash()].get()  # search.sources: this node's one copy
    exp, max_epochs = space.experiment, space.scheduler.max_epochs
    trial_dir = Path(tune.get_context().get_trial_dir())
    recorded = trial_dir / FINAL_ERROR
    if recorded.is_file():
        # a retry of a diverged or out-of-memory trial would end the same way: fail at once, same reason
        kind, _, reason = recorded.read_text().strip().partition(": ")
        raise (TrainingDiverged if kind == "TrainingDiverged" else TrialOutOfMemory)(reason)
    node = ray.get_runtime_context().get_node_id()
    history: list[float] = []
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as folder:
                engine = Engine.load(folder, cfg, spec, log_dir=trial_dir / "tensorboard", functionals=functionals)
                last = EpochReport.from_result(json.loads((Path(folder) / CHECKPOINT_REPORT).read_text()))
                history = list(last.history)
        else:
            engine = Engine.new(cfg, spec, log_dir=trial_dir / "tensorboard", functionals=functionals)
        needed = sum(memory_needed(t) for t in engine.trainers.values())
        if space.resources.memory_gb and needed > space.resources.memory_gb * 2**30:
            raise MemoryError(f"OOM: training both autoencoders needs about {needed / 2**30:.2f} GiB")

        def scored(report: EpochReport) -> None:
            history.append(report.score(exp.metric))
            _report(
                dataclasses.replace(
                    report,
                    max_epochs=max_epochs,
                    node_id=node,
                    history=tuple(history),
                    selection_score=selection_score(history, exp.select, exp.select_last),
                ),
                engine,
            )

        engine.run(max_epochs, Hooks(scored=scored), score_every=exp.report_every)
    except TrainingDiverged as exc:
        recorded.write_text(f"TrainingDiverged: {exc}\n")
        raise
    except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
        error = out_of_memory(exc, space)
        recorded.write_text(f"TrialOutOfMemory: {error}\n")
        raise error from None


def _report(report: EpochReport, engine) -> None:
    """Checkpoint both models with the epoch's report and report it to Tune."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="auttention-ckpt-") as folder:
        engine.save(folder)
        (Path(folder) / CHECKPOINT_REPORT).write_text(json.dumps(report.to_json()))
        tune.report(report.to_result(), checkpoint=tune.Checkpoint.from_directory(folder))
    # the actor's log (dashboard: Actors -> this trial -> Logs) shows its progress as it goes
    scores = " ".join(f"{metric_name(b)} {format_rho(report.score(metric_name(b)))}" for b in (FUSION, *NETWORKS))
    logging.getLogger(__name__).info(
        f"{tune.get_context().get_trial_name()} epoch {report.epoch}/{report.max_epochs}: "
        f"{scores} ({report.seconds:.1f} s)"
    )
