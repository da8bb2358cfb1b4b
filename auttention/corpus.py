"""A corpus on disk: ComParE layout (wav/ + lab/labels.csv) or a manifest CSV; and audio decoding.

A corpus is a pandas DataFrame with one row per clip: file_name, path (absolute), partition
(train | devel | test) and label (float; NaN where unknown, e.g. ComParE's '?' test labels).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError

PARTITIONS = ("train", "devel", "test")
UNKNOWN_LABELS = {"?", ""}


def read_corpus(data: str | os.PathLike, labels: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a corpus: a ComParE folder (wav/, lab/labels.csv) or a manifest CSV (file,label,partition)."""
    data = Path(data)
    if data.is_file():
        return _read_manifest(data)
    if not data.is_dir():
        raise UserError(f"{data}: no such corpus folder or manifest CSV")
    labels = Path(labels) if labels else data / "lab" / "labels.csv"
    wav_dir = data / "wav"
    if not labels.is_file():
        raise UserError(f"{labels}: label file not found; a ComParE corpus has lab/labels.csv "
                        f"(file_name,label), or pass a manifest CSV (file,label,partition)")
    if not wav_dir.is_dir():
        raise UserError(f"{wav_dir}: audio folder not found; a ComParE corpus keeps its clips in wav/")
    table = _read_csv(labels, ("file_name", "label"))
    rows = []
    for line, (name, label) in enumerate(zip(table["file_name"], table["label"]), start=2):
        path = _safe_path(wav_dir, name, labels, line)
        prefix = name.split("_", 1)[0] if "_" in name else ""
        if prefix not in PARTITIONS:
            raise UserError(f"{labels}, line {line}: file name {name!r} does not start with train_, devel_ "
                            f"or test_, so its partition is unknown; rename it or use a manifest CSV "
                            f"with a partition column")
        rows.append((name, path, prefix, _parse_label(label, labels, line)))
    return _finish(rows, labels)


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """A label table (file_name, label as float, NaN for '?') from a ComParE labels.csv or a manifest."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    header = _read_csv(path, ())
    name_col = "file_name" if "file_name" in header.columns else "file"
    table = _read_csv(path, (name_col, "label"))
    labels = [_parse_label(v, path, line) for line, v in enumerate(table["label"], start=2)]
    return pd.DataFrame({"file_name": table[name_col], "label": labels})


def _read_manifest(manifest: Path) -> pd.DataFrame:
    table = _read_csv(manifest, ("file", "label", "partition"))
    root = manifest.parent
    rows = []
    for line, (name, label, part) in enumerate(zip(table["file"], table["label"], table["partition"]), start=2):
        if part not in PARTITIONS:
            raise UserError(f"{manifest}, line {line}: partition {part!r} must be one of {', '.join(PARTITIONS)}")
        rows.append((name, _safe_path(root, name, manifest, line), part, _parse_label(label, manifest, line)))
    return _finish(rows, manifest)


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected a header "
                        f"{','.join(columns)} (found {','.join(table.columns) or 'none'})")
    if table.empty:
        raise UserError(f"{path}: has a header but no rows")
    for c in columns:
        table[c] = table[c].str.strip()
    return table


def _safe_path(root: Path, name: str, source: Path, line: int) -> Path:
    """The clip's path under root; refuses names that escape it (.., absolute paths, symlinks out)."""
    if not name:
        raise UserError(f"{source}, line {line}: empty file name")
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UserError(f"{source}, line {line}: file name {name!r} points outside the corpus folder; "
                        f"use a path relative to {root}")
    root_real = root.resolve()
    path = (root / candidate).resolve()
    if root_real != path and root_real not in path.parents:
        raise UserError(f"{source}, line {line}: {name!r} resolves outside the corpus folder "
                        f"(a symlink out?); copy the file into {root}")
    if not path.is_file():
        raise UserError(f"{source}, line {line}: audio file {root / candidate} not found; "
                        f"add it or remove its row")
    return path


def _parse_label(value: str, source: Path, line: int) -> float:
    if value in UNKNOWN_LABELS:
        return math.nan
    try:
        label = float(value)
    except ValueError:
        raise UserError(f"{source}, line {line}: label {value!r} is not a number (use '?' for unknown)") from None
    if not math.isfinite(label):
        raise UserError(f"{source}, line {line}: label {value!r} is not finite (use '?' for unknown)")
    return label


def _finish(rows: list, source: Path) -> pd.DataFrame:
    corpus = pd.DataFrame(rows, columns=["file_name", "path", "partition", "label"])
    dup = corpus["file_name"][corpus["file_name"].duplicated()]
    if len(dup):
        raise UserError(f"{source}: file name {dup.iloc[0]!r} is listed more than once "
                        f"({len(dup)} duplicate row(s)); keep one row per clip")
    for part in ("train", "devel"):
        if not (corpus["partition"] == part).any():
            raise UserError(f"{source}: the {part} partition is empty; the SVR needs labelled train and devel clips")
        unknown = corpus[(corpus["partition"] == part) & corpus["label"].isna()]
        if len(unknown):
            raise UserError(f"{source}: {part} clip {unknown['file_name'].iloc[0]} has no label "
                            f"({len(unknown)} such); train and devel clips need numeric labels")
    corpus["path"] = corpus["path"].map(str)
    return corpus.sort_values("file_name", kind="stable").reset_index(drop=True)


def load_audio(path: str | os.PathLike, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode a clip (WAV/FLAC/OGG, any rate, any channels) to mono float32 at `sample_rate` Hz.

    Only the first `max_seconds` are decoded when given, so memory stays bounded on long recordings.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            native = f.samplerate
            frames = f.frames if max_seconds is None else min(f.frames, int(math.ceil(max_seconds * native)))
            audio = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: cannot decode audio ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        f"check the file or remove it from the labels") from None
    if audio.size == 0:
        raise UserError(f"{path}: the audio is empty (0 samples); remove it from the labels")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(mono).all():
        raise UserError(f"{path}: the audio contains NaN or infinite samples; re-export the file")
    if native != sample_rate:
        import soxr

        target = resampled_length(len(mono), native, sample_rate)
        mono = soxr.resample(mono, native, sample_rate, quality="HQ").astype(np.float32, copy=False)
        # pin the length so it can be known from the header alone (see resampled_length)
        mono = mono[:target] if len(mono) >= target else np.pad(mono, (0, target - len(mono)))
    return np.ascontiguousarray(mono, dtype=np.float32)


def resampled_length(n_samples: int, native_rate: int, sample_rate: int) -> int:
    """Samples after resampling n_samples from native_rate to sample_rate."""
    return int(round(n_samples * sample_rate / native_rate))


def audio_length(path: str | os.PathLike, sample_rate: int, max_seconds: float | None = None) -> int:
    """Samples `load_audio(path, sample_rate, max_seconds)` will return, read from the header only."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: cannot decode audio ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        f"check the file or remove it from the labels") from None
    frames = info.frames
    if max_seconds is not None:
        frames = min(frames, int(math.ceil(max_seconds * info.samplerate)))
    return frames if info.samplerate == sample_rate else resampled_length(frames, info.samplerate, sample_rate)
