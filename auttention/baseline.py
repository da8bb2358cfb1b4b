"""A simple, honest reference baseline: utterance functionals of MFCCs, energy and voicing.

Not part of the autoencoder pipeline; it tells how hard a corpus is for a plain feature set
(see bench/demo_baseline.py). Frames are 25 ms long with a 10 ms hop (voicing: 40 ms frames).
"""

from __future__ import annotations

import os

import numpy as np

from .corpus import BadAudioPolicy

N_MFCC = 20
_STATS = ("mean", "std", "p10", "p50", "p90")
_FRAME_S, _HOP_S, _PITCH_FRAME_S = 0.025, 0.010, 0.040
_F0_MIN, _F0_MAX = 60.0, 400.0  # Hz, the lag range searched for periodicity
_VOICED_R = 0.5                 # normalised autocorrelation above which a frame counts as voiced
_QUIET_DB = 25.0                # frames this far below the loud (95th percentile) level are pauses
_OCTAVE_COST = 0.05             # per octave of lag: among near-equal peaks prefer the shortest period


def mfcc_functional_names() -> list[str]:
    """Names of the entries of mfcc_functionals' vector, in order."""
    names = [f"mfcc{i}_{s}" for i in range(N_MFCC) for s in _STATS]
    names += [f"dmfcc{i}_{s}" for i in range(N_MFCC) for s in _STATS]
    names += [f"rms_db_{s}" for s in _STATS] + ["pause_fraction"]
    names += ["voiced_fraction", "periodicity_mean", "f0_st_median", "f0_st_std", "f0_st_p10", "f0_st_p90"]
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
    90th percentiles (zeros when fewer than two frames are voiced).
    """
    import librosa

    x = _as_float_mono(audio)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    win, hop = int(round(_FRAME_S * sample_rate)), int(round(_HOP_S * sample_rate))
    if len(x) < win:
        raise ValueError(f"audio has {len(x)} samples, fewer than one {win}-sample frame")
    n_fft = 1 << (win - 1).bit_length()
    power = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, center=False)) ** 2
    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=40, fmin=0.0, fmax=sample_rate / 2) @ power
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # delta needs an odd width <= frames
    delta = librosa.feature.delta(mfcc, width=width) if width >= 3 else np.zeros_like(mfcc)
    frames = librosa.util.frame(x, frame_length=win, hop_length=hop)
    rms_db = 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=0)) + 1e-6)
    loud_db = np.percentile(rms_db, 95)
    parts = [_functionals(mfcc), _functionals(delta), _functionals(rms_db[None, :]),
             [np.mean(rms_db < loud_db - _QUIET_DB)], _voicing(x, sample_rate, hop, loud_db)]
    return np.concatenate([np.ravel(p) for p in parts]).astype(np.float32)


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


def _voicing(x: np.ndarray, sample_rate: int, hop: int, loud_db: float) -> np.ndarray:
    """Voiced fraction, mean periodicity, and semitone F0 statistics (see mfcc_functionals)."""
    import librosa

    length = int(round(_PITCH_FRAME_S * sample_rate))
    lag_lo, lag_hi = int(sample_rate / _F0_MAX), int(np.ceil(sample_rate / _F0_MIN))
    if len(x) < length or lag_hi >= length:
        return np.zeros(6)
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
    level = 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-6)
    loud = level > loud_db - _QUIET_DB
    if not loud.any():
        return np.zeros(6)
    voiced = loud & (strength > _VOICED_R)
    out = [voiced.sum() / loud.sum(), strength[loud].mean()]
    if voiced.sum() >= 2:
        semitones = 12 * np.log2(sample_rate / best[voiced] / 100.0)
        out += [np.median(semitones), semitones.std(), *np.percentile(semitones, [10, 90])]
    else:
        out += [0.0, 0.0, 0.0, 0.0]
    return np.asarray(out, dtype=np.float64)


def evaluate_baseline(corpus, cfg, *, sample_rate: int = 16000, jobs: int | None = None,
                      policy: BadAudioPolicy | None = None):
    """MFCC functionals of every clip of a corpus (a read_corpus frame), scored by the paper's protocol.

    cfg: a ScoringConfig (SVR C grid chosen on devel, refit on train+devel for test); sample_rate:
    Hz the clips are resampled to; jobs: threads for feature extraction (default: all CPUs);
    policy: 'fail' or 'skip' clips that cannot be decoded (one warning line each; default 'fail', stderr).
    A clip shorter than one 25 ms frame is zero-padded to one frame, as the spectrograms are.
    Returns auttention.scoring.Evaluation (c, devel_rho, test_rho: None without test labels).
    """
    from concurrent.futures import ThreadPoolExecutor

    from .corpus import BadAudio, load_audio
    from .features import feature_frame
    from .scoring import evaluate

    policy, n_clips = policy or BadAudioPolicy(), len(corpus)
    corpus, _ = policy.screen(corpus)
    frame_len = int(round(_FRAME_S * sample_rate))

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
    kept = policy.apply(corpus, bad)
    if len(kept) < len(corpus) or len(corpus) < n_clips:
        policy.warn(f"baseline: skipped {n_clips - len(kept)} of {n_clips} clips with bad audio")
    x = np.stack([r for r in results if not isinstance(r, str)])
    frame = feature_frame(kept["file_name"], kept["partition"], kept["label"], x, "mfcc", kept.get("speaker"))
    return evaluate(frame, cfg)
