"""The one engine: the only place an epoch of the autoencoders is trained, scored and checkpointed.

An `Engine` holds the autoencoders of one configuration (both networks, or one alone as the `train`
step has it) on one corpus' spectrograms, and everything downstream of them: the features of any
partition as tables keyed by file name, their fusion, and the scoring of every branch. `Engine.run`
trains an epoch of each network in turn (each has its own seeds, so the order changes no number),
writes each network's checkpoint after its epoch when the engine keeps checkpoints (`Engine.resume`:
FOLDER/checkpoint, continued when present), and scores devel every `score_every`-th epoch and after
the last (`score`, kept in `history` as EpochReports). TensorBoard scalars come from each network's trainer when
it was given a log folder. What each driver adds goes through the two hooks of `Hooks`:
`trained(network, epoch, loss)` after each network's epoch (`pipeline` and the `train` step: a log
line) and `scored(report)` after each scored epoch (a Tune trial: its report, with the pair saved
as Tune's checkpoint by `save`; a confirmation seed needs none: it reads `history`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import spectrogram as spectro
from .config import ModelConfig, PipelineConfig, ScoringConfig, TrainingConfig, settings_hash
from .evaluation import Evaluation, evaluate
from .features import feature_frame, fuse
from .record import FUNCTIONALS, FUSION, NETWORKS, BranchScore, EpochReport

if TYPE_CHECKING:  # training imports TensorFlow (seconds): only where a model is built
    from .training import Trainer

PARTITIONS = ("train", "devel", "test")
FIT_ON = {"train": ("train",), "train+devel": ("train", "devel"), "all": ("train", "devel", "test")}


def training_set(spec: spectro.Spectrograms, cfg: TrainingConfig) -> spectro.Spectrograms:
    """The rows the autoencoders learn from (unsupervised), per training.fit_on."""
    return spec.select(FIT_ON[cfg.fit_on])


def network_features(trainer: Trainer, spec: spectro.Spectrograms, name: str) -> pd.DataFrame:
    """The feature set of every clip of `spec` from a trained autoencoder (refused for spectrograms
    other than those it was trained on), one row per clip: the mean over its rows (chunks).

    Computed partition by partition, the same way wherever it is used (the search's epochs, the
    export, `pipeline`), so that the same checkpoint gives bit-identical features (batch composition
    changes float rounding, and the rounded SVR predictions can flip on that).
    """
    trainer.check_made_from(spec.provenance, f"the {name} model")
    parts = [spec.select(p) for p in PARTITIONS if (spec.partition == p).any()]
    table = pd.concat([clip_features(p, trainer.features(p.x, p.length), name) for p in parts], ignore_index=True)
    table.attrs = {"made_from": {**spec.provenance, name: settings_hash(trainer.model_cfg)}}
    return table


def clip_features(spec: spectro.Spectrograms, rows: np.ndarray, name: str) -> pd.DataFrame:
    """A feature set of one row per clip from per-row features: a clip cut into chunks gets their mean."""
    if len(set(spec.file_name)) == len(spec.file_name):
        return feature_frame(spec.file_name, spec.partition, spec.label, rows, name, spec.speaker)
    names, first, owner = np.unique(spec.file_name.astype(str), return_index=True, return_inverse=True)
    sums = np.zeros((len(names), rows.shape[1]), np.float64)
    np.add.at(sums, owner, rows)
    means = (sums / np.bincount(owner)[:, None]).astype(np.float32)
    speaker = None if spec.speaker is None else spec.speaker[first]
    return feature_frame(names, spec.partition[first], spec.label[first], means, name, speaker)


def provenance(cfg: PipelineConfig, spec: spectro.Spectrograms) -> dict[str, Any]:
    """What a configuration's models, features and predictions are made from: the corpus fingerprint and the
    hashes of the spectrogram, model and training settings (epochs aside: more epochs continue a model)."""
    training = dataclasses.replace(cfg.training, epochs=1, jit_compile=True)
    return {
        **spec.provenance,
        **{name: settings_hash(getattr(cfg, name)) for name in NETWORKS},
        "training": settings_hash(training),
    }


def evaluate_branches(
    features: dict[str, pd.DataFrame], scoring: ScoringConfig, intervals: bool = True
) -> dict[str, Evaluation]:
    """Each branch's feature set evaluated by the paper's protocol (bootstrap intervals when `intervals`)."""
    return {name: evaluate(table, scoring, intervals) for name, table in features.items()}


def selection_score(history: list[float], select: str, last: int) -> float:
    """The statistic a trial is chosen by over its scores so far (`select`): the best, the last, or the
    mean of the `last` last ones (mean_last: robust to one lucky epoch); NaN when none is finite."""
    values = [v for v in history if v is not None and math.isfinite(v)]
    if not values:
        return float("nan")
    if select == "best":
        return max(values)
    if select == "last":
        return values[-1]
    return float(np.mean(values[-last:]))


@dataclasses.dataclass
class Hooks:
    """What a driver adds to the engine's epochs (see the module docstring)."""

    trained: Callable[[str, int, float], None] | None = None  # (network, its epoch, its mean training loss)
    scored: Callable[[EpochReport], None] | None = None  # a scored epoch's report


