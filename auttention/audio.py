"""Audio decoding: a clip (WAV, FLAC or OGG; any rate, any channels; on disk or object storage) as mono float32
at the rate asked for, whole, its first seconds or streamed block by block; its length from the header alone; what
its header says is wrong. A clip that cannot be used is a BadAudio error (corpus.BadAudioPolicy decides whether
it stops the run)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

from . import storage
from .errors import UserError


class BadAudio(UserError):
    """A clip that cannot be used; `path` and `reason` (what is wrong) are kept apart for the policy."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}; fix or remove the file, or pass --on-bad-audio skip to leave it out")

    def __reduce__(self):  # pickled across worker processes with its two fields, not the message
        return (BadAudio, (self.path, self.reason))


def load_audio(path: str | os.PathLike, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode a clip (WAV/FLAC/OGG, any rate, any channels) to mono float32 at `sample_rate` Hz.

    Only the first `max_seconds` are decoded when given, so memory stays bounded on long recordings.
    Raises BadAudio (a UserError) for a file that cannot be decoded, is empty or holds NaN/Inf samples.
    """
    with _open(path) as f:
        native = f.samplerate
        frames = f.frames if max_seconds is None else min(f.frames, math.ceil(max_seconds * native))
        audio = _read(f, path, frames)
    if audio.size == 0:
        raise BadAudio(path, "the audio is empty (0 samples)")
    mono = _mono(audio, path, native, 0)
    if native != sample_rate:
        mono = _resample(mono, native, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _resample(mono: np.ndarray, native: int, sample_rate: int) -> np.ndarray:
    """A whole clip from `native` to `sample_rate` Hz (soxr HQ, as librosa.load), float32, its length pinned
    so that it can be known from the header alone (see resampled_length)."""
    target = resampled_length(len(mono), native, sample_rate)
    mono = soxr.resample(mono, native, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return mono[:target] if len(mono) >= target else np.pad(mono, (0, target - len(mono)))


def iter_audio(path: str | os.PathLike, sample_rate: int, block: int = 1 << 18) -> Iterator[np.ndarray]:
    """Decode a clip as load_audio does, `block` native samples at a time: mono float32 pieces at `sample_rate` Hz.

    Memory stays bounded whatever the clip's length (a resampling stream gives the same samples as
    resampling the whole clip at once).
    """
    with _open(path) as f:
        native = f.samplerate
        if 0 < f.frames <= block:
            # the whole clip in one piece (most clips): a one-shot resampler gives the same samples as
            # the stream below and does not pay a stream's set-up for every clip
            audio = _read(f, path, f.frames)
            if audio.size:
                mono = _mono(audio, path, native, 0)
                if native != sample_rate:
                    mono = _resample(mono, native, sample_rate)
                yield np.ascontiguousarray(mono, dtype=np.float32)
                return
            f.seek(0)  # a header that promised samples the file does not hold: the streamed path says so
        stream = None
        if native != sample_rate:
            stream = soxr.ResampleStream(native, sample_rate, 1, dtype="float32", quality="HQ")
        seen = emitted = 0
        while True:
            chunk = _read(f, path, block)
            last = len(chunk) < block
            mono = _mono(chunk, path, native, seen)
            seen += len(mono)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
                if last:  # pin the total length as load_audio does
                    target = resampled_length(seen, native, sample_rate) - emitted
                    mono = mono[:target] if len(mono) >= target else np.pad(mono, (0, target - len(mono)))
            emitted += len(mono)
            yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                break
    if seen == 0:
        raise BadAudio(path, "the audio is empty (0 samples)")


def resampled_length(n_samples: int, native_rate: int, sample_rate: int) -> int:
    """Samples after resampling n_samples from native_rate to sample_rate."""
    return round(n_samples * sample_rate / native_rate)


def audio_length(path: str | os.PathLike, sample_rate: int, max_seconds: float | None = None) -> int:
    """Samples `load_audio(path, sample_rate, max_seconds)` will return, read from the header only."""
    info = _info(path)
    frames = info.frames
    if max_seconds is not None:
        frames = min(frames, math.ceil(max_seconds * info.samplerate))
    return frames if info.samplerate == sample_rate else resampled_length(frames, info.samplerate, sample_rate)


def audio_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a clip as far as its header tells (None: nothing); cheap, decodes no samples.

    Catches files that cannot be opened, empty files, clips of 0 samples and WAV files whose data
    is shorter than their header says (truncated). Damage deeper in the file, and NaN/Inf samples,
    show only when the clip is decoded.
    """
    try:
        info = _info(path)
    except BadAudio as exc:
        return exc.reason
    if info.frames == 0:
        return "the audio is empty (0 samples)"
    match = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", info.extra_info, re.MULTILINE)
    # 0xFFFFFFFF and 0x7FFFFFFF are what streaming recorders write when they do not know the length
    if match and int(match.group(2)) < int(match.group(1)) < 0x7FFFFFFF:
        return (
            f"truncated (the header announces {int(match.group(1))} bytes of audio, "
            f"the file holds {int(match.group(2))})"
        )
    return None


_DECODE_ERRORS = (RuntimeError, OSError, TypeError, ValueError)  # soundfile.LibsndfileError is a RuntimeError


def _soundfile(path: str | os.PathLike, what: str):
    """soundfile's `what` ("SoundFile" to open, "info" for the header) on `path`; BadAudio if it fails."""
    try:
        if storage.is_remote(str(path)):  # a clip on object storage: read through pyarrow, ranged reads
            loc = storage.location(str(path), "--data")
            if loc.fs.get_file_info(loc.path).size == 0:
                raise BadAudio(path, "the file is empty (0 bytes)")
            return getattr(sf, what)(loc.fs.open_input_file(loc.path))
        if os.path.getsize(path) == 0:
            raise BadAudio(path, "the file is empty (0 bytes)")
        return getattr(sf, what)(str(path))
    except _DECODE_ERRORS as exc:
        raise BadAudio(path, _decode_reason(exc, path)) from None


def _open(path: str | os.PathLike):
    return _soundfile(path, "SoundFile")


def _info(path: str | os.PathLike):
    return _soundfile(path, "info")


def _read(f, path: str | os.PathLike, frames: int) -> np.ndarray:
    try:
        return f.read(frames, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as exc:
        raise BadAudio(path, _decode_reason(exc, path)) from None


def _mono(audio: np.ndarray, path: str | os.PathLike, native: int, offset: int) -> np.ndarray:
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    bad = ~np.isfinite(mono)
    if bad.any():
        at = (offset + int(np.argmax(bad))) / native
        raise BadAudio(path, f"the audio contains NaN or infinite samples (first at {at:.3f} s)")
    return mono


def _decode_reason(exc: BaseException, path: str | os.PathLike) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"^Error opening '.*?': ", "", text).rstrip(".")  # the path is named once, up front
    text = re.sub(r"^Error : ", "", text)
    gone = (not storage.location(str(path)).is_file()) if storage.is_remote(str(path)) else not os.path.exists(path)
    if isinstance(exc, FileNotFoundError) or gone:
        return "the file is gone (it was listed, then removed or renamed)"
    if "Format not recognised" in text or "not a regular file" in text:
        # libsndfile says 'not a regular file' of a regular file whose stream it cannot parse (e.g. bad MP3)
        return "cannot decode audio (format not recognised; convert it to WAV, FLAC or OGG)"
    return f"cannot decode audio ({text}; the file is damaged, truncated or in an unsupported encoding)"
