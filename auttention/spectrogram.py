"""Mel spectrograms of clips, fixed to a common length, stored as Parquet keyed by file_name.

Values: mel power in dB relative to the clip's maximum, clipped at `clip_below` dB, then mapped
linearly from [clip_below, 0] dB to [-1, 1]. Shape of one clip: (frames, n_mels).

A spectrogram folder holds parquet/*.parquet (columns file_name, partition, label, n_frames,
spectrogram) and settings.json, written last: a folder without settings.json is incomplete.
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .config import SpectrogramConfig, build, to_dict
from .errors import UserError

AMIN = 1e-10  # power floor before the log, as librosa.power_to_db
SETTINGS = "settings.json"
PARQUET = "parquet"


@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def mel_spectrogram(audio: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """(frames, n_mels) float32 in [-1, 1]: mel power (of |STFT|^2, not the complex STFT) in dB re max.

    A clip with no energy at all (digital silence) maps to -1 everywhere instead of NaN/-inf.
    """
    import librosa

    if len(audio) < cfg.n_fft:
        # shorter than one window: zero-pad to one window so there is at least one whole frame
        audio = np.pad(audio, (0, cfg.n_fft - len(audio)))
    stft = librosa.stft(audio, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=cfg.window,
                        center=True, pad_mode="constant")
    power = stft.real ** 2 + stft.imag ** 2
    mel = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ power
    db = 10.0 * np.log10(np.maximum(mel, AMIN))
    peak = db.max()
    if peak <= 10.0 * np.log10(AMIN):
        return np.full((mel.shape[1], cfg.n_mels), -1.0, dtype=np.float32)
    db = np.maximum(db - peak, cfg.clip_below)
    scaled = 2.0 * (db - cfg.clip_below) / (-cfg.clip_below) - 1.0
    return np.ascontiguousarray(scaled.T, dtype=np.float32)


def n_frames(n_samples: int, cfg: SpectrogramConfig) -> int:
    """Frames `mel_spectrogram` makes of n_samples samples (centred framing)."""
    return 1 + max(n_samples, cfg.n_fft) // cfg.hop_length


def fix_length(spec: np.ndarray, frames: int, crop: str = "start") -> np.ndarray:
    """Crop or pad (with -1, the floor) a (T, F) spectrogram to exactly `frames` frames."""
    t = spec.shape[0]
    if t >= frames:
        start = 0 if crop == "start" else (t - frames) // 2
        return spec[start:start + frames]
    before = 0 if crop == "start" else (frames - t) // 2
    return np.pad(spec, ((before, frames - t - before), (0, 0)), constant_values=-1.0)


def max_seconds(cfg: SpectrogramConfig) -> float | None:
    """Seconds of audio needed for a fixed frame count cropped from the start (None: the whole clip)."""
    if isinstance(cfg.frames, int) and cfg.crop == "start":
        return (cfg.frames * cfg.hop_length + cfg.n_fft) / cfg.sample_rate
    return None


def clip_frames(path: str, cfg: SpectrogramConfig) -> int:
    """The clip's frame count before fixing its length, from the audio header alone."""
    from .corpus import audio_length

    return n_frames(audio_length(path, cfg.sample_rate), cfg)


def common_frames(corpus: pd.DataFrame, cfg: SpectrogramConfig) -> int:
    """The fixed length: cfg.frames, or the shortest *training* clip (never decided by test files)."""
    if isinstance(cfg.frames, int):
        return cfg.frames
    return min(clip_frames(p, cfg) for p in corpus.loc[corpus["partition"] == "train", "path"])


