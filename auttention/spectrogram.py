"""Mel spectrograms of clips, fixed to a common length, stored as Parquet keyed by file_name.

Values: mel power in dB relative to the clip's maximum, clipped at `clip_below` dB, then mapped
linearly from [clip_below, 0] dB to [-1, 1]. Shape of one clip: (frames, n_mels).
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
FILE = "spectrograms.parquet"


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


def spectrogram_of_file(path: str, cfg: SpectrogramConfig) -> np.ndarray:
    """Decode one clip and compute its (variable-length) spectrogram."""
    from .corpus import load_audio

    return mel_spectrogram(load_audio(path, cfg.sample_rate, max_seconds(cfg)), cfg)


def common_frames(lengths: pd.Series, partitions: pd.Series, cfg: SpectrogramConfig) -> int:
    """The fixed length: cfg.frames, or the shortest *training* clip (never decided by test files)."""
    if isinstance(cfg.frames, int):
        return cfg.frames
    return int(lengths[partitions == "train"].min())


def _worker(args: tuple[str, dict]) -> np.ndarray:
    path, settings = args
    return spectrogram_of_file(path, SpectrogramConfig(**settings))


def extract(corpus: pd.DataFrame, cfg: SpectrogramConfig, out: str | os.PathLike, jobs: int | None = None) -> Path:
    """Compute every clip's spectrogram in `jobs` processes and write them to out/spectrograms.parquet."""
    jobs = jobs or os.cpu_count() or 1
    tasks = [(p, to_dict(cfg)) for p in corpus["path"]]
    if jobs == 1:
        specs = [_worker(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            specs = list(pool.map(_worker, tasks, chunksize=max(1, len(tasks) // (jobs * 8))))
    lengths = pd.Series([s.shape[0] for s in specs], index=corpus.index)
    frames = common_frames(lengths, corpus["partition"], cfg)
    fixed = np.stack([fix_length(s, frames, cfg.crop) for s in specs])
    return write(out, corpus, fixed, lengths.to_numpy(), cfg)


def write(out: str | os.PathLike, corpus: pd.DataFrame, x: np.ndarray, lengths: Iterable[int],
          cfg: SpectrogramConfig) -> Path:
    """Write spectrograms (N, T, F) with file_name, partition, label to out/spectrograms.parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io import atomic_path, write_json

    out = Path(out)
    n, frames, n_mels = x.shape
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1))
    meta = {"settings": to_dict(cfg), "frames": frames, "n_mels": n_mels}
    table = pa.table({
        "file_name": pa.array(corpus["file_name"].tolist(), pa.string()),
        "partition": pa.array(corpus["partition"].tolist(), pa.string()),
        "label": pa.array(corpus["label"].to_numpy(dtype=float), pa.float64(), from_pandas=True),
        "n_frames": pa.array(np.asarray(list(lengths), dtype=np.int32)),
        "spectrogram": pa.FixedSizeListArray.from_arrays(flat, frames * n_mels),
    }).replace_schema_metadata({"auttention": json.dumps(meta)})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / FILE) as tmp:
        pq.write_table(table, tmp)
    write_json(out / "settings.json", meta)
    return out


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


def from_table(table) -> Spectrograms:
    """Spectrograms from an Arrow table written by `write` (or by the Ray Data extraction)."""
    meta_raw = (table.schema.metadata or {}).get(b"auttention")
    if meta_raw is None:
        raise UserError("the Parquet data carries no auttention metadata; re-run `auttention-search extract`")
    meta = json.loads(meta_raw)
    table = table.sort_by("file_name")
    frames, n_mels = meta["frames"], meta["n_mels"]
    values = table.column("spectrogram").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    x = values.astype(np.float32, copy=False).reshape(len(table), frames, n_mels)
    label = table.column("label").to_numpy(zero_copy_only=False).astype(float)
    return Spectrograms(np.asarray(table.column("file_name").to_pylist(), dtype=object),
                        np.asarray(table.column("partition").to_pylist(), dtype=object), label, x, meta)


def read(folder: str | os.PathLike) -> Spectrograms:
    """Read spectrograms written by `extract` from a folder."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    path = folder / FILE
    if not path.is_file():
        raise UserError(f"{folder}: no {FILE} here; create it with `auttention-search extract --out {folder}`")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: cannot read it ({str(exc).splitlines()[0]}); re-run the extraction") from None
    return from_table(table)
