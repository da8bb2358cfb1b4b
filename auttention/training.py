"""Training one recurrent autoencoder epoch by epoch, with exact checkpoint/resume.

A `Trainer` owns a model, its Adam optimizer and the epoch count; the epochs themselves are run
by the engine (auttention/engine.py), the one loop every driver uses. Each epoch (`fit_epoch`) is
one pass of the compiled train step (a TensorFlow graph; XLA only where it pays, see `use_xla`),
batch by batch, over the data shuffled with a seed derived from (seed, epoch), so a run is
reproducible on CPU and a checkpointed run resumed after epoch k continues exactly as if it had
never stopped.

A checkpoint is a folder: `state.json` (configs, shapes, epoch, loss history) and two NumPy
archives of plain arrays (every model variable, dropout seed state included, and every
optimizer variable), read back with allow_pickle=False: nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .config import ModelConfig, TrainingConfig, build, model_config, to_dict
from .errors import TrainingDiverged, UserError
from .io import atomic_dir
from .models import build_autoencoder, feature_size, frame_weights, full_lengths, targets

CHECKPOINT_FORMAT = 1
STATE_FILE = "state.json"
MODEL_FILE = "model.npz"
OPTIMIZER_FILE = "optimizer.npz"
# Settings that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = ("epochs", "jit_compile")


def use_xla(requested: bool) -> bool:
    """Whether to compile with XLA: only when requested and a GPU is visible.

    On CPU (TF 2.21, units 64, 2 layers, 100 frames, batch 64) XLA compiled every variant
    (seq2seq, Bahdanau, Luong; GRU and LSTM) 1.5-2.5x longer and trained it up to 2.3x slower,
    never faster, than the plain TensorFlow graph, so a CPU run falls back to the latter. On a
    GPU, Keras itself keeps XLA off for models whose RNN layers can use cuDNN (cuDNN ops do not
    compile), which is the faster path.
    """
    if not requested:
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def batches(x: np.ndarray, lengths: np.ndarray, batch_size: int, order: np.ndarray | None = None):
    """The (x, lengths) batches in the order `order` (default: as it is), cut one at a time, each a
    contiguous array: the batches `fit(x[order], ..., batch_size, shuffle=False)` or `predict(x, batch_size)`
    would make, without their copies of the whole set (the shuffled copy, the reversed targets and
    whatever Keras makes of whole arrays). A trial holds x as a read-only view of the Ray object
    store, so its data then costs a batch, not another copy of the training set."""
    for start in range(0, len(x), batch_size):
        rows: slice | np.ndarray = slice(start, start + batch_size)
        if order is not None:
            rows = order[rows]
        yield np.ascontiguousarray(x[rows]), np.ascontiguousarray(lengths[rows], dtype=np.int32)


class Trainer:
    """One autoencoder being trained epoch by epoch (state: model, optimizer, epoch)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainingConfig,
        n_frames: int,
        n_mels: int,
        log_dir: str | Path | None = None,
        made_from: dict | None = None,
    ):
        # made_from: the provenance of its training data (corpus fingerprint, spectrogram settings hash)
        self.made_from = dict(made_from or {})
        self.model_cfg = model_cfg
        self.train_cfg = train_cfg
        self.n_frames = int(n_frames)
        self.n_mels = int(n_mels)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.epoch = 0
        self.losses: list[float] = []
        self._writer: Any = None  # tf.summary writer, made at the first scalar
        # Seeds Python, NumPy, TensorFlow and Keras: initial weights and dropout masks.
        keras.utils.set_random_seed(train_cfg.seed)
        self.autoencoder, self.encoder = build_autoencoder(model_cfg, self.n_frames, self.n_mels, seed=train_cfg.seed)
        self.optimizer = keras.optimizers.Adam(learning_rate=train_cfg.learning_rate, clipvalue=train_cfg.clip_value)
        jit = use_xla(train_cfg.jit_compile)
        with warnings.catch_warnings():
            # With cuDNN RNN layers on a GPU, Keras turns XLA off (cuDNN ops do not compile)
            # and warns; cuDNN is the faster choice there, so the fallback is silent.
            warnings.filterwarnings("ignore", message=".*jit_compile.*")
            # the mean squared error over real frames only: sample weights 0 on padding, and the mean
            # taken over the weights (each batch's real frames), not over every step
            loss = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
            self.autoencoder.compile(optimizer=self.optimizer, loss=loss, jit_compile=jit)
            self.encoder.compile(jit_compile=jit)
        self.jit_compile = bool(self.autoencoder.jit_compile)  # what is actually used
        # Creating the optimizer variables now spares tf.function a second trace of the train step.
        self.optimizer.build(self.autoencoder.trainable_variables)

    @property
    def feature_size(self) -> int:
        """Length of the feature vector."""
        return feature_size(self.model_cfg)

    def _check(self, x: np.ndarray, lengths: np.ndarray | None, what: str = "x") -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.n_frames, self.n_mels):
            raise ValueError(f"{what} must be shaped (N, {self.n_frames}, {self.n_mels}), got {x.shape}")
        if len(x) == 0:
            raise ValueError(f"{what} is empty")
        lengths = full_lengths(x) if lengths is None else np.asarray(lengths, dtype=np.int32)
        if lengths.shape != (len(x),) or lengths.min() < 1 or lengths.max() > self.n_frames:
            raise ValueError(f"lengths must be {len(x)} frame counts in 1..{self.n_frames}")
        return x, lengths

    def fit_epoch(self, x: np.ndarray, lengths: np.ndarray | None = None) -> float:
        """Train one epoch (Adam on the MSE of each reversed clip's real frames); return the mean training loss.

        lengths: each row's real frames (default: all of them); the padding after them is masked.
        """
        x, lengths = self._check(x, lengths)
        if not np.isfinite(x).all():
            raise TrainingDiverged(
                "the training frames contain NaN or Inf values, so the loss would be NaN; check the spectrogram cache"
            )
        order = np.random.default_rng([self.train_cfg.seed, self.epoch]).permutation(len(x))
        # batch by batch, as fit(x[order], targets(x[order]), shuffle=False) would go (the same
        # numbers); the epoch's loss is the mean of the batches' losses weighted by their sizes,
        # accumulated in float32 as Keras' fit does it
        total = count = np.float32(0.0)
        for xb, lb in batches(x, lengths, self.train_cfg.batch_size, order):
            batch_loss = np.float32(
                self.autoencoder.train_on_batch([xb, lb], targets(xb, lb), sample_weight=frame_weights(xb, lb))
            )
            total += batch_loss * np.float32(len(xb))
            count += np.float32(len(xb))
        loss = float(total / count)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged in epoch {self.epoch + 1}: the loss is {loss}; "
                "lower training.learning_rate or set training.clip_value"
            )
        self.epoch += 1
        self.losses.append(loss)
        self._log("loss", loss)
        return loss

    def features(self, x: np.ndarray, lengths: np.ndarray | None = None, batch_size: int | None = None) -> np.ndarray:
        """Feature vectors (N, feature_size) float32 of x, inference mode (no dropout)."""
        x, lengths = self._check(x, lengths)
        out = self._predict(self.encoder, x, lengths, batch_size).astype(np.float32, copy=False)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            # non-finite input frames or weights: no SVR could use these features
            raise TrainingDiverged(
                f"the features of {int(bad.sum())} of {len(out)} clip(s) are NaN or Inf "
                f"(non-finite spectrogram frames or model weights); check the spectrogram cache"
            )
        return out

    def _predict(self, model: keras.Model, x: np.ndarray, lengths: np.ndarray, batch_size: int | None) -> np.ndarray:
        """model.predict([x, lengths], batch_size) batch by batch (the same batches, the same numbers), no copy of x."""
        return np.concatenate(
            [
                np.asarray(model.predict_on_batch([xb, lb]))
                for xb, lb in batches(x, lengths, self._eval_batch(batch_size))
            ]
        )

    def _eval_batch(self, batch_size: int | None) -> int:
        # Inference needs no gradients: larger batches amortise per-step overhead.
        return int(batch_size) if batch_size else max(self.train_cfg.batch_size, 256)

    def close(self) -> None:
        """Close the TensorBoard writer (a later epoch reopens it)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _log(self, name: str, value: float) -> None:
        """Write one TensorBoard scalar at the current epoch (if a log folder was given)."""
        if self.log_dir is None:
            return
        import tensorflow as tf  # TensorBoard event files need tf.summary

        if self._writer is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        writer = self._writer
        with writer.as_default():
            tf.summary.scalar(name, value, step=self.epoch)
        writer.flush()

    # -- checkpoints ---------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write a checkpoint (configs, epoch, weights, optimizer state) to `folder` atomically."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "losses": self.losses,
            "n_frames": self.n_frames,
            "n_mels": self.n_mels,
            "model": to_dict(self.model_cfg),
            "training": to_dict(self.train_cfg),
            "made_from": self.made_from,
        }
        with atomic_dir(folder) as tmp:
            _save_variables(tmp / MODEL_FILE, self.autoencoder.variables)
            _save_variables(tmp / OPTIMIZER_FILE, self.optimizer.variables)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, log_dir: str | Path | None = None) -> Trainer:
        """Rebuild a Trainer from a checkpoint (a training output folder also works) to continue exactly."""
        folder = checkpoint_folder(folder)
        state = read_state(folder)
        trainer = cls(
            state["model_cfg"],
            state["train_cfg"],
            state["n_frames"],
            state["n_mels"],
            log_dir=log_dir,
            made_from=state.get("made_from"),
        )
        trainer._restore(folder, state)
        return trainer

    @classmethod
    def resume(
        cls,
        folder: str | Path,
        model_cfg: ModelConfig,
        train_cfg: TrainingConfig,
        n_frames: int,
        n_mels: int,
        log_dir: str | Path | None = None,
        made_from: dict | None = None,
    ) -> Trainer:
        """A Trainer continuing the checkpoint in `folder` if there is one, else a new one. A checkpoint written
        for another model, training setup, data shape or data (made_from) is refused; it is rebuilt from the
        new configs, so the settings allowed to change (more epochs, XLA) take effect."""
        folder = Path(folder)
        state = (
            _resumable_state(folder, model_cfg, train_cfg, n_frames, n_mels, made_from or {})
            if (folder / STATE_FILE).exists()
            else None
        )
        trainer = cls(model_cfg, train_cfg, n_frames, n_mels, log_dir=log_dir, made_from=made_from)
        if state is not None:
            trainer._restore(folder, state)
        return trainer

    def check_made_from(self, made_from: dict, where: str | Path) -> None:
        """Refuse, in one line, data other than what this model was trained on (another corpus or other
        spectrogram settings): features from it would be silently wrong."""
        problems = [
            f"{key} {self.made_from.get(key)} vs {value}"
            for key, value in made_from.items()
            if self.made_from.get(key) != value
        ]
        if problems:
            raise UserError(
                f"{where}: this model was trained on other data than these spectrograms "
                f"({'; '.join(problems)}); train it on these (a new --out) or use the spectrograms "
                f"it was trained on"
            )

    def _restore(self, folder: Path, state: dict) -> None:
        """Load weights, dropout seed state, optimizer state and epoch from a checkpoint folder."""
        _load_variables(folder / MODEL_FILE, self.autoencoder.variables)
        _load_variables(folder / OPTIMIZER_FILE, self.optimizer.variables)
        self.epoch = state["epoch"]
        self.losses = list(state["losses"])


def checkpoint_folder(folder: str | Path) -> Path:
    """The checkpoint folder itself, given it or a training output folder containing `checkpoint/`."""
    folder = Path(folder)
    if not (folder / STATE_FILE).exists() and (folder / "checkpoint" / STATE_FILE).exists():
        folder = folder / "checkpoint"
    return folder


def read_state(folder: str | Path) -> dict:
    """A checkpoint's state.json with the configs rebuilt (`model_cfg`, `train_cfg`)."""
    folder = Path(folder)
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
        state["model_cfg"] = model_config(state["model"], "model")
        state["train_cfg"] = build(TrainingConfig, state["training"], "training")
        for key in ("epoch", "n_frames", "n_mels"):
            state[key] = int(state[key])
        state["losses"] = [float(v) for v in state.get("losses", [])]
    except FileNotFoundError:
        raise UserError(
            f"{folder}: not a model checkpoint (no {STATE_FILE}); "
            "point to a training output folder or its checkpoint/ folder"
        ) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, UserError) as exc:
        raise UserError(
            f"{path}: unreadable checkpoint ({exc.__class__.__name__}: {exc}); delete the folder and train again"
        ) from None
    return state


