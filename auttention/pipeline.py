"""The published pipeline end to end: corpus -> spectrograms -> two autoencoders -> features ->
fusion -> SVR scoring -> the paper's table and test predictions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from . import spectrogram as spectro
from .config import ModelConfig, PipelineConfig, ScoringConfig, TrainingConfig, to_dict
from .features import feature_frame, fuse, write_features
from .io import write_json, write_yaml
from .scoring import Evaluation, evaluate, write_predictions

NETWORKS = ("attention", "seq2seq")
PARTITIONS = ("train", "devel", "test")
FIT_ON = {"train": ("train",), "train+devel": ("train", "devel"), "all": ("train", "devel", "test")}


def training_set(spec: spectro.Spectrograms, cfg: TrainingConfig) -> spectro.Spectrograms:
    """The clips the autoencoders learn from (unsupervised), per training.fit_on."""
    return spec.select(FIT_ON[cfg.fit_on])


def train_network(spec: spectro.Spectrograms, model_cfg: ModelConfig, train_cfg: TrainingConfig, out: str | Path,
                  on_epoch_end: Callable[[int, float], None] | None = None):
    """Train one autoencoder on the training set of `spec`, checkpointing into `out` (resumes if present)."""
    from .training import train

    return train(model_cfg, train_cfg, training_set(spec, train_cfg).x, out, on_epoch_end=on_epoch_end)


def network_features(trainer, spec: spectro.Spectrograms, name: str) -> pd.DataFrame:
    """The feature set of every clip of `spec` from a trained autoencoder.

    Computed partition by partition, exactly as the search scores each epoch, so that the same
    checkpoint gives bit-identical features (batch composition changes float rounding, and the
    rounded SVR predictions can flip on that).
    """
    parts = [spec.select(p) for p in PARTITIONS if (spec.partition == p).any()]
    return pd.concat([feature_frame(p.file_name, p.partition, p.label, trainer.features(p.x), name) for p in parts],
                     ignore_index=True)


def evaluate_trainers(attention, seq2seq, spec: spectro.Spectrograms, scoring: ScoringConfig
                      ) -> tuple[dict[str, pd.DataFrame], dict[str, Evaluation]]:
    """Features of every clip from both trained autoencoders, their fusion, and each one's evaluation."""
    frames = {"attention": network_features(attention, spec, "attention"),
              "seq2seq": network_features(seq2seq, spec, "seq2seq")}
    frames["fusion"] = fuse([frames["attention"], frames["seq2seq"]], ["attention", "seq2seq"])
    return frames, {name: evaluate(frame, scoring) for name, frame in frames.items()}


def table(results: dict[str, Evaluation]) -> str:
    """The paper's table: devel and test Spearman per branch (test only where labels are known)."""
    lines = [f"{'':<10} {'devel':>7} {'test':>7}   C"]
    for name, ev in results.items():
        test = f"{ev.test_rho:7.3f}" if ev.test_rho is not None else f"{'n/a':>7}"
        lines.append(f"{name:<10} {ev.devel_rho:7.3f} {test}   {ev.c:g}")
    if any(ev.test_rho is None for ev in results.values()):
        lines.append("(test: labels unknown, e.g. '?' as ComParE ships them)")
    return "\n".join(lines)


def run(corpus: pd.DataFrame, cfg: PipelineConfig, out: str | os.PathLike, jobs: int | None = None,
        log: Callable[[str], None] = print, on_bad_audio: str = "fail",
        warn: Callable[[str], None] | None = None) -> dict[str, Evaluation]:
    """Run every step into `out`; return the evaluation of attention, seq2seq and fusion.

    on_bad_audio: 'fail' (stop before writing anything) or 'skip' (leave bad clips out, one `warn`
    line each); see spectrogram.extract.
    """
    from .corpus import apply_bad_audio_policy

    out, warn = Path(out), warn or log
    started = time.perf_counter()
    spec_dir = out / "spectrograms"
    spec = spectro.read(spec_dir) if spectro.is_complete(spec_dir) else None
    if spec is not None and spec.settings["settings"] == to_dict(cfg.spectrogram):
        log(f"spectrograms: reusing {spec_dir}")
        # clips skipped when they were extracted are bad still: the policy applies to them now as well
        apply_bad_audio_policy(corpus, spec.skipped, on_bad_audio, warn)
    else:
        log(f"spectrograms: extracting {len(corpus)} clips ...")
        created = not out.exists()
        try:
            spec = spectro.read(spectro.extract(corpus, cfg.spectrogram, spec_dir, jobs=jobs,
                                                on_bad_audio=on_bad_audio, warn=warn))
        except Exception:
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # nothing was written: leave no empty output folder behind
            raise
    skipped = f"; skipped {len(spec.skipped)} of {len(corpus)} clips with bad audio" if spec.skipped else ""
    log(f"spectrograms: {spec.x.shape[0]} clips x {spec.x.shape[1]} frames x {spec.x.shape[2]} mel bands "
        f"({time.perf_counter() - started:.1f} s{skipped})")
    write_yaml(out / "config.yaml", to_dict(cfg))

    trainers = {}
    for name in NETWORKS:
        t0 = time.perf_counter()
        trainers[name] = train_network(spec, getattr(cfg, name), cfg.training, out / name,
                                       on_epoch_end=lambda e, loss, n=name: log(f"{n}: epoch {e} loss {loss:.4f}"))
        log(f"{name}: trained ({time.perf_counter() - t0:.1f} s)")
    frames, results = evaluate_trainers(trainers["attention"], trainers["seq2seq"], spec, cfg.scoring)
    for name, frame in frames.items():
        write_features(frame, out / "features" / name)
    for name, ev in results.items():
        write_predictions(out / "predictions" / f"{name}.devel.csv", ev.devel, cfg.scoring)
        write_predictions(out / "predictions" / f"{name}.test.csv", ev.test, cfg.scoring)
    write_predictions(out / "predictions.test.csv", results["fusion"].test, cfg.scoring)
    write_json(out / "metrics.json", {**{name: ev.metrics() for name, ev in results.items()},
                                      "wall_seconds": round(time.perf_counter() - started, 1)})
    return results
