"""One Tune trial: the pipeline's AutoencoderPair (auttention/pipeline.py), epoch by epoch, reporting
the fusion's devel rho.

Each reported epoch: train both autoencoders one more epoch, score attention, seq2seq and their
fusion on devel (AutoencoderPair.score_devel), checkpoint both models (weights, optimizer, epoch)
and report, with the trial's selection score (experiment.select) so far. A restarted trial
continues from its checkpoint. Only what Tune needs is here: resources, reports, checkpoints.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .keys import column_name


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


def out_of_memory(exc: BaseException, space) -> TrialOutOfMemory:
    """A one-line reason for a trial that ran out of memory, with what to change."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first[first.find("OOM"):] if "OOM" in first else first
    if space.resources.memory_gb:
        advice = f"it needs more than resources.memory_gb={space.resources.memory_gb:g}; lower units or batch_size, or raise it"
    else:
        advice = "lower units or batch_size, or give trials more memory (resources.gpu, resources.memory_gb)"
    return TrialOutOfMemory(f"out of memory ({first[:160]}); {advice}")


def configure_tensorflow(cpus: float, gpu_fraction: float) -> None:
    """Confine TensorFlow to the trial's share: its CPUs as threads, its fraction of GPU memory."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # TensorFlow already initialised in this process (e.g. a reused worker): keep its settings
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        limit = _gpu_memory_limit_mb(gpu_fraction)
        try:
            if limit:
                # a hard cap: fractional trials sharing a GPU cannot starve each other
                tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass


def _gpu_memory_limit_mb(fraction: float) -> int | None:
    """The trial's share of its GPU's memory in MiB (None for a whole GPU or when it cannot be read)."""
    if not 0 < fraction < 1:
        return None
    try:
        import ray

        ids = ray.get_gpu_ids()
        index = str(ids[0]) if ids else "0"
        total = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", index],
                               capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        # leave a margin for the CUDA context, which is not counted in the logical device's limit
        return int(float(total.splitlines()[0]) * fraction * 0.9)
    except Exception:
        return None


def describe(trial_id: str, config: dict[str, Any], space) -> str:
    """`trial_<id>` and the trial's searched values, short enough for a dashboard column."""
    values = []
    for p in space.params:
        value = (config.get(p.section) or {}).get(p.key)
        if value is None:
            continue
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        values.append(f"{column_name(p.name)}={text}")
    text = f"trial_{trial_id} " + " ".join(values)
    return text if len(text) <= 240 else text[:237] + "..."


def make_trainable(space, spectrograms: dict):
    """The Tune trainable: `run_trial` bound to the space and the spectrograms' sources (search.sources), reserving
    the space's resources, as an actor class whose repr names the trial and its searched values (the
    Ray dashboard's Actors page shows it in the "Repr" column and can filter by it)."""
    from ray import tune
    from ray.tune import PlacementGroupFactory
    from ray.tune.trainable.function_trainable import wrap_function

    from .resources import trial_resources

    base = wrap_function(tune.with_parameters(run_trial, space=space, spectrograms=spectrograms))

    class AuttentionTrial(base):
        @classmethod
        def default_resource_request(cls, config):
            return PlacementGroupFactory([trial_resources(space)])

        def __repr__(self) -> str:
            return describe(self.trial_id, self.config, space)

    AuttentionTrial.__qualname__ = AuttentionTrial.__name__  # the dashboard's "Class" column
    return AuttentionTrial


def run_trial(config: dict[str, Any], space=None, spectrograms: dict | None = None) -> None:
    """The Tune function trainable (bound with tune.with_parameters(space=..., spectrograms=...)): the
    pipeline's AutoencoderPair trained epoch by epoch, scored, checkpointed and reported."""
    import ray
    from ray import tune

    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    from auttention.pipeline import AutoencoderPair
    from auttention.training import TrainingDiverged

    cfg = space.trial_config(config)
    configure_tensorflow(space.resources.cpu, space.resources.gpu)
    spec = spectrograms[cfg.spectrogram.hash()].get()  # search.sources: this node's one copy
    max_epochs = space.scheduler.max_epochs
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
                pair = AutoencoderPair.load(folder, cfg, spec, log_dir=trial_dir / "tensorboard")
                history = json.loads((Path(folder) / "metrics.json").read_text()).get("history", [])
        else:
            pair = AutoencoderPair(cfg, spec, log_dir=trial_dir / "tensorboard")
        needed = sum(memory_needed(t) for t in pair.trainers.values())
        if space.resources.memory_gb and needed > space.resources.memory_gb * 2**30:
            raise MemoryError(f"OOM: training both autoencoders needs about {needed / 2**30:.2f} GiB")
        for epoch, metrics in epochs(pair, max_epochs, space.experiment.report_every):
            history.append(metrics[space.experiment.metric])
            metrics.update(epoch=epoch, max_epochs=max_epochs, node_id=node, history=list(history),
                           selection_score=selection_score(history, space.experiment))
            _report(metrics, pair)
    except TrainingDiverged as exc:
        recorded.write_text(f"TrainingDiverged: {exc}\n")
        raise
    except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
        error = out_of_memory(exc, space)
        recorded.write_text(f"TrialOutOfMemory: {error}\n")
        raise error from None


def epochs(pair, max_epochs: int, every: int):
    """Train `pair` up to max_epochs; after every `every`-th epoch (and the last) yield (epoch, metrics):
    each branch's devel rho and C, the training losses and the epoch's seconds."""
    while pair.epoch < max_epochs:
        started = time.perf_counter()
        losses = pair.fit_epoch()
        if pair.epoch % every and pair.epoch < max_epochs:
            continue
        metrics = pair.score_devel()
        metrics.update({f"{name}_loss": loss for name, loss in losses.items()},
                       epoch_seconds=time.perf_counter() - started)
        yield pair.epoch, metrics


def selection_score(history: list[float], experiment) -> float:
    """The statistic a trial is chosen by (experiment.select) over its reported scores so far: the best,
    the last, or the mean of the last experiment.select_last (robust to one lucky epoch)."""
    values = [v for v in history if v is not None and math.isfinite(v)]
    if not values:
        return float("nan")
    if experiment.select == "best":
        return max(values)
    if experiment.select == "last":
        return values[-1]
    return float(np.mean(values[-experiment.select_last:]))


def _report(metrics: dict, pair) -> None:
    """Checkpoint both models with the epoch's metrics and report them to Tune."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="auttention-ckpt-") as folder:
        pair.save(folder)
        (Path(folder) / "metrics.json").write_text(json.dumps(metrics))
        reported = {k: v for k, v in metrics.items() if k != "history"}
        tune.report(reported, checkpoint=tune.Checkpoint.from_directory(folder))
    # the actor's log (dashboard: Actors -> this trial -> Logs) shows its progress as it goes
    print(f"{tune.get_context().get_trial_name()} epoch {metrics['epoch']}/{metrics['max_epochs']}: "
          f"fusion_rho {metrics['fusion_rho']:.3f} attention_rho {metrics['attention_rho']:.3f} "
          f"seq2seq_rho {metrics['seq2seq_rho']:.3f} ({metrics['epoch_seconds']:.1f} s)", flush=True)
