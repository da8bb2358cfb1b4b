"""One Tune trial: the whole published pipeline, epoch by epoch, reporting the fused devel rho.

Each reported epoch: train both autoencoders one more epoch, extract train and devel features,
score attention, seq2seq and their fusion with the SVR (C chosen on devel), checkpoint both
models (weights, optimizer, epoch) and report. A restarted trial continues from its checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from auttention.config import ScoringConfig
from auttention.scoring import select_c

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


def score_epoch(att_train: np.ndarray, att_devel: np.ndarray, s2s_train: np.ndarray, s2s_devel: np.ndarray,
                y_train: np.ndarray, y_devel: np.ndarray, cfg: ScoringConfig) -> dict[str, float]:
    """Devel rho (and chosen C) of attention, seq2seq and their fusion (rows already aligned)."""
    out = {}
    sets = {"attention": (att_train, att_devel), "seq2seq": (s2s_train, s2s_devel),
            "fused": (np.hstack([att_train, s2s_train]), np.hstack([att_devel, s2s_devel]))}
    for name, (tr, dv) in sets.items():
        chosen = select_c(tr, y_train, dv, y_devel, cfg)
        out[f"{name}_rho"] = chosen.rho
        out[f"{name}_c"] = chosen.c
    return out


def describe(trial_id: str, config: dict[str, Any], space) -> str:
    """`trial_<id>` and the trial's searched values, short enough for a dashboard column."""
    values = []
    for p in space.params:
        value = (config.get(p.section) or {}).get(p.key)
        if value is None:
            continue
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        values.append(f"{p.name.replace('/', '.')}={text}")
    text = f"trial_{trial_id} " + " ".join(values)
    return text if len(text) <= 240 else text[:237] + "..."


def make_trainable(space, spectrograms: dict):
    """The Tune trainable: `run_trial` bound to the space and the spectrograms' object refs, reserving
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
    """The Tune function trainable (bound with tune.with_parameters(space=..., spectrograms=...))."""
    import ray
    from ray import tune

    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    from auttention.pipeline import training_set
    from auttention.training import Trainer, TrainingDiverged

    cfg = space.trial_config(config)
    configure_tensorflow(space.resources.cpu, space.resources.gpu)
    spec = ray.get(spectrograms[cfg.spectrogram.hash()])
    x_fit = training_set(spec, cfg.training).x
    train, devel = spec.select("train"), spec.select("devel")
    _, n_frames, n_mels = spec.x.shape
    max_epochs = space.scheduler.max_epochs
    every = space.experiment.report_every
    trial_dir = Path(tune.get_context().get_trial_dir())
    recorded = trial_dir / FINAL_ERROR
    if recorded.is_file():
        # a retry of a diverged or out-of-memory trial would end the same way: fail at once, same reason
        kind, _, reason = recorded.read_text().strip().partition(": ")
        raise (TrainingDiverged if kind == "TrainingDiverged" else TrialOutOfMemory)(reason)
    logs = trial_dir / "tensorboard"
    node = ray.get_runtime_context().get_node_id()
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as folder:
                att = Trainer.load(Path(folder) / "attention", log_dir=logs / "attention")
                s2s = Trainer.load(Path(folder) / "seq2seq", log_dir=logs / "seq2seq")
        else:
            att = Trainer(cfg.attention, cfg.training, n_frames, n_mels, log_dir=logs / "attention")
            s2s = Trainer(cfg.seq2seq, cfg.training, n_frames, n_mels, log_dir=logs / "seq2seq")
        needed = memory_needed(att) + memory_needed(s2s)
        if space.resources.memory_gb and needed > space.resources.memory_gb * 2**30:
            raise MemoryError(f"OOM: training both autoencoders needs about {needed / 2**30:.2f} GiB")
        while s2s.epoch < max_epochs:
            started = time.perf_counter()
            att_loss = att.fit_epoch(x_fit)
            s2s_loss = s2s.fit_epoch(x_fit)
            epoch = s2s.epoch
            if epoch % every and epoch < max_epochs:
                continue
            metrics = score_epoch(att.features(train.x), att.features(devel.x), s2s.features(train.x),
                                  s2s.features(devel.x), train.label, devel.label, cfg.scoring)
            _report(metrics, att, s2s, epoch, max_epochs, att_loss, s2s_loss, started, node)
    except TrainingDiverged as exc:
        recorded.write_text(f"TrainingDiverged: {exc}\n")
        raise
    except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
        error = out_of_memory(exc, space)
        recorded.write_text(f"TrialOutOfMemory: {error}\n")
        raise error from None


def _report(metrics: dict, att, s2s, epoch: int, max_epochs: int, att_loss: float, s2s_loss: float,
            started: float, node: str) -> None:
    """Checkpoint both models with the epoch's metrics and report them to Tune."""
    from ray import tune

    metrics.update(epoch=epoch, max_epochs=max_epochs, attention_loss=att_loss, seq2seq_loss=s2s_loss,
                   epoch_seconds=time.perf_counter() - started, node_id=node)
    with tempfile.TemporaryDirectory(prefix="auttention-ckpt-") as folder:
        att.save(Path(folder) / "attention")
        s2s.save(Path(folder) / "seq2seq")
        (Path(folder) / "metrics.json").write_text(json.dumps(metrics))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    # the actor's log (dashboard: Actors -> this trial -> Logs) shows its progress as it goes
    print(f"{tune.get_context().get_trial_name()} epoch {epoch}/{max_epochs}: fused_rho {metrics['fused_rho']:.3f} "
          f"attention_rho {metrics['attention_rho']:.3f} seq2seq_rho {metrics['seq2seq_rho']:.3f} "
          f"({metrics['epoch_seconds']:.1f} s)", flush=True)
