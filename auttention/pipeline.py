"""The published pipeline end to end: corpus -> spectrograms -> two autoencoders -> features ->
fusion -> SVR scoring -> the paper's table and test predictions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import spectrogram as spectro
from .config import ModelConfig, PipelineConfig, ScoringConfig, TrainingConfig, settings_hash, to_dict
from .corpus import BadAudioPolicy
from .errors import UserError
from .features import feature_frame, fuse, write_features
from .io import write_yaml
from .scoring import Evaluation, evaluate, write_predictions

NETWORKS = ("attention", "seq2seq")
FUSION = "fusion"  # the early fusion of both networks' features: one name in YAML, trials.csv, report, metrics
BRANCHES = (*NETWORKS, FUSION)
PARTITIONS = ("train", "devel", "test")
FIT_ON = {"train": ("train",), "train+devel": ("train", "devel"), "all": ("train", "devel", "test")}


def training_set(spec: spectro.Spectrograms, cfg: TrainingConfig) -> spectro.Spectrograms:
    """The rows the autoencoders learn from (unsupervised), per training.fit_on."""
    return spec.select(FIT_ON[cfg.fit_on])


def train_network(spec: spectro.Spectrograms, model_cfg: ModelConfig, train_cfg: TrainingConfig, out: str | Path,
                  on_epoch_end: Callable[[int, float], None] | None = None):
    """Train one autoencoder on the training set of `spec`, checkpointing into `out` (resumes if present;
    a checkpoint of other spectrograms is refused)."""
    from .training import train

    rows = training_set(spec, train_cfg)
    return train(model_cfg, train_cfg, rows.x, out, on_epoch_end=on_epoch_end, lengths=rows.length,
                 made_from=spec.provenance)


def train_from_folder(spectrograms: str | Path, model_cfg: ModelConfig, train_cfg: TrainingConfig, out: str | Path,
                      on_epoch_end: Callable[[int, float], None] | None = None):
    """The `train` step: one autoencoder trained on the spectrogram folder `spectrograms` (see `train_network`)."""
    return train_network(spectro.read(spectrograms), model_cfg, train_cfg, out, on_epoch_end=on_epoch_end)


def model_features(model: str | Path, spectrograms: str | Path, out: str | Path, csv: bool = False) -> pd.DataFrame:
    """The `features` step: the feature set of every clip of the spectrogram folder `spectrograms` from the
    autoencoder trained into `model`, written to `out` (also features.csv if `csv`)."""
    checkpoint = Path(model) / "checkpoint"
    if not checkpoint.is_dir():
        raise UserError(f"{model}: no trained model here (no checkpoint/); run `auttention-search train --out {model}`")
    from .training import Trainer  # here, not at the top: it imports TensorFlow (seconds)

    trainer = Trainer.load(checkpoint)
    frame = network_features(trainer, spectro.read(spectrograms), trainer.model_cfg.network)
    write_features(frame, out, csv=csv)
    return frame


def network_features(trainer, spec: spectro.Spectrograms, name: str) -> pd.DataFrame:
    """The feature set of every clip of `spec` from a trained autoencoder (refused for spectrograms
    other than those it was trained on), one row per clip: the mean over its rows (chunks).

    Computed partition by partition, the same way wherever it is used (the search's epochs, the
    export, `pipeline`), so that the same checkpoint gives bit-identical features (batch composition
    changes float rounding, and the rounded SVR predictions can flip on that).
    """
    trainer.check_made_from(spec.provenance, f"the {name} model")
    parts = [spec.select(p) for p in PARTITIONS if (spec.partition == p).any()]
    frame = pd.concat([clip_features(p, trainer.features(p.x, p.length), name) for p in parts], ignore_index=True)
    frame.attrs = {"made_from": {**spec.provenance, name: settings_hash(trainer.model_cfg)}}
    return frame


def clip_features(spec: spectro.Spectrograms, rows: np.ndarray, name: str) -> pd.DataFrame:
    """A feature set of one row per clip from per-row features: a clip cut into chunks gets their mean."""
    if len(set(spec.file_name)) == len(spec.file_name):
        return feature_frame(spec.file_name, spec.partition, spec.label, rows, name)
    names, first, owner = np.unique(spec.file_name.astype(str), return_index=True, return_inverse=True)
    sums = np.zeros((len(names), rows.shape[1]), np.float64)
    np.add.at(sums, owner, rows)
    means = (sums / np.bincount(owner)[:, None]).astype(np.float32)
    return feature_frame(names, spec.partition[first], spec.label[first], means, name)


class AutoencoderPair:
    """The two autoencoders of one configuration, trained an epoch at a time on one corpus' spectrograms,
    and everything downstream of them: the features of any partition as tables keyed by file name,
    their fusion, and the scoring of attention, seq2seq and fusion.

    `pipeline` and a search trial both drive this one implementation (a trial adds only what Tune
    needs: reports, checkpoints, resources).
    """

    def __init__(self, cfg: PipelineConfig, spec: spectro.Spectrograms, log_dir: str | Path | None = None,
                 trainers: dict | None = None):
        from .training import Trainer

        self.cfg, self.spec = cfg, spec
        self.fit_rows = training_set(spec, cfg.training)
        _, n_frames, n_mels = spec.x.shape
        logs = Path(log_dir) if log_dir is not None else None
        self.trainers = trainers or {
            name: Trainer(getattr(cfg, name), cfg.training, n_frames, n_mels,
                          log_dir=logs / name if logs else None, made_from=spec.provenance)
            for name in NETWORKS}
        for name, trainer in self.trainers.items():
            trainer.check_made_from(spec.provenance, f"the {name} checkpoint")

    @classmethod
    def load(cls, folder: str | Path, cfg: PipelineConfig, spec: spectro.Spectrograms,
             log_dir: str | Path | None = None) -> "AutoencoderPair":
        """Both autoencoders from a checkpoint folder written by `save` (refused for other spectrograms)."""
        from .training import Trainer

        logs = Path(log_dir) if log_dir is not None else None
        trainers = {name: Trainer.load(Path(folder) / name, log_dir=logs / name if logs else None)
                    for name in NETWORKS}
        return cls(cfg, spec, log_dir, trainers)

    @property
    def epoch(self) -> int:
        """Epochs both autoencoders have trained."""
        return min(t.epoch for t in self.trainers.values())

    def fit_epoch(self) -> dict[str, float]:
        """One more epoch of each autoencoder on the training rows; {network: mean training loss}."""
        return {name: t.fit_epoch(self.fit_rows.x, self.fit_rows.length) for name, t in self.trainers.items()}

    def save(self, folder: str | Path) -> None:
        """Checkpoint both autoencoders (weights, optimizer, epoch, provenance) into folder/{attention,seq2seq}."""
        for name, trainer in self.trainers.items():
            trainer.save(Path(folder) / name)

    def close(self) -> None:
        """Close the TensorBoard writers."""
        for trainer in self.trainers.values():
            trainer.close()

    def features(self, partitions: tuple[str, ...] = PARTITIONS) -> dict[str, pd.DataFrame]:
        """{attention, seq2seq, fusion: feature set of the clips of `partitions`} (fusion joined on file name)."""
        spec = self.spec.select(partitions)
        frames = {name: network_features(t, spec, name) for name, t in self.trainers.items()}
        frames[FUSION] = fuse([frames[n] for n in NETWORKS], list(NETWORKS))
        for frame in frames.values():
            frame.attrs = {"made_from": self.made_from}
        return frames

    @property
    def made_from(self) -> dict[str, Any]:
        """Provenance of the features: corpus, spectrogram, model and training settings hashes."""
        return provenance(self.cfg, self.spec)

    def score_devel(self) -> dict[str, float]:
        """What a search reports per epoch: each branch's devel rho and chosen C (train and devel only)."""
        out = {}
        for name, ev in evaluate_frames(self.features(("train", "devel")), self.cfg.scoring).items():
            out[f"{name}_rho"], out[f"{name}_c"] = ev.devel_rho, ev.c
        return out

    def evaluate(self) -> tuple[dict[str, pd.DataFrame], dict[str, Evaluation]]:
        """Features of every partition and each branch's evaluation (C on devel; test from the SVR refit on
        train+devel). Its devel figures equal `score_devel`'s: the same features, the same choice."""
        frames = self.features()
        return frames, evaluate_frames(frames, self.cfg.scoring)