def _save_variables(path: Path, variables: list) -> None:
    arrays: dict[str, Any] = {
        f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)
    }  # not keras.ops.convert_to_numpy: NumPy 2 warns on its copy of a variable
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load_variables(path: Path, variables: list) -> None:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[f"v{i:05d}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({exc}); delete the folder and train again") from None
    if len(arrays) != len(variables) or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
        raise UserError(
            f"{path}: the saved variables do not match the model its configs describe; "
            "delete the folder and train again"
        )
    for v, a in zip(variables, arrays):
        v.assign(a)


def _resumable_state(
    ckpt: Path, model_cfg: ModelConfig, train_cfg: TrainingConfig, n_frames: int, n_mels: int, made_from: dict
) -> dict:
    """The checkpoint's state; refuses one written for another model, training setup, data shape or data."""
    state = read_state(ckpt)
    problems = []
    old_data = state.get("made_from") or {}
    changed = [k for k, v in made_from.items() if old_data.get(k) != v]
    if changed:
        problems.append(f"training data ({', '.join(f'{k} {old_data.get(k)} vs {made_from[k]}' for k in changed)})")
    if state["model_cfg"] != model_cfg:
        problems.append("model settings")
    ignore = set(RESUMABLE_CHANGES)
    old = {k: v for k, v in dataclasses.asdict(state["train_cfg"]).items() if k not in ignore}
    new = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in ignore}
    if old != new:
        problems.append("training settings")
    if (state["n_frames"], state["n_mels"]) != (n_frames, n_mels):
        problems.append(f"data shape ({state['n_frames']}x{state['n_mels']} frames x mels vs {n_frames}x{n_mels})")
    if problems:
        raise UserError(
            f"{ckpt}: the checkpoint's {' and '.join(problems)} differ from this run's; "
            "use a new output folder or delete it to start over"
        )
    return state
