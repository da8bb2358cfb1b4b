"""A simple, honest reference baseline: utterance functionals of MFCCs, energy, voicing, spectral shape and timing.

The bar every result is measured against: `run` and `pipeline` compute it for the corpus once (kept
by provenance like the spectrograms, see `functionals`) and show their result beside it, with the
paired difference on the same clips (scoring.compare). It tells how hard a corpus is for a plain
feature set (see bench/demo_baseline.py). Frames are 25 ms long with a 10 ms hop (voicing: 40 ms frames).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .audio import BadAudio, load_audio
from .corpus import BadAudioPolicy, fingerprint
from .features import KEYS, SPEAKER
from .io import json_text
from .record import FUNCTIONALS

if TYPE_CHECKING:
    from .storage import Location

log = logging.getLogger(__name__)

N_MFCC = 20
_STATS = ("mean", "std", "p10", "p50", "p90")
_FRAME_S, _HOP_S, _PITCH_FRAME_S = 0.025, 0.010, 0.040
_F0_MIN, _F0_MAX = 60.0, 400.0  # Hz, the lag range searched for periodicity
_VOICED_R = 0.5  # normalised autocorrelation above which a frame counts as voiced
_QUIET_DB = 25.0  # frames this far below the loud (95th percentile) level are pauses
_OCTAVE_COST = 0.05  # per octave of lag: among near-equal peaks prefer the shortest period
_SLOPE_HZ = (50.0, 5000.0)  # the band the spectral slope is fit over (capped at Nyquist)


def mfcc_functional_names() -> list[str]:
    """Names of the entries of mfcc_functionals' vector, in order."""
    names = [f"mfcc{i}_{s}" for i in range(N_MFCC) for s in _STATS]
    names += [f"dmfcc{i}_{s}" for i in range(N_MFCC) for s in _STATS]
    names += [f"rms_db_{s}" for s in _STATS] + ["pause_fraction"]
    names += ["voiced_fraction", "periodicity_mean", "f0_st_median", "f0_st_std", "f0_st_p10", "f0_st_p90"]
    names += [f"{f}_{s}" for f in ("centroid_khz", "slope_db_per_khz", "flux") for s in _STATS]
    names += ["duration_s", "voiced_segments_per_s", "voiced_segment_mean_s", "pauses_per_s", "pause_mean_s"]
    return names


def mfcc_functionals(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """One float32 vector of utterance-level functionals (see mfcc_functional_names).

    audio: mono samples, floats in [-1, 1] (integer PCM is scaled by its type's range);
    sample_rate: Hz. Per 25 ms frame (10 ms hop): 20 MFCCs (40 mel bands, 0 Hz to Nyquist) and
    their deltas (over 9 frames), each summarised by mean, std and 10th/50th/90th percentiles;
    RMS energy in dBFS with the same statistics, plus the fraction of frames more than 25 dB
    below its 95th percentile (pauses). Voicing, per 40 ms frame: the peak of the normalised
    autocorrelation over lags of 1/400..1/60 s, with a small preference for short lags against
    octave errors (a cheap harmonicity / HNR proxy, 0..1); the fraction of loud frames (within
    25 dB of the 95th percentile) whose peak exceeds 0.5 (voiced) and the mean peak over loud
    frames; F0 (1 / best lag) of voiced frames in semitones re 100 Hz: median, std, 10th and
    90th percentiles (zeros when fewer than two frames are voiced). Spectral shape, per loud 25 ms frame,
    with the same five statistics: the centroid of the power spectrum (kHz), its slope (a least-squares
    line through the dB spectrum from 50 Hz to 5 kHz, dB per kHz) and its flux (the Euclidean distance
    between successive sum-normalised magnitude spectra). Timing: the clip's duration (s), voiced
    stretches (runs of voiced 40 ms frames) per second and their mean length (s), and pauses (runs of
    quiet 25 ms frames, leading and trailing silence left out) per second and their mean length (s).
    """
    import librosa

    x = _as_float_mono(audio)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    win, hop = round(_FRAME_S * sample_rate), round(_HOP_S * sample_rate)
    if len(x) < win:
        raise ValueError(f"audio has {len(x)} samples, fewer than one {win}-sample frame")
    n_fft = 1 << (win - 1).bit_length()
    padded = np.pad(x, (0, max(0, n_fft - len(x))))  # a clip of one frame still fills one FFT
    power = np.abs(librosa.stft(padded, n_fft=n_fft, hop_length=hop, win_length=win, center=False)) ** 2
    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=40, fmin=0.0, fmax=sample_rate / 2) @ power
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # delta needs an odd width <= frames
    delta = librosa.feature.delta(mfcc, width=width) if width >= 3 else np.zeros_like(mfcc)
    frames = librosa.util.frame(x, frame_length=win, hop_length=hop)
    rms_db = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=0)) + 1e-6)
    loud_db = np.percentile(rms_db, 95)
    quiet = rms_db < loud_db - _QUIET_DB
    voicing, voiced = _voicing(x, sample_rate, hop, loud_db)
    n = min(power.shape[1], len(quiet))  # the STFT's frames span n_fft >= win samples: as many or fewer
    parts: list[Any] = [
        _functionals(mfcc),
        _functionals(delta),
        _functionals(rms_db[None, :]),
        [np.mean(quiet)],
        voicing,
        _spectral_shape(power[:, :n], sample_rate, n_fft, ~quiet[:n]),
        _timing(len(x) / sample_rate, voiced, quiet, _HOP_S),
    ]
    return np.concatenate([np.ravel(p) for p in parts]).astype(np.float32)


