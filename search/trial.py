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

DIVERGED = "diverged.txt"


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

    base = wrap_function(tune.with_parameters(run_trial, space=space, spectrograms=spectrograms))

    class AuttentionTrial(base):
        @classmethod
        def default_resource_request(cls, config):
            return PlacementGroupFactory([{"CPU": space.resources.cpu, "GPU": space.resources.gpu}])

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
    if (trial_dir / DIVERGED).is_file():
        # a retry of a diverged trial would diverge again: fail at once with the recorded reason
        raise TrainingDiverged((trial_dir / DIVERGED).read_text().strip())
    logs = trial_dir / "tensorboard"
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            att = Trainer.load(Path(folder) / "attention", log_dir=logs / "attention")
            s2s = Trainer.load(Path(folder) / "seq2seq", log_dir=logs / "seq2seq")
    else:
        att = Trainer(cfg.attention, cfg.training, n_frames, n_mels, log_dir=logs / "attention")
        s2s = Trainer(cfg.seq2seq, cfg.training, n_frames, n_mels, log_dir=logs / "seq2seq")
    node = ray.get_runtime_context().get_node_id()
    while s2s.epoch < max_epochs:
        started = time.perf_counter()
        try:
            att_loss = att.fit_epoch(x_fit)
            s2s_loss = s2s.fit_epoch(x_fit)
            epoch = s2s.epoch
            if epoch % every and epoch < max_epochs:
                continue
            metrics = score_epoch(att.features(train.x), att.features(devel.x), s2s.features(train.x),
                                  s2s.features(devel.x), train.label, devel.label, cfg.scoring)
        except TrainingDiverged as exc:
            (trial_dir / DIVERGED).write_text(f"{exc}\n")
            raise
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
