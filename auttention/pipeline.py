"""The published pipeline end to end: corpus -> spectrograms -> two autoencoders -> features ->
fusion -> SVR scoring -> the paper's table and test predictions; and the `train` and `features` steps.
The autoencoders are trained, scored and checkpointed by the engine (auttention/engine.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from . import spectrogram as spectro
from .baseline import FUNCTIONALS, functionals
from .config import ModelConfig, PipelineConfig, ScoringConfig, TrainingConfig, to_dict
from .corpus import BadAudioPolicy
from .engine import FUSION, NETWORKS, Engine, Hooks, network_features, provenance
from .errors import UserError
from .evaluation import Evaluation, versus
from .extraction import ProcessPool, extract
from .features import write_features
from .io import read_json, write_json, write_yaml
from .predictions import write_predictions
from .validation import check_validation

log = logging.getLogger(__name__)


def train_models(
    spec: spectro.Spectrograms,
    models: dict[str, ModelConfig],
    training: TrainingConfig,
    folders: dict[str, Path],
    scoring: ScoringConfig | None = None,
    made_from: dict[str, Any] | None = None,
    functionals: pd.DataFrame | None = None,
) -> Engine:
    """The training of `pipeline` and the `train` step: each network of `models` trained on the training rows
    of `spec` up to training.epochs by the engine, an epoch of each in turn, with a log line per epoch,
    TensorBoard in folders[network]/tensorboard and a checkpoint after every epoch in
    folders[network]/checkpoint, continued when it is there (one of other spectrograms or settings is
    refused). scoring, made_from, functionals: what the engine's evaluation needs (see Engine)."""
    engine = Engine.resume(models, training, spec, folders, scoring, made_from, functionals)
    try:
        engine.run(
            training.epochs, Hooks(trained=lambda name, epoch, loss: log.info(f"{name}: epoch {epoch} loss {loss:.4f}"))
        )
    finally:
        engine.close()
    return engine


def train_from_folder(
    spectrograms: str | Path, model_cfg: ModelConfig, train_cfg: TrainingConfig, out: str | Path
) -> Engine:
    """The `train` step: one autoencoder trained on the spectrogram folder `spectrograms` into `out`
    (out/checkpoint, out/tensorboard; see `train_models`)."""
    name = model_cfg.network
    return train_models(spectro.read(spectrograms), {name: model_cfg}, train_cfg, {name: Path(out)})


def model_features(model: str | Path, spectrograms: str | Path, out: str | Path, csv: bool = False) -> pd.DataFrame:
    """The `features` step: the feature set of every clip of the spectrogram folder `spectrograms` from the
    autoencoder trained into `model`, written to `out` (also features.csv if `csv`)."""
    checkpoint = Path(model) / "checkpoint"
    if not checkpoint.is_dir():
        raise UserError(f"{model}: no trained model here (no checkpoint/); run `auttention-search train --out {model}`")
    from .training import Trainer  # here, not at the top: it imports TensorFlow (seconds)

    trainer = Trainer.load(checkpoint)
    features = network_features(trainer, spectro.read(spectrograms), trainer.model_cfg.network)
    write_features(features, out, csv=csv)
    return features


def prepare_out(out: Path, made_from: dict[str, Any]) -> None:
    """Trained models in `out` from other spectrograms, or other model or training settings, are moved
    aside (never resumed): a run of other data must not continue them."""

    record = read_json(out / "made_from.json") if (out / "made_from.json").is_file() else None
    stale = [p for p in (*(out / n for n in NETWORKS), out / "features", out / "predictions") if p.exists()]
    if record == made_from or not stale:
        return
    for path in stale:
        shutil.rmtree(path)
    log.info(f"pipeline: {out} held models of other spectrograms or settings; they were removed and are trained again")


def run(
    corpus: pd.DataFrame,
    cfg: PipelineConfig,
    out: str | os.PathLike,
    jobs: int | None = None,
    policy: BadAudioPolicy | None = None,
) -> dict[str, Evaluation]:
    """Run every step into `out`; return the evaluation of every branch: attention, seq2seq, the functionals
    (auttention.baseline: the same clips, the same SVR; kept in out/functionals) and their fusion
    (scoring.fuse), with the paired difference of fusion to the functionals in metrics.json's
    `fusion_vs_functionals`.

    policy: bad audio 'fail' (stop before writing anything) or 'skip' (leave bad clips out, one warning
    line each; default 'fail'; progress and warnings are logged); see extraction.extract. Spectrograms and
    models already in `out` are reused only when they were made from this corpus with these settings
    (and continue from their checkpoints).
    """

    out, policy = Path(out), policy or BadAudioPolicy()
    check_validation(corpus, cfg.scoring)
    started = time.perf_counter()
    created = not out.exists()
    try:  # reused when made from this corpus with these settings (the policy applies to its skipped clips)
        folder = extract(corpus, cfg.spectrogram, out / "spectrograms", ProcessPool(jobs), policy)
    except Exception:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no empty output folder behind
        raise
    spec = spectro.read(folder).with_labels(corpus)
    skipped = f"; skipped {len(spec.skipped)} of {len(corpus)} clips with bad audio" if spec.skipped else ""
    chunks = f" in {len(spec.x)} rows" if len(spec.x) != spec.clips else ""
    log.info(
        f"spectrograms: {spec.clips} clips{chunks} x {spec.x.shape[1]} frames x {spec.x.shape[2]} mel bands "
        f"({time.perf_counter() - started:.1f} s{skipped})"
    )
    write_yaml(out / "config.yaml", to_dict(cfg))

    made_from = provenance(cfg, spec)
    prepare_out(out, made_from)
    write_json(out / "made_from.json", made_from)
    # the functionals of the same clips: a branch of their own (the reference every result is compared with,
    # by the same SVR) and fused where scoring.fuse says so; kept in out/functionals like the spectrograms
    kept = corpus[corpus["file_name"].isin(set(spec.file_name))]
    table = functionals(kept, out / FUNCTIONALS, jobs=jobs, corpus_id=spec.corpus)
    engine = train_models(
        spec,
        {name: getattr(cfg, name) for name in NETWORKS},
        cfg.training,
        {name: out / name for name in NETWORKS},
        cfg.scoring,
        made_from,
        table,
    )
    for name in NETWORKS:
        log.info(f"{name}: trained ({engine.seconds[name]:.1f} s)")
    features, results = engine.evaluate()
    for name, branch in features.items():
        write_features(branch, out / "features" / name)
    for name, ev in results.items():
        write_predictions(out / "predictions" / f"{name}.devel.csv", ev.devel, cfg.scoring)
        write_predictions(out / "predictions" / f"{name}.test.csv", ev.test, cfg.scoring)
    write_predictions(out / "predictions.test.csv", results[FUSION].test, cfg.scoring)
    write_json(
        out / "metrics.json",
        {
            **{name: ev.metrics() for name, ev in results.items()},
            VERSUS: versus(results[FUSION], results[FUNCTIONALS], kept),
            "made_from": made_from,
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
    )
    return results


VERSUS = f"{FUSION}_vs_{FUNCTIONALS}"  # metrics.json's entry of the paired difference