def provenance(cfg: PipelineConfig, spec: spectro.Spectrograms) -> dict[str, Any]:
    """What a configuration's models, features and predictions are made from: the corpus fingerprint and the
    hashes of the spectrogram, model and training settings (epochs aside: more epochs continue a model)."""
    import dataclasses

    training = dataclasses.replace(cfg.training, epochs=1, jit_compile=True)
    return {**spec.provenance, **{name: settings_hash(getattr(cfg, name)) for name in NETWORKS},
            "training": settings_hash(training)}


def evaluate_frames(frames: dict[str, pd.DataFrame], scoring: ScoringConfig) -> dict[str, Evaluation]:
    """Each feature set's evaluation by the paper's protocol."""
    return {name: evaluate(frame, scoring) for name, frame in frames.items()}


def table(results: dict[str, Evaluation]) -> str:
    """The paper's table: devel and test Spearman per branch (test only where labels are known)."""
    lines = [f"{'':<10} {'devel':>7} {'test':>7}   C"]
    for name, ev in results.items():
        test = f"{ev.test_rho:7.3f}" if ev.test_rho is not None else f"{'n/a':>7}"
        lines.append(f"{name:<10} {ev.devel_rho:7.3f} {test}   {ev.c:g}")
    if any(ev.test_rho is None for ev in results.values()):
        lines.append("(test: labels unknown, e.g. '?' as ComParE ships them)")
    return "\n".join(lines)