def spectrogram_batch(paths: Iterable[str], cfg: SpectrogramConfig, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode clips and compute their fixed-length spectrograms: (B, frames, n_mels), original lengths (B,)."""
    from threadpoolctl import threadpool_limits

    from .corpus import load_audio

    specs, lengths = [], []
    # one BLAS thread: clips run in parallel anyway, and the mel projection's float rounding then
    # does not depend on how many threads a worker happened to have (identical cache everywhere)
    with threadpool_limits(limits=1, user_api="blas"):
        for path in paths:
            spec = mel_spectrogram(load_audio(path, cfg.sample_rate, max_seconds(cfg)), cfg)
            lengths.append(spec.shape[0])
            specs.append(fix_length(spec, frames, cfg.crop))
    if not specs:
        return np.zeros((0, frames, cfg.n_mels), np.float32), np.zeros(0, np.int32)
    return np.stack(specs), np.asarray(lengths, np.int32)


def to_table(rows: pd.DataFrame, x: np.ndarray, lengths: np.ndarray):
    """An Arrow table of spectrograms with their keys (file_name, partition, label)."""
    import pyarrow as pa

    n, frames, n_mels = x.shape
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1))
    return pa.table({
        "file_name": pa.array(rows["file_name"].tolist(), pa.string()),
        "partition": pa.array(rows["partition"].tolist(), pa.string()),
        "label": pa.array(rows["label"].to_numpy(dtype=float), pa.float64(), from_pandas=True),
        "n_frames": pa.array(lengths, pa.int32()),
        "spectrogram": pa.FixedSizeListArray.from_arrays(flat, frames * n_mels),
    })


def settings(cfg: SpectrogramConfig, frames: int) -> dict[str, Any]:
    """What settings.json records: the spectrogram settings and the resulting shape of one clip."""
    return {"settings": to_dict(cfg), "frames": frames, "n_mels": cfg.n_mels}


def _chunk_worker(args: tuple[pd.DataFrame, dict, int]):
    rows, cfg_dict, frames = args
    x, lengths = spectrogram_batch(rows["path"], SpectrogramConfig(**cfg_dict), frames)
    return to_table(rows, x, lengths)


def extract(corpus: pd.DataFrame, cfg: SpectrogramConfig, out: str | os.PathLike, jobs: int | None = None) -> Path:
    """Compute every clip's spectrogram in `jobs` processes; write the folder `out` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io import atomic_dir, write_json

    jobs = jobs or os.cpu_count() or 1
    frames = common_frames(corpus, cfg)
    chunk = max(1, min(64, len(corpus) // (jobs * 4) or 1))
    tasks = [(corpus.iloc[i:i + chunk], to_dict(cfg), frames) for i in range(0, len(corpus), chunk)]
    if jobs == 1:
        tables = [_chunk_worker(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            tables = list(pool.map(_chunk_worker, tasks))
    with atomic_dir(out) as tmp:
        (tmp / PARQUET).mkdir()
        pq.write_table(pa.concat_tables(tables), tmp / PARQUET / "part-00000.parquet")
        write_json(tmp / SETTINGS, settings(cfg, frames))
    return Path(out)


@dataclass
class Spectrograms:
    """Spectrograms of a corpus: x (N, T, F) float32 with file_name, partition, label per row."""

    file_name: np.ndarray
    partition: np.ndarray
    label: np.ndarray
    x: np.ndarray
    settings: dict[str, Any]

    def select(self, partitions: str | Iterable[str]) -> "Spectrograms":
        """The rows of one or more partitions (e.g. 'train' or ('train', 'devel'))."""
        parts = [partitions] if isinstance(partitions, str) else list(partitions)
        mask = np.isin(self.partition, parts)
        return Spectrograms(self.file_name[mask], self.partition[mask], self.label[mask], self.x[mask], self.settings)

    @property
    def config(self) -> SpectrogramConfig:
        """The settings they were computed with."""
        return build(SpectrogramConfig, self.settings["settings"], "spectrogram")


def is_complete(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a finished extraction."""
    return (Path(folder) / SETTINGS).is_file() and (Path(folder) / PARQUET).is_dir()


def read(folder: str | os.PathLike) -> Spectrograms:
    """Read a spectrogram folder written by `extract` (or by the Ray Data extraction)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not is_complete(folder):
        raise UserError(f"{folder}: no finished spectrograms here; create them with "
                        f"`auttention-search extract --out {folder}`")
    try:
        meta = json.loads((folder / SETTINGS).read_text())
        table = pq.read_table(folder / PARQUET).sort_by("file_name")
    except Exception as exc:  # json/pyarrow raise several types for a damaged file
        raise UserError(f"{folder}: cannot read the spectrograms ({str(exc).splitlines()[0]}); "
                        f"delete the folder and extract again") from None
    frames, n_mels = meta["frames"], meta["n_mels"]
    values = table.column("spectrogram").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    x = values.astype(np.float32, copy=False).reshape(len(table), frames, n_mels)
    label = table.column("label").to_numpy(zero_copy_only=False).astype(float)
    return Spectrograms(np.asarray(table.column("file_name").to_pylist(), dtype=object),
                        np.asarray(table.column("partition").to_pylist(), dtype=object), label, x, meta)