class Engine:
    """The autoencoders of one configuration (both, or one alone) on one corpus' spectrograms, trained an
    epoch at a time, and their features, fusion and scoring. `pipeline`, the `train` step, a Tune trial
    and a confirmation seed all drive it through `run` and fill in `Hooks`.
    """

    def __init__(
        self,
        trainers: dict[str, Trainer],
        spec: spectro.Spectrograms,
        training: TrainingConfig,
        scoring: ScoringConfig | None = None,
        made_from: dict[str, Any] | None = None,
        checkpoints: dict[str, Path] | None = None,
        functionals: pd.DataFrame | None = None,
    ):
        # made_from: the features' provenance (default: the spectrograms' and each model's settings);
        # checkpoints: {network: folder} written after each of its epochs (none: the driver saves);
        # functionals: the corpus' utterance functionals (auttention.baseline.functionals), a branch of its
        # own and fused where scoring.fuse says so
        self.trainers, self.spec, self.training, self.scoring = trainers, spec, training, scoring
        self.functionals = functionals
        self.fit_rows = training_set(spec, training)
        self.made_from = made_from or {
            **spec.provenance,
            **{n: settings_hash(t.model_cfg) for n, t in trainers.items()},
        }
        self.checkpoints = dict(checkpoints or {})
        self.seconds = {name: 0.0 for name in trainers}  # each network's training time in `run`
        self.history: list[EpochReport] = []  # every epoch `run` scored
        for name, trainer in trainers.items():
            trainer.check_made_from(spec.provenance, f"the {name} checkpoint")

    @classmethod
    def new(
        cls,
        cfg: PipelineConfig,
        spec: spectro.Spectrograms,
        log_dir: str | Path | None = None,
        functionals: pd.DataFrame | None = None,
    ) -> Engine:
        """Both autoencoders of `cfg`, untrained (TensorBoard into log_dir/NETWORK when given)."""
        from .training import Trainer

        _, n_frames, n_mels = spec.x.shape
        trainers = {
            name: Trainer(
                getattr(cfg, name),
                cfg.training,
                n_frames,
                n_mels,
                log_dir=Path(log_dir) / name if log_dir is not None else None,
                made_from=spec.provenance,
            )
            for name in NETWORKS
        }
        return cls(trainers, spec, cfg.training, cfg.scoring, provenance(cfg, spec), functionals=functionals)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        cfg: PipelineConfig,
        spec: spectro.Spectrograms,
        log_dir: str | Path | None = None,
        functionals: pd.DataFrame | None = None,
    ) -> Engine:
        """Both autoencoders from a checkpoint folder written by `save` (refused for other spectrograms)."""
        from .training import Trainer

        trainers = {
            name: Trainer.load(Path(folder) / name, log_dir=Path(log_dir) / name if log_dir is not None else None)
            for name in NETWORKS
        }
        return cls(trainers, spec, cfg.training, cfg.scoring, provenance(cfg, spec), functionals=functionals)

    @classmethod
    def resume(
        cls,
        models: dict[str, ModelConfig],
        training: TrainingConfig,
        spec: spectro.Spectrograms,
        folders: dict[str, Path],
        scoring: ScoringConfig | None = None,
        made_from: dict[str, Any] | None = None,
        functionals: pd.DataFrame | None = None,
    ) -> Engine:
        """The networks of `models`, each continuing folders[network]/checkpoint when it is there (refused when
        written for other data or settings; more epochs continue it) and checkpointing into it after every
        epoch, TensorBoard into folders[network]/tensorboard: `pipeline` and the `train` step."""
        from .training import Trainer

        _, n_frames, n_mels = spec.x.shape
        trainers = {
            name: Trainer.resume(
                Path(folders[name]) / "checkpoint",
                cfg,
                training,
                n_frames,
                n_mels,
                log_dir=Path(folders[name]) / "tensorboard",
                made_from=spec.provenance,
            )
            for name, cfg in models.items()
        }
        return cls(
            trainers,
            spec,
            training,
            scoring,
            made_from,
            checkpoints={name: Path(folders[name]) / "checkpoint" for name in models},
            functionals=functionals,
        )

    @property
    def epoch(self) -> int:
        """Epochs every network has trained."""
        return min(t.epoch for t in self.trainers.values())

    def run(self, epochs: int, hooks: Hooks | None = None, score_every: int | None = None) -> list[EpochReport]:
        """Train every network up to `epochs` epochs, an epoch of each in turn, checkpointing each after its
        epoch where the engine keeps checkpoints; with score_every, score the branches after every
        score_every-th epoch and the last. The scored epochs' reports (each branch's score and C, the epoch's
        training losses and seconds) are returned and appended to `history`."""
        hooks = hooks or Hooks()
        scored = []
        while self.epoch < epochs:
            started = time.perf_counter()
            losses = {name: self._fit(name, hooks) for name, t in self.trainers.items() if t.epoch < epochs}
            if score_every is None or (self.epoch % score_every and self.epoch < epochs):
                continue
            report = EpochReport(self.epoch, self.score(), losses, time.perf_counter() - started)
            self.history.append(report)
            scored.append(report)
            if hooks.scored:
                hooks.scored(report)
        return scored

    def _fit(self, name: str, hooks: Hooks) -> float:
        """One epoch of one network (and its checkpoint); its mean training loss."""
        trainer, started = self.trainers[name], time.perf_counter()
        loss = trainer.fit_epoch(self.fit_rows.x, self.fit_rows.length)
        if name in self.checkpoints:
            trainer.save(self.checkpoints[name])
        self.seconds[name] += time.perf_counter() - started
        if hooks.trained:
            hooks.trained(name, trainer.epoch, loss)
        return loss

    def save(self, folder: str | Path) -> None:
        """Checkpoint every network (weights, optimizer, epoch, provenance) into folder/NETWORK (what `load` reads)."""
        for name, trainer in self.trainers.items():
            trainer.save(Path(folder) / name)

    def close(self) -> None:
        """Close the TensorBoard writers."""
        for trainer in self.trainers.values():
            trainer.close()

    def features(self, partitions: tuple[str, ...] = PARTITIONS) -> dict[str, pd.DataFrame]:
        """{branch: feature set of the clips of `partitions`}: each network's, the functionals' where the
        engine has them, and the fusion of the sets scoring.fuse names (both networks without scoring
        settings) when all are here, joined on file name."""
        spec = self.spec.select(partitions)
        features = {name: network_features(t, spec, name) for name, t in self.trainers.items()}
        made_from = dict(self.made_from)
        if self.functionals is not None:
            features[FUNCTIONALS] = self.functionals[self.functionals["file_name"].isin(set(spec.file_name))]
            made_from[FUNCTIONALS] = (self.functionals.attrs.get("made_from") or {}).get(FUNCTIONALS)
        fused = self.scoring.fused if self.scoring is not None else NETWORKS
        if FUNCTIONALS in fused and self.functionals is None:
            raise ValueError(f"scoring.fuse {'+'.join(fused)!r} needs the functionals: give the engine `functionals`")
        if all(name in features for name in fused):
            features[FUSION] = fuse([features[n] for n in fused], list(fused))
        for table in features.values():
            table.attrs = {"made_from": made_from}
        return features

    def score(self) -> dict[str, BranchScore]:
        """What a search reports per epoch: each branch's score and chosen C (train and devel only; the
        functionals alone are left out: they do not change between epochs). The score is what C was chosen
        by: the devel rho under scoring.validation devel (the paper's), the swap or speaker-fold score
        otherwise (auttention/validation.py), so that ASHA, the selection, the confirmation and the ensembles
        all choose by it."""
        # no intervals: a search's per-epoch report reads only the score and C
        branches = {k: v for k, v in self.features(("train", "devel")).items() if k != FUNCTIONALS}
        scoring = self._scoring()
        return {name: BranchScore(ev.score, ev.c) for name, ev in evaluate_branches(branches, scoring, False).items()}

    def evaluate(self) -> tuple[dict[str, pd.DataFrame], dict[str, Evaluation]]:
        """Features of every partition and each branch's evaluation (C on devel; test from the SVR refit on
        train+devel). Its scores equal `score`'s: the same features, the same choice."""
        features = self.features()
        return features, evaluate_branches(features, self._scoring())

    def _scoring(self) -> ScoringConfig:
        if self.scoring is None:
            raise ValueError("this engine was made without scoring settings (the train step's); give it `scoring`")
        return self.scoring