def _spectral_shape(power: np.ndarray, sample_rate: int, n_fft: int, loud: np.ndarray) -> np.ndarray:
    """(3, 5): the statistics of the spectral centroid (kHz), slope (dB/kHz) and flux over the loud frames
    (see mfcc_functionals); power: (bins, frames)."""
    loud = loud if loud.any() else np.ones_like(loud)  # e.g. the one loud frame lay past the STFT's last
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    total = power.sum(axis=0)
    centroid = (freqs @ power) / np.maximum(total, 1e-20) / 1000.0
    band = (freqs >= _SLOPE_HZ[0]) & (freqs <= min(_SLOPE_HZ[1], sample_rate / 2))
    f = freqs[band] / 1000.0 - (freqs[band] / 1000.0).mean()
    db = 10 * np.log10(power[band] + 1e-10)
    slope = (f @ (db - db.mean(axis=0))) / (f @ f)
    magnitude = np.sqrt(power)
    shape = magnitude / np.maximum(magnitude.sum(axis=0), 1e-20)
    flux = np.sqrt((np.diff(shape, axis=1) ** 2).sum(axis=0))  # frame t against t - 1, t >= 1
    flux = flux[loud[1:]] if loud[1:].any() else (flux if len(flux) else np.zeros(1))
    return np.concatenate([_functionals(np.stack([centroid[loud], slope[loud]])), _functionals(flux[None, :])])


def _runs(mask: np.ndarray) -> list[int]:
    """The lengths of the runs of True in a boolean sequence."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def _timing(duration_s: float, voiced: np.ndarray, quiet: np.ndarray, hop_s: float) -> np.ndarray:
    """Duration, voiced stretches per second and their mean length, pauses per second and their mean length
    (see mfcc_functionals); voiced and quiet: per frame, `hop_s` apart."""
    loud = np.flatnonzero(~quiet)
    inner = quiet[loud[0] : loud[-1] + 1] if len(loud) else quiet[:0]  # leading and trailing silence are no pauses
    stretches, pauses = _runs(voiced), _runs(inner)
    return np.array(
        [
            duration_s,
            len(stretches) / duration_s,
            np.mean(stretches) * hop_s if stretches else 0.0,
            len(pauses) / duration_s,
            np.mean(pauses) * hop_s if pauses else 0.0,
        ]
    )


def _as_float_mono(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim == 2 and 1 in x.shape:
        x = x.ravel()
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    return x


def _functionals(rows: np.ndarray) -> np.ndarray:
    """(n_rows, 5): mean, std, p10, p50, p90 of each row over time."""
    p10, p50, p90 = np.percentile(rows, [10, 50, 90], axis=1)
    return np.stack([rows.mean(axis=1), rows.std(axis=1), p10, p50, p90], axis=1)


def _voicing(x: np.ndarray, sample_rate: int, hop: int, loud_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Voiced fraction, mean periodicity, and semitone F0 statistics (see mfcc_functionals), and whether
    each 40 ms frame is voiced."""
    import librosa

    length = round(_PITCH_FRAME_S * sample_rate)
    lag_lo, lag_hi = int(sample_rate / _F0_MAX), int(np.ceil(sample_rate / _F0_MIN))
    if len(x) < length or lag_hi >= length:
        return np.zeros(6), np.zeros(0, bool)
    from scipy import fft

    # (n_frames, length), contiguous, so the FFTs run along the last axis
    frames = np.ascontiguousarray(librosa.util.frame(x, frame_length=length, hop_length=hop).T)
    frames = frames - frames.mean(axis=1, keepdims=True)
    n_fft = fft.next_fast_len(2 * length)
    window = np.hanning(length).astype(np.float32)
    acf = fft.irfft(np.abs(fft.rfft(frames * window, n=n_fft, axis=1)) ** 2, n=n_fft, axis=1)[:, : lag_hi + 1]
    # divide by the window's own autocorrelation so a periodic signal scores ~1 at its period
    win_acf = fft.irfft(np.abs(fft.rfft(window, n=n_fft)) ** 2, n=n_fft)[: lag_hi + 1]
    acf = acf / np.maximum(win_acf, 1e-12) / np.maximum(acf[:, :1] / win_acf[0], 1e-12)
    lags = np.arange(lag_lo, lag_hi + 1)
    best = lag_lo + np.argmax(acf[:, lag_lo:] - _OCTAVE_COST * np.log2(lags / lag_lo), axis=1)
    strength = np.clip(acf[np.arange(len(acf)), best], 0.0, 1.0)
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-6)
    loud = level > loud_db - _QUIET_DB
    if not loud.any():
        return np.zeros(6), np.zeros(len(loud), bool)
    voiced = loud & (strength > _VOICED_R)
    out = [voiced.sum() / loud.sum(), strength[loud].mean()]
    if voiced.sum() >= 2:
        semitones = 12 * np.log2(sample_rate / best[voiced] / 100.0)
        out += [np.median(semitones), semitones.std(), *np.percentile(semitones, [10, 90])]
    else:
        out += [0.0, 0.0, 0.0, 0.0]
    return np.asarray(out, dtype=np.float64), voiced