def reusable_spectrograms(folder: Path, corpus: pd.DataFrame, cfg: PipelineConfig, log: Callable[[str], None]
                          ) -> spectro.Spectrograms | None:
    """The spectrograms in `folder` if they were made from this corpus with these settings; else None,
    saying in one line why they are made again."""
    from .corpus import fingerprint

    if not spectro.is_complete(folder):
        return None
    why = spectro.differs(folder, fingerprint(corpus), cfg.spectrogram)
    if why:
        log(f"spectrograms: {folder} was {why}; extracting them again")
        return None
    log(f"spectrograms: reusing {folder}")
    return spectro.read(folder)


def prepare_out(out: Path, made_from: dict[str, Any], log: Callable[[str], None]) -> None:
    """Trained models in `out` from other spectrograms, or other model or training settings, are moved
    aside (never resumed): a run of other data must not continue them."""
    import shutil

    from .io import read_json

    record = read_json(out / "made_from.json") if (out / "made_from.json").is_file() else None
    stale = [p for p in (*(out / n for n in NETWORKS), out / "features", out / "predictions") if p.exists()]
    if record == made_from or not stale:
        return
    for path in stale:
        shutil.rmtree(path)
    log(f"pipeline: {out} held models of other spectrograms or settings; they were removed and are trained again")


def run(corpus: pd.DataFrame, cfg: PipelineConfig, out: str | os.PathLike, jobs: int | None = None,
        log: Callable[[str], None] = print, policy: BadAudioPolicy | None = None) -> dict[str, Evaluation]:
    """Run every step into `out`; return the evaluation of attention, seq2seq and fusion.

    policy: bad audio 'fail' (stop before writing anything) or 'skip' (leave bad clips out, one warning
    line each; default 'fail', warnings through `log`); see spectrogram.extract. Spectrograms and
    models already in `out` are reused only when they were made from this corpus with these settings
    (and continue from their checkpoints).
    """
    from .io import write_json

    out, policy = Path(out), policy or BadAudioPolicy(warn=log)
    started = time.perf_counter()
    spec_dir = out / "spectrograms"
    spec = reusable_spectrograms(spec_dir, corpus, cfg, log)
    if spec is not None:
        # clips skipped when they were extracted are bad still: the policy applies to them now as well
        policy.apply(corpus, spec.skipped)
    else:
        log(f"spectrograms: extracting {len(corpus)} clips ...")
        created = not out.exists()
        try:
            spec = spectro.read(spectro.extract(corpus, cfg.spectrogram, spec_dir, jobs=jobs, policy=policy))
        except Exception:
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # nothing was written: leave no empty output folder behind
            raise
    spec = spec.with_labels(corpus)
    skipped = f"; skipped {len(spec.skipped)} of {len(corpus)} clips with bad audio" if spec.skipped else ""
    chunks = f" in {len(spec.x)} rows" if len(spec.x) != spec.clips else ""
    log(f"spectrograms: {spec.clips} clips{chunks} x {spec.x.shape[1]} frames x {spec.x.shape[2]} mel bands "
        f"({time.perf_counter() - started:.1f} s{skipped})")
    write_yaml(out / "config.yaml", to_dict(cfg))

    made_from = provenance(cfg, spec)
    prepare_out(out, made_from, log)
    write_json(out / "made_from.json", made_from)
    trainers = {}
    for name in NETWORKS:
        t0 = time.perf_counter()
        trainers[name] = train_network(spec, getattr(cfg, name), cfg.training, out / name,
                                       on_epoch_end=lambda e, loss, n=name: log(f"{n}: epoch {e} loss {loss:.4f}"))
        log(f"{name}: trained ({time.perf_counter() - t0:.1f} s)")
    pair = AutoencoderPair(cfg, spec, trainers=trainers)
    frames, results = pair.evaluate()
    for name, frame in frames.items():
        write_features(frame, out / "features" / name)
    for name, ev in results.items():
        write_predictions(out / "predictions" / f"{name}.devel.csv", ev.devel, cfg.scoring)
        write_predictions(out / "predictions" / f"{name}.test.csv", ev.test, cfg.scoring)
    write_predictions(out / "predictions.test.csv", results[FUSION].test, cfg.scoring)
    write_json(out / "metrics.json", {**{name: ev.metrics() for name, ev in results.items()},
                                      "made_from": made_from,
                                      "wall_seconds": round(time.perf_counter() - started, 1)})
    return results
