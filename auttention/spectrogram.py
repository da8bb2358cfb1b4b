"""Mel spectrograms of clips in rows of a common length, stored as Parquet keyed by file_name.

Values: mel power in dB relative to the clip's maximum, clipped at `clip_below` dB, then mapped
linearly from [clip_below, 0] dB to [-1, 1]. Shape of one row: (frames, n_mels). By default
(`frames: train_max`) a row holds a whole clip, padded with -1 up to the longest training clip;
`length` says how many frames are real, and the models mask the rest. A clip longer than
`max_seconds` becomes several rows (chunks).

A spectrogram folder holds parquet/*.parquet (columns file_name, partition, label (as extracted;
the pipeline and the search join the corpus' current labels by file name), chunk, length,
n_frames, spectrogram, error: set on rows of clips with bad audio, which `read` leaves out) and
settings.json (settings, their hash, the corpus fingerprint), written last: a folder without
settings.json is incomplete. extraction.extract writes it (whichever its executor); this module
computes the rows (`spectrogram_table`, the one worker function) and reads a folder back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from threadpoolctl import ThreadpoolController

from .audio import BadAudio, audio_length, iter_audio, load_audio
from .config import SpectrogramConfig, build, to_dict
from .errors import UserError
from .storage import as_location

AMIN = 1e-10  # power floor before the log, as librosa.power_to_db
SETTINGS = "settings.json"
PARQUET = "parquet"
STREAM_BLOCK = 1 << 18  # samples per STFT call when a clip is streamed (bounded memory on long clips)
# how every part is written (pyarrow.parquet.write_table's, and Ray Data's write_parquet's, options):
# uncompressed, as float spectrograms barely compress and read back faster without it
PARQUET_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": ["file_name", "partition", "error"]}


# Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above
_F_SP, _MIN_LOG_HZ = 200.0 / 3, 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(frequency: float):
    hz = np.asarray(frequency, dtype=float)
    return _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP if hz >= _MIN_LOG_HZ else hz / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _F_SP * mels
    log = mels >= _MIN_LOG_MEL
    hz[log] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log] - _MIN_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) (Slaney scale and area norm, float32), computed
    the same way, so identical to the bit, without importing librosa and scipy.signal (a second or two
    in every fresh extraction worker)."""
    fmax = float(sample_rate) / 2 if fmax is None else fmax
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):  # triangles from band edge to centre to edge
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]  # equal area
    if not np.all((mel_f[:-2] == 0) | (weights.max(axis=1) > 0)):
        logging.getLogger(__name__).warning(
            f"warning: spectrogram: some of the {n_mels} mel bands hold no FFT bin (n_fft {n_fft} at {sample_rate} Hz) "
            f"and stay empty; lower spectrogram.n_mels or raise spectrogram.n_fft"
        )
    return weights