SETTINGS = "settings.json"  # a functionals folder's completion marker and provenance, written last
TABLE = "functionals.parquet"


def functionals_settings(sample_rate: int) -> dict[str, Any]:
    """Everything the functionals' values depend on besides the audio (a folder made with other settings is
    made again, never reused)."""
    return {
        "features": "MFCC, energy, voicing, spectral shape and timing functionals (auttention.baseline)",
        "version": 2,
        "sample_rate": int(sample_rate),
        "n_mfcc": N_MFCC,
        "frame_s": _FRAME_S,
        "hop_s": _HOP_S,
        "pitch_frame_s": _PITCH_FRAME_S,
        "f0_hz": [_F0_MIN, _F0_MAX],
        "slope_hz": list(_SLOPE_HZ),
    }


def functionals_folder(cache: str | os.PathLike | Location, corpus_id: str, sample_rate: int) -> Location:
    """Where `run` caches a corpus' functionals: CACHE/functionals/FINGERPRINT/SETTINGS-HASH (beside the
    spectrograms, which are cached the same way)."""

    digest = hashlib.sha256(json.dumps(functionals_settings(sample_rate), sort_keys=True).encode()).hexdigest()[:16]
    return storage.as_location(cache, "--cache") / FUNCTIONALS / corpus_id / digest


def compute_functionals(
    corpus: pd.DataFrame, sample_rate: int = 16000, jobs: int | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The functionals of every clip of `corpus` (rows: file_name, path): (a table of file_name and the
    functionals columns, {file_name: why} of the clips whose audio could not be decoded). A clip shorter
    than one 25 ms frame is zero-padded to one frame, as the spectrograms are."""

    frame_len = round(_FRAME_S * sample_rate)

    def one(path: str) -> np.ndarray | str:
        try:
            audio = load_audio(path, sample_rate)
        except BadAudio as exc:
            return exc.reason
        return mfcc_functionals(np.pad(audio, (0, max(0, frame_len - len(audio)))), sample_rate)

    # threads, not processes: the FFTs release the GIL, and nothing forks or re-imports the caller
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        results = list(pool.map(one, corpus["path"]))
    bad = {name: r for name, r in zip(corpus["file_name"], results) if isinstance(r, str)}
    good = [r for r in results if not isinstance(r, str)]
    x = np.stack(good) if good else np.empty((0, len(mfcc_functional_names())), np.float32)
    table = pd.DataFrame(x, columns=[f"{FUNCTIONALS}_{i:04d}" for i in range(x.shape[1])])
    table.insert(0, "file_name", [n for n in corpus["file_name"] if n not in bad])
    return table, bad


def functionals(
    corpus: pd.DataFrame,
    folder: str | os.PathLike | Location | None = None,
    *,
    sample_rate: int = 16000,
    jobs: int | None = None,
    policy: BadAudioPolicy | None = None,
    corpus_id: str | None = None,
) -> pd.DataFrame:
    """The functionals feature set of a corpus (a read_corpus frame): keys (file_name, partition, label and
    speaker where known, joined by file name from `corpus`) and the functionals columns.

    folder : where they are kept (a path, s3:// / gs:// URI or Location), or None (computed, not kept).
        A finished folder made from this corpus (`corpus_id`: its fingerprint, default computed) with these
        settings is reused, with one line saying so; any other is made again, with one line saying why. It is
        written atomically, settings.json last.
    policy : bad audio ('fail' by default: BadAudio naming the clip, nothing written; 'skip': one warning line
        per clip); clips a reused folder left out go through the policy again.
    """

    policy = policy or BadAudioPolicy()
    n_clips = len(corpus)
    settings = functionals_settings(sample_rate)
    corpus_id = corpus_id or fingerprint(corpus)
    loc = storage.as_location(folder, "--cache") if folder is not None else None
    made = _made(loc)
    if loc is not None and made and made.get("corpus") == corpus_id and made.get("settings") == settings:
        log.info(f"{FUNCTIONALS}: reusing {loc}")
        table = pq.read_table(io.BytesIO((loc / TABLE).read_bytes())).to_pandas()
        kept = policy.apply(corpus, made.get("skipped") or {})  # its bad clips are bad still: the policy says so
    else:
        if made:
            why = (
                "made from another corpus (or the audio files changed)"
                if made.get("corpus") != corpus_id
                else "made with other settings"
            )
            log.info(f"{FUNCTIONALS}: {loc} was {why}; computing them again")
        started = time.perf_counter()
        clips, bad = policy.screen(corpus)
        table, failed = compute_functionals(clips, sample_rate, jobs)
        bad = {**bad, **failed}
        kept = policy.apply(corpus, bad) if failed else clips  # 'fail' raises here, before anything is written
        if loc is not None:
            _write(loc, table, {"corpus": corpus_id, "settings": settings, "skipped": bad})
        log.info(
            f"{FUNCTIONALS}: {len(table)} clips in {time.perf_counter() - started:.1f} s"
            + (f" -> {loc}" if loc is not None else "")
        )
    if len(kept) < n_clips:
        policy.warn(f"{FUNCTIONALS}: skipped {n_clips - len(kept)} of {n_clips} clips with bad audio")
    keys = kept[[c for c in [*KEYS, SPEAKER] if c in kept.columns]]
    frame = keys.merge(table, on="file_name", how="inner", validate="one_to_one")
    frame["label"] = frame["label"].astype(float)
    frame.attrs["made_from"] = {"corpus": corpus_id, FUNCTIONALS: settings}
    return frame


def _made(loc: Location | None) -> dict[str, Any] | None:
    """A functionals folder's settings.json (None: no folder, or not finished)."""

    marker = loc / SETTINGS if loc is not None else None
    return json.loads(marker.read_text()) if marker is not None and marker.is_file() else None


def _write(loc: Location, table: pd.DataFrame, made: dict[str, Any]) -> None:
    """The folder `loc`, atomically: the table, then settings.json (the marker) last."""

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buffer)
    with storage.atomic_folder(loc) as tmp:
        tmp.mkdir()
        (tmp / TABLE).write_bytes(buffer.getvalue())
        (tmp / SETTINGS).write_text(json_text(made))


def evaluate_baseline(
    corpus: pd.DataFrame,
    cfg,
    *,
    sample_rate: int = 16000,
    jobs: int | None = None,
    policy: BadAudioPolicy | None = None,
    folder=None,
    corpus_id: str | None = None,
):
    """The functionals of every clip of a corpus (a read_corpus frame; see `functionals`, which keeps them in
    `folder` where given), scored by the paper's protocol.

    cfg: a ScoringConfig (SVR C grid chosen on devel, refit on train+devel for test); sample_rate: Hz the
    clips are resampled to; jobs: threads for feature extraction (default: all CPUs); policy: 'fail' or
    'skip' clips that cannot be decoded (one warning line each; default 'fail', stderr).
    Returns auttention.scoring.Evaluation (c, devel_rho, test_rho: None without test labels; their 95%
    intervals, speakers resampled where the corpus names them).
    """
    from .evaluation import evaluate

    return evaluate(
        functionals(corpus, folder, sample_rate=sample_rate, jobs=jobs, policy=policy, corpus_id=corpus_id), cfg
    )