@functools.lru_cache(maxsize=16)
def _sparse_mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None):
    """The filterbank as a sparse matrix: each band spans a few FFT bins (about 2% of a dense
    n_mels x (n_fft/2 + 1) matrix is non-zero), so the projection costs a fraction of a dense one."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(_mel_basis(sample_rate, n_fft, n_mels, fmin, fmax))


_WINDOWS = {"hamming": np.hamming, "hann": np.hanning, "blackman": np.blackman}


@functools.lru_cache(maxsize=16)
def _window(kind: str, n_fft: int) -> np.ndarray:
    """The periodic window of librosa.stft (scipy.signal.get_window(kind, n_fft, fftbins=True)), in float32."""
    return _WINDOWS[kind](n_fft + 1)[:-1].astype(np.float32)


def mel_spectrogram(audio: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """(frames, n_mels) float32 in [-1, 1]: mel power (of |STFT|^2, not the complex STFT) in dB re max.

    A clip with no energy at all (digital silence) maps to -1 everywhere instead of NaN/-inf.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < cfg.n_fft:
        # shorter than one window: zero-pad to one window so there is at least one whole frame
        audio = np.pad(audio, (0, cfg.n_fft - len(audio)))
    # centred framing, as librosa.stft(center=True, pad_mode="constant"): half a window of zeros each side
    mel = _mel_power(np.pad(audio, cfg.n_fft // 2), cfg)
    return _scale(mel, mel.max(), cfg)


def _mel_power(audio: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """(n_mels, frames) mel power of every whole window of `audio` (hop cfg.hop_length, no padding).

    The frames of librosa.stft(center=False), computed here in float32 with one FFT thread and a
    sparse filterbank: about twice as fast per clip, equal to 1e-5 on the [-1, 1] scale.
    """
    import scipy.fft

    frames = np.lib.stride_tricks.sliding_window_view(audio, cfg.n_fft)[:: cfg.hop_length]
    spectrum = scipy.fft.rfft(frames * _window(cfg.window, cfg.n_fft), axis=1, workers=1)
    power = spectrum.real**2 + spectrum.imag**2  # (frames, 1 + n_fft // 2)
    basis = _sparse_mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    return np.asarray(basis @ power.T, dtype=np.float32)


def _scale(mel: np.ndarray, peak: float, cfg: SpectrogramConfig) -> np.ndarray:
    """(n_mels, T) mel power -> (T, n_mels) in [-1, 1], dB relative to `peak` (the clip's maximum power).

    2 (dB - clip_below) / -clip_below - 1 with dB = max(10 log10(max(mel, AMIN) / peak), clip_below),
    computed in place in one buffer with the natural log (vectorised in NumPy, faster than log10).
    """
    peak_db = 10.0 * np.log10(max(float(peak), AMIN))
    if peak_db <= 10.0 * np.log10(AMIN):
        return np.full((mel.shape[1], cfg.n_mels), -1.0, dtype=np.float32)
    span = -float(cfg.clip_below)
    out = np.maximum(mel, np.float32(AMIN), dtype=np.float32)
    np.log(out, out=out)
    out *= np.float32(20.0 / (np.log(10.0) * span))  # ln -> dB -> 2 dB / span
    out += np.float32(1.0 - 2.0 * peak_db / span)
    np.maximum(out, np.float32(-1.0), out=out)
    return np.ascontiguousarray(out.T)


def streamed_mel_spectrogram(
    chunks: Iterable[np.ndarray], cfg: SpectrogramConfig, keep_start: int = 0, keep_stop: int | None = None
) -> tuple[np.ndarray, int]:
    """mel_spectrogram of the concatenated `chunks`, but only frames [keep_start, keep_stop) are kept.

    Returns those frames (scaled re the maximum of the *whole* clip, as mel_spectrogram does) and the
    clip's total frame count. Memory: a block of frames plus the kept ones, whatever the clip's length.
    """
    n_fft, hop, half = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
    block = max(1, STREAM_BLOCK // hop)  # frames per STFT call
    stop = keep_stop if keep_stop is not None else sys.maxsize
    kept: list[np.ndarray] = []
    peak = 0.0
    done = n_audio = 0  # frames computed, audio samples seen

    def frames_of(buf: np.ndarray) -> np.ndarray:
        """Compute every whole frame `buf` holds (it starts at frame `done`); return what is left of it."""
        nonlocal peak, done
        count = 0 if len(buf) < n_fft else 1 + (len(buf) - n_fft) // hop
        for first in range(0, count, block):
            b = min(block, count - first)
            seg = buf[first * hop : first * hop + (b - 1) * hop + n_fft]
            mel = _mel_power(seg, cfg)
            peak = max(peak, float(mel.max()))
            lo, hi = max(keep_start - done, 0), min(stop - done, b)
            if hi > lo:
                kept.append(mel[:, lo:hi])
            done += b
        return buf[count * hop :]

    buf = np.zeros(half, np.float32)  # centred framing: half a window of zeros before the clip
    for chunk in chunks:
        n_audio += len(chunk)
        buf = frames_of(np.concatenate([buf, chunk]))
    # a clip shorter than one window is zero-padded to one window; then half a window after it
    buf = frames_of(np.concatenate([buf, np.zeros(max(0, n_fft - n_audio) + half, np.float32)]))
    mel = np.concatenate(kept, axis=1) if kept else np.zeros((cfg.n_mels, 0), np.float32)
    return _scale(mel, peak, cfg), done


def n_frames(n_samples: int, cfg: SpectrogramConfig) -> int:
    """Frames `mel_spectrogram` makes of n_samples samples (centred framing)."""
    return 1 + max(n_samples, cfg.n_fft) // cfg.hop_length


def fix_length(mel: np.ndarray, frames: int, crop: str = "start") -> np.ndarray:
    """Crop or pad (with -1, the floor) a (T, F) spectrogram to exactly `frames` frames."""
    t = mel.shape[0]
    if t >= frames:
        start = 0 if crop == "start" else (t - frames) // 2
        return mel[start : start + frames]
    before = 0 if crop == "start" else (frames - t) // 2
    return np.pad(mel, ((before, frames - t - before), (0, 0)), constant_values=-1.0)


def crop_seconds(cfg: SpectrogramConfig) -> float | None:
    """Seconds of audio needed for a fixed frame count cropped from the start (None: the whole clip)."""
    if isinstance(cfg.frames, int) and cfg.crop == "start":
        return (cfg.frames * cfg.hop_length + cfg.n_fft) / cfg.sample_rate
    return None


def cap_frames(cfg: SpectrogramConfig) -> int:
    """Frames of spectrogram.max_seconds of audio: the longest row under frames: train_max."""
    return n_frames(round(cfg.max_seconds * cfg.sample_rate), cfg)


def chunk_hop(cfg: SpectrogramConfig, frames: int) -> int:
    """Frames between the starts of a long clip's chunks (train_max)."""
    if cfg.chunk_hop_seconds is None:
        return frames
    return max(1, min(frames, round(cfg.chunk_hop_seconds * cfg.sample_rate / cfg.hop_length)))


def clip_frames(path: str, cfg: SpectrogramConfig) -> int:
    """The clip's frame count before fixing its length, from the audio header alone."""

    return n_frames(audio_length(path, cfg.sample_rate), cfg)


def chunk_starts(total: int, frames: int, hop: int) -> list[int]:
    """Where the chunks of a clip of `total` frames start: every `hop` frames, the last one flush with the
    clip's end, so that every chunk is whole and every frame is in one (auDeep's fixed windows)."""
    if total <= frames:
        return [0]
    starts = list(range(0, total - frames + 1, hop))
    if starts[-1] != total - frames:
        starts.append(total - frames)
    return starts


def common_frames(corpus: pd.DataFrame, cfg: SpectrogramConfig, warn: Callable[[str], None] | None = None) -> int:
    """The length of a row: cfg.frames, the shortest *training* clip (train_min) or the longest one
    capped at max_seconds (train_max); never decided by devel or test files. Under train_max, clips
    past the cap (in any partition) are named in one `warn` line: they become chunks."""
    if isinstance(cfg.frames, int):
        return cfg.frames
    if cfg.frames == "train_min":
        return min(clip_frames(p, cfg) for p in corpus.loc[corpus["partition"] == "train", "path"])
    counts = [clip_frames(p, cfg) for p in corpus["path"]]  # one header read per clip
    cap = cap_frames(cfg)
    frames = min(max(c for c, part in zip(counts, corpus["partition"]) if part == "train"), cap)
    if warn is not None:
        longer = [n for n, c in zip(corpus["file_name"], counts) if c > frames]
        if longer and frames == cap:
            hop = chunk_hop(cfg, frames) * cfg.hop_length / cfg.sample_rate
            warn(
                f"warning: {len(longer)} clip(s) are longer than spectrogram.max_seconds = {cfg.max_seconds:g} s "
                f"(e.g. {longer[0]}): each is cut into chunks of {cfg.max_seconds:g} s every {hop:g} s, and its "
                f"features are the mean over its chunks; raise max_seconds to keep them whole"
            )
    return frames


def clip_spectrogram(path: str, cfg: SpectrogramConfig, frames: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One clip's rows: (K, frames, n_mels) spectrograms, (K,) real frames per row, and the clip's frame count.

    train_max: the whole clip, padded with -1 (the floor) to `frames` (one row), or cut into whole
    chunks when it is longer (K rows). A number of frames or train_min: one row, cropped per cfg.crop
    or padded. Decodes only what the kept frames need when they are the first ones of a fixed count;
    otherwise streams the clip, so a long recording costs no more memory than the frames kept.
    Raises BadAudio for a clip that cannot be decoded or holds NaN/Inf samples.
    """

    seconds = crop_seconds(cfg)
    if seconds is not None:
        mel = mel_spectrogram(load_audio(path, cfg.sample_rate, seconds), cfg)
        return fix_length(mel, frames, cfg.crop)[None], np.asarray([min(frames, mel.shape[0])]), mel.shape[0]
    if cfg.frames == "train_max":
        mel, count = streamed_mel_spectrogram(iter_audio(path, cfg.sample_rate, STREAM_BLOCK), cfg)
        starts = chunk_starts(count, frames, chunk_hop(cfg, frames))
        rows = np.stack([fix_length(mel[s : s + frames], frames, "start") for s in starts])
        return rows, np.asarray([min(frames, count - s) for s in starts]), count
    # centre crop: where the kept frames start, from the header (a start crop needs no header read)
    start = 0 if cfg.crop == "start" else max(0, (n_frames(audio_length(path, cfg.sample_rate), cfg) - frames) // 2)
    mel, count = streamed_mel_spectrogram(iter_audio(path, cfg.sample_rate, STREAM_BLOCK), cfg, start, start + frames)
    return fix_length(mel, frames, cfg.crop)[None], np.asarray([min(frames, count)]), count


@functools.lru_cache(maxsize=1)
def _threadpools():
    """One threadpoolctl controller per process: threadpool_limits() scans every loaded library at
    each call (milliseconds per batch of clips in a worker that has pandas, pyarrow and scipy loaded)."""

    return ThreadpoolController()


@functools.lru_cache(maxsize=1)
def _keep_freed_memory() -> None:
    """Let glibc's malloc keep (up to 64 MiB of) freed memory instead of returning it to the system.

    Each clip allocates and frees a few MB of temporaries (audio, frames, FFT). With glibc's default
    thresholds, a fresh process hands that memory back after every clip and takes it again as page
    faults: about 1000 per clip, 40% of a worker's extraction time. Elsewhere (not glibc) a no-op.
    """

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 16 << 20)  # blocks under 16 MiB from the heap, not a fresh mmap each
    mallopt(m_trim_threshold, 64 << 20)  # keep up to 64 MiB free at the top of the heap


def spectrogram_table(rows: pd.DataFrame, cfg: SpectrogramConfig, frames: int):
    """to_table of the clips in `rows` (one row per chunk); a clip with bad audio gets one row of -1
    with its reason in `error`.

    Extraction never stops at a bad clip: the caller applies the --on-bad-audio policy to all of
    them at once (see bad_clips), so a user learns every bad file in one go.
    """

    _keep_freed_memory()
    parts, lengths, totals, owners, chunks = [], [], [], [], []
    errors: list[str | None] = []
    # one BLAS thread: clips run in parallel anyway, and float rounding then does not depend on how
    # many threads a worker happened to have (identical cache everywhere)
    with _threadpools().limit(limits=1, user_api="blas"):
        for i, path in enumerate(rows["path"]):
            try:
                x, length, total = clip_spectrogram(path, cfg, frames)
                error = None
            except BadAudio as exc:
                x, length, total, error = np.full((1, frames, cfg.n_mels), -1.0, np.float32), np.zeros(1), 0, exc.reason
            parts.append(x)
            lengths.append(length)
            totals += [total] * len(x)
            owners += [i] * len(x)
            chunks += list(range(len(x)))
            errors += [error] * len(x)
    x = np.concatenate(parts) if parts else np.zeros((0, frames, cfg.n_mels), np.float32)
    length = np.concatenate(lengths) if lengths else np.zeros(0)
    return to_table(rows.iloc[owners], x, length, np.asarray(totals), np.asarray(chunks), errors)


def bad_clips(table) -> dict[str, str]:
    """{file_name: reason} of the rows of an extraction table (or of its file_name, error columns) with bad audio."""
    if "error" not in table.column_names:
        return {}
    return {n: e for n, e in zip(table.column("file_name").to_pylist(), table.column("error").to_pylist()) if e}


def to_table(
    rows: pd.DataFrame,
    x: np.ndarray,
    length: np.ndarray,
    n_frames: np.ndarray,
    chunk: np.ndarray,
    errors: list[str | None] | None = None,
):
    """An Arrow table of spectrogram rows: their clip (file_name, partition, label at extraction), chunk
    index, real frames (`length`), the clip's frame count (`n_frames`) and bad-audio reasons."""

    n, frames, n_mels = x.shape
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1))
    return pa.table(
        {
            "file_name": pa.array(rows["file_name"].tolist(), pa.string()),
            "partition": pa.array(rows["partition"].tolist(), pa.string()),
            "label": pa.array(rows["label"].to_numpy(dtype=float), pa.float64(), from_pandas=True),
            "chunk": pa.array(np.asarray(chunk, np.int32), pa.int32()),
            "length": pa.array(np.asarray(length, np.int32), pa.int32()),
            "n_frames": pa.array(np.asarray(n_frames, np.int32), pa.int32()),
            "spectrogram": pa.FixedSizeListArray.from_arrays(flat, frames * n_mels),
            "error": pa.array(errors if errors is not None else [None] * n, pa.string()),
        }
    )


def write_part(table, where) -> None:
    """One Parquet file of a spectrogram folder at `where` (a path, a URI or a storage.Location)."""

    where = _folder(where)
    pq.write_table(table, where.path, filesystem=where.fs, **PARQUET_OPTIONS)


def settings(cfg: SpectrogramConfig, frames: int, corpus: str, skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """What settings.json records: the spectrogram settings and their hash, the corpus fingerprint
    (see corpus.fingerprint), the shape of one row, and the clips left out for bad audio
    ({file_name: reason}; only ever non-empty under --on-bad-audio skip)."""
    return {
        "settings": to_dict(cfg),
        "settings_hash": cfg.hash(),
        "corpus": corpus,
        "frames": frames,
        "n_mels": cfg.n_mels,
        "skipped": dict(sorted((skipped or {}).items())),
    }


@dataclass
class Spectrograms:
    """Spectrogram rows of a corpus: x (R, T, F) float32, with per row its clip's file_name, partition
    and label, its chunk index and its real frames (`length`; the rest of the row is padding)."""

    file_name: np.ndarray
    partition: np.ndarray
    label: np.ndarray
    x: np.ndarray
    length: np.ndarray
    chunk: np.ndarray
    settings: dict[str, Any]
    speaker: np.ndarray | None = None  # each row's speaker where the corpus names them (see with_labels)

    def select(self, partitions: str | Iterable[str]) -> Spectrograms:
        """The rows of one or more partitions (e.g. 'train' or ('train', 'devel'))."""
        parts = [partitions] if isinstance(partitions, str) else list(partitions)
        found = np.flatnonzero(np.isin(self.partition, parts))
        rows: np.ndarray | slice = found
        if len(found) and found[-1] - found[0] + 1 == len(found):
            # contiguous (`read` orders the rows so that every fit_on choice is): views, not copies;
            # in a trial, x stays a view of the one copy in the Ray object store
            rows = slice(int(found[0]), int(found[-1]) + 1)
        return Spectrograms(
            self.file_name[rows],
            self.partition[rows],
            self.label[rows],
            self.x[rows],
            self.length[rows],
            self.chunk[rows],
            self.settings,
            None if self.speaker is None else self.speaker[rows],
        )

    def with_labels(self, corpus: pd.DataFrame) -> Spectrograms:
        """The same rows with the labels of `corpus` (file_name, label, and speaker where it has that
        column), joined by file name: labels and speakers are not part of the spectrograms, so
        relabelling a corpus, or giving it a speaker list, reuses them."""
        table = corpus.set_index("file_name")["label"]
        missing = sorted(set(self.file_name) - set(table.index))
        if missing:
            raise UserError(
                f"the corpus has no row for {len(missing)} clip(s) of the spectrograms, e.g. "
                f"{missing[0]}; extract them again from this corpus"
            )
        label = table.reindex(self.file_name).to_numpy(dtype=float)
        speaker = None
        if "speaker" in corpus.columns:
            speaker = corpus.set_index("file_name")["speaker"].reindex(self.file_name).to_numpy(dtype=object)
        return dataclasses.replace(self, label=label, speaker=speaker)

    @property
    def clips(self) -> int:
        """Number of clips (a clip may have several rows, its chunks)."""
        return len(set(self.file_name))

    @property
    def corpus(self) -> str | None:
        """The fingerprint of the corpus they were made from."""
        return self.settings.get("corpus")

    @property
    def provenance(self) -> dict[str, Any]:
        """What they were made from: the corpus fingerprint and the spectrogram settings' hash."""
        return {"corpus": self.corpus, "spectrogram": self.settings.get("settings_hash") or self.config.hash()}

    @property
    def skipped(self) -> dict[str, str]:
        """{file_name: reason} of the corpus' clips left out for bad audio (--on-bad-audio skip)."""
        return self.settings.get("skipped") or {}

    @property
    def config(self) -> SpectrogramConfig:
        """The settings they were computed with."""
        return build(SpectrogramConfig, self.settings["settings"], "spectrogram")


def _folder(folder):

    return as_location(folder)


def is_complete(folder) -> bool:
    """Whether `folder` (a path, an s3:// / gs:// URI or a storage.Location) holds a finished extraction:
    its settings.json is there (written last) and its parquet/ parts."""
    folder = _folder(folder)
    return (folder / SETTINGS).is_file() and (folder / PARQUET).is_dir()


def made_from(folder) -> dict[str, Any] | None:
    """settings.json of a finished spectrogram folder (None if unfinished or unreadable)."""
    folder = _folder(folder)
    if not is_complete(folder):
        return None
    try:
        return json.loads((folder / SETTINGS).read_text())
    except (OSError, ValueError):
        return None


def read_table(folder):
    """(settings.json, Arrow table) of a finished spectrogram folder, local or on object storage: its
    rows with good audio, ordered test, devel, train, then by file name and chunk, so that each
    partition, and train + devel, is a contiguous block (`Spectrograms.select` then gives views)."""

    folder = _folder(folder)
    if not is_complete(folder):
        raise UserError(
            f"{folder}: no finished spectrograms here; create them with `auttention-search extract --out {folder}`"
        )
    try:
        meta = json.loads((folder / SETTINGS).read_text())
        table = pq.read_table((folder / PARQUET).path, filesystem=folder.fs)
        if "chunk" not in table.column_names:
            raise ValueError("written by an older version")
        rank = {"test": 0, "devel": 1, "train": 2}
        names = np.asarray(table.column("file_name").to_pylist(), dtype=object)
        ranks = np.asarray([rank.get(p, 3) for p in table.column("partition").to_pylist()])
        chunks = table.column("chunk").to_numpy()
        table = table.take(np.lexsort((chunks, names, ranks)))
    except Exception as exc:  # noqa: BLE001 - json/pyarrow raise several types for a damaged file: one line
        raise UserError(
            f"{folder}: cannot read the spectrograms ({str(exc).splitlines()[0]}); delete the folder and extract again"
        ) from None
    if "error" in table.column_names:  # rows of clips with bad audio (skipped) carry no spectrogram
        table = table.filter(pc.is_null(table.column("error")))
    return meta, table.combine_chunks()


def from_table(meta: dict[str, Any], table) -> Spectrograms:
    """Spectrograms over the rows of `read_table`'s table; x is a view of its buffer where it can be
    (one chunk, as read_table and a memory-mapped node copy give), so no copy is made."""
    frames, n_mels = meta["frames"], meta["n_mels"]
    column = table.column("spectrogram")
    values = (column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()).flatten()
    values = values.to_numpy(zero_copy_only=False)
    x = values.astype(np.float32, copy=False).reshape(len(table), frames, n_mels)
    label = table.column("label").to_numpy(zero_copy_only=False).astype(float)
    return Spectrograms(
        np.asarray(table.column("file_name").to_pylist(), dtype=object),
        np.asarray(table.column("partition").to_pylist(), dtype=object),
        label,
        x,
        table.column("length").to_numpy().astype(np.int32),
        table.column("chunk").to_numpy().astype(np.int32),
        meta,
    )


def read(folder) -> Spectrograms:
    """Read a spectrogram folder (a path, an s3:// / gs:// URI or a storage.Location) written by
    extraction.extract (whichever its executor)."""
    return from_table(*read_table(folder))
