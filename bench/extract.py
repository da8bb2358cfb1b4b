"""Spectrogram extraction throughput: the original PNG pipeline vs ours (Ray tasks, process pool) vs the floor.

    .venv/bin/python bench/extract.py [--data DIR] [--clips N] [--repeats 3] [--workers 1 2]

Measured on the same clips, one after the other in this process (ratios are back to back):

(a) original  the research code's extraction, reimplemented faithfully on one core: librosa.load
              (resampling to 22.05 kHz), STFT (n_fft 1024, Hamming), a 240-band mel filterbank on the
              complex STFT, amplitude_to_db re max, min-max to 0..255, PNG written with PIL; then the
              normalisation pass: every PNG read for its width, read again, cropped to the shortest,
              written, read again, resized to 120 rows (bicubic) and written again.
(b) ours      the product at the paper preset (22.05 kHz, Hamming, n_fft 1024, hop 256, 120 bands):
              - in-process, one core: auttention.spectrogram.extract(jobs=1) (decode, resample,
                spectrogram, Parquet);
              - Ray: search.extract.ray_extract (what ensure_spectrograms calls) with 1, 2, ...
                tasks at once; the first call in a fresh Ray session (worker start-up, imports) is
                reported apart from warm runs (later calls, workers reused); Ray's workers run at
                niceness 0 here (--ray-niceness; Ray's default 15 starves them on a shared machine);
              - the local process pool auttention.spectrogram.extract(jobs=n), pool start included.
(c) floor     STFT + mel + dB of audio already decoded and resampled in memory, one core: the fastest of
              librosa, NumPy framing + scipy.fft (float32) with a dense or a sparse filterbank, and the
              product's own mel_spectrogram (so the floor is never slower than what we ship).

Ray is started and warmed up first; then every measurement runs once per round, --repeats rounds,
so that changes in the load of a shared machine hit all of them alike; the best of the rounds is
kept. Throughput in clips/s and audio-seconds/s. Prints tables and writes
bench/results/extract.json. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_folder, loadavg, ray_niceness, summary, table, timed, write_result  # noqa: E402

ORIGINAL_MELS, ORIGINAL_ROWS = 240, 120


# -- (a) the original pipeline ------------------------------------------------------------------

def original_spectrogram_png(wav: str, png: str) -> None:
    """audio_converter.create_spectrogram + the PIL save of extract_spectrograms, as the research code did."""
    import librosa
    from PIL import Image
    from sklearn.preprocessing import minmax_scale

    time_series, _ = librosa.load(wav)  # 22.05 kHz: the 16 kHz corpus is resampled (soxr_hq)
    spectrogram = librosa.stft(time_series, n_fft=1024, window="hamming")
    spectrogram = librosa.feature.melspectrogram(S=spectrogram, n_mels=ORIGINAL_MELS)  # on the complex STFT
    log_spectrogram = minmax_scale(librosa.amplitude_to_db(np.abs(spectrogram), ref=np.max)) * 255
    Image.fromarray(log_spectrogram).convert("L").save(png)


def original_normalise(pngs: list[str]) -> None:
    """extract_spectrograms.normalize_spectrograms: crop every PNG to the narrowest, resize to 120 rows."""
    from PIL import Image

    width = min(np.asarray(Image.open(p)).shape[1] for p in pngs)
    for p in pngs:
        img = np.asarray(Image.open(p))[:, :width]
        Image.fromarray(img).save(p)
        # the original used cv2.imread(..., GRAYSCALE).astype(float32), cv2.resize(INTER_CUBIC), cv2.imwrite
        img = np.asarray(Image.open(p).convert("L")).astype(np.float32)
        resized = np.asarray(Image.fromarray(img).resize((width, ORIGINAL_ROWS), Image.BICUBIC))
        Image.fromarray(np.clip(np.rint(resized), 0, 255).astype(np.uint8)).save(p)


def run_original(paths: list[str], folder: Path) -> None:
    """The whole original extraction of `paths` into PNG files in `folder`."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pngs = []
    for path in paths:
        png = str(folder / (Path(path).stem + ".png"))
        original_spectrogram_png(path, png)
        pngs.append(png)
    original_normalise(pngs)


# -- (c) the numerical floor --------------------------------------------------------------------

def floor_functions(cfg):
    """Candidate floors: {name: audio -> (frames, n_mels) dB re max clipped at cfg.clip_below}."""
    import librosa
    import scipy.fft
    import scipy.signal
    import scipy.sparse

    from auttention.spectrogram import AMIN, _mel_basis

    basis = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).astype(np.float32)
    basis_t = np.ascontiguousarray(basis.T)
    sparse = scipy.sparse.csr_matrix(basis)
    window = scipy.signal.get_window(cfg.window, cfg.n_fft, fftbins=True).astype(np.float32)
    half = cfg.n_fft // 2

    def db(mel_tf: np.ndarray) -> np.ndarray:
        out = 10.0 * np.log10(np.maximum(mel_tf, AMIN))
        return np.maximum(out - out.max(), cfg.clip_below)

    def librosa_path(audio):
        stft = librosa.stft(audio, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=cfg.window,
                            center=True, pad_mode="constant")
        return db((basis @ (stft.real ** 2 + stft.imag ** 2)).T)

    def power_frames(audio):
        padded = np.pad(audio, (half, half))
        frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[::cfg.hop_length]
        spec = scipy.fft.rfft(frames * window, axis=1)
        return spec.real ** 2 + spec.imag ** 2  # (frames, bins) float32

    def scipy_dense(audio):
        return db(power_frames(audio) @ basis_t)

    def scipy_sparse(audio):
        return db((sparse @ power_frames(audio).T).T)

    def ours(audio):  # the product's own function, back on the dB scale of the others
        from auttention.spectrogram import mel_spectrogram

        return (mel_spectrogram(audio, cfg) + 1.0) * (-cfg.clip_below / 2.0) + cfg.clip_below

    return {"librosa": librosa_path, "scipy-dense": scipy_dense, "scipy-sparse": scipy_sparse, "ours": ours}


# -- measurements ---------------------------------------------------------------------------------

def rate(n: int, audio_s: float, seconds: float) -> dict:
    return {"seconds": seconds, "clips_per_s": n / seconds, "audio_s_per_s": audio_s / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", help="corpus folder or manifest CSV (default: the built-in demo corpus)")
    parser.add_argument("--clips", type=int, default=None, help="use about N clips, every partition in proportion "
                                                                "(default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of measurements (the best of each is kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="Ray / process-pool parallelism to measure (default: 1 .. all CPUs)")
    parser.add_argument("--copies", type=int, default=1,
                        help="list every clip this many times (under other names): longer runs, so that a run's "
                             "fixed costs weigh less")
    parser.add_argument("--ray-niceness", type=int, default=0,
                        help="niceness of Ray's workers (Ray's own default is 15, which on a machine shared "
                             "with other programs starves them; the in-process paths run at 0)")
    parser.add_argument("--skip-original", action="store_true", help="do not time the original PNG pipeline")
    args = parser.parse_args()
    ray_niceness(args.ray_niceness)

    from threadpoolctl import threadpool_limits

    from auttention import spectrogram as spectro
    from auttention.config import SPECTROGRAM_PRESETS, SpectrogramConfig
    from auttention.corpus import audio_length, load_audio, read_corpus

    import pandas as pd

    load_start = loadavg()
    corpus = read_corpus(corpus_folder(args.data))
    if args.clips:
        corpus = pd.concat([g.head(max(1, round(args.clips * len(g) / len(corpus))))
                            for _, g in corpus.groupby("partition")]).reset_index(drop=True)
    if args.copies > 1:
        corpus = pd.concat([corpus.assign(file_name=corpus["file_name"] + f".{i}") if i else corpus
                            for i in range(args.copies)], ignore_index=True)
    paths = corpus["path"].tolist()
    n = len(paths)
    cfg = SpectrogramConfig(**SPECTROGRAM_PRESETS["paper"])
    audio_s = sum(audio_length(p, 16000) / 16000 for p in paths)  # seconds (any rate gives the same)
    workers = args.workers or list(range(1, (os.cpu_count() or 1) + 1))
    print(f"corpus: {n} clips, {audio_s:.0f} s of audio; settings: paper preset "
          f"({cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}, {cfg.n_mels} mels); "
          f"load average {load_start}", flush=True)
    results: dict = {"clips": n, "copies": args.copies, "audio_seconds": audio_s, "settings": "paper preset",
                     "rounds": args.repeats, "workers": workers, "ray_worker_niceness": args.ray_niceness,
                     "load_start": load_start}
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    import ray

    from search.extract import ray_extract
    from search.raysession import start_ray

    try:
        # first calls in a process cost time (imports, filterbank, soxr): paid once, reported apart
        t_first_decode, _ = timed(lambda: load_audio(paths[0], cfg.sample_rate))
        t_first_spec, _ = timed(lambda: spectro.mel_spectrogram(np.zeros(22050, np.float32), cfg))
        results["first_call_seconds"] = {"decode_resample": t_first_decode, "spectrogram": t_first_spec}
        audio = [load_audio(p, cfg.sample_rate) for p in paths]
        floors = floor_functions(cfg)
        with threadpool_limits(limits=1):
            reference = [spectro.mel_spectrogram(a, cfg) for a in audio[:20]]
            diffs = {name: max(float(np.abs((2 * (fn(a) - cfg.clip_below) / -cfg.clip_below - 1) - r).max())
                               for a, r in zip(audio[:20], reference)) for name, fn in floors.items()}
            if not args.skip_original:
                original_spectrogram_png(paths[0], str(tmp / "warm.png"))

        # Ray: start-up, the first extraction in the fresh session, then one untimed call per parallelism
        t_init, _ = timed(lambda: start_ray(None, dashboard=False))
        t_cold, _ = timed(lambda: ray_extract(corpus, cfg, tmp / "ray-cold", parallelism=workers[0]))
        for w in workers:
            ray_extract(corpus, cfg, tmp / f"ray-warm{w}", parallelism=w)
        results["ray_start"] = {"init_seconds": t_init, "first_extraction_seconds": t_cold,
                                "first_extraction_workers": workers[0]}

        # rounds: every measurement once per round, so that load changes hit all of them alike
        jobs: dict[str, callable] = {}
        if not args.skip_original:
            jobs["original"] = lambda: run_original(paths, tmp / "png")
        for name, fn in floors.items():
            jobs[f"floor:{name}"] = lambda fn=fn: [fn(a) for a in audio]
        jobs["ours:decode+resample"] = lambda: [load_audio(p, cfg.sample_rate) for p in paths]
        jobs["ours:spectrogram"] = lambda: [spectro.mel_spectrogram(a, cfg) for a in audio]
        jobs["ours:in-process"] = lambda: spectro.extract(corpus, cfg, tmp / "local1", jobs=1)
        for w in workers:
            if w > 1:
                jobs[f"ours:pool{w}"] = lambda w=w: spectro.extract(corpus, cfg, tmp / f"pool{w}", jobs=w)
        for w in workers:
            jobs[f"ours:ray{w}"] = lambda w=w: ray_extract(corpus, cfg, tmp / f"ray{w}", parallelism=w)
        one_core = {k for k in jobs if k in ("original", "ours:decode+resample", "ours:spectrogram")
                    or k.startswith("floor:")}
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for r in range(args.repeats):
            for key, fn in jobs.items():
                if key in one_core:
                    with threadpool_limits(limits=1):
                        t, _ = timed(fn)
                else:
                    t, _ = timed(fn)
                times[key].append(t)
            print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    results["times"] = {k: summary(v) for k, v in times.items()}
    results["throughput"] = {k: rate(n, audio_s, v) for k, v in best.items()}
    floor_name = min(floors, key=lambda k: best[f"floor:{k}"])
    results["floor"] = {"best": floor_name, "max_abs_diff_vs_ours": diffs}
    results["per_clip_ms"] = {k: 1e3 * v / n for k, v in best.items()}
    results["load_end"] = loadavg()
    results["ratios"] = compute_ratios(best, floor_name, workers, n)

    labels = {"original": "original: librosa + PNG, 1 core", "ours:decode+resample": "ours: decode + resample only, 1 core",
              "ours:spectrogram": "ours: spectrogram only (in memory), 1 core",
              "ours:in-process": "ours: in-process extract (jobs=1), 1 core"}
    rows = []
    for key, t in best.items():
        label = labels.get(key) or (f"floor: {key[6:]} (in memory), 1 core" if key.startswith("floor:") else
                                    f"ours: process pool, jobs={key[9:]}" if key.startswith("ours:pool") else
                                    f"ours: Ray tasks, {key[8:]} task(s), whole run (warm)")
        rows.append((label, t, n / t, audio_s / t, 1e3 * t / n))
    rs = results["ray_start"]
    rows.append((f"ours: Ray tasks, {workers[0]} task(s), fresh session", rs["first_extraction_seconds"],
                 n / rs["first_extraction_seconds"], audio_s / rs["first_extraction_seconds"],
                 1e3 * rs["first_extraction_seconds"] / n))
    print()
    print(table(rows, ["extraction", "seconds", "clips/s", "audio s/s", "ms/clip"]))
    print()
    steady = best[f"ours:ray{workers[0]}"]
    print(f"Ray start-up: ray.init {rs['init_seconds']:.1f} s; first extraction in the fresh session "
          f"{rs['first_extraction_seconds']:.1f} s vs {steady:.2f} s warm: "
          f"{rs['first_extraction_seconds'] - steady:.1f} s of worker start-up and first calls")
    print(f"floor = {floor_name} (max |difference| from ours on [-1, 1]: {diffs[floor_name]:.1e})")
    print()
    print(table([(k, v["value"], v["target"], "yes" if v["met"] else "NO") for k, v in results["ratios"].items()],
                ["ratio", "measured", "target", "met"]))
    print(f"load average: start {load_start}, end {results['load_end']}")
    path = write_result("extract", results)
    print(f"wrote {path}")


def compute_ratios(best: dict, floor_name: str, workers: list[int], n: int) -> dict:
    """The three extraction targets of issue #6 (clips/s per core; best times of the same rounds)."""
    per_core = {k: n / t for k, t in best.items()}
    ray1 = per_core[f"ours:ray{workers[0]}"] / workers[0]
    floor = per_core[f"floor:{floor_name}"]
    out = {}
    if "original" in best:
        out["ours/original per core (Ray, warm run)"] = _ratio(ray1 / per_core["original"], 10.0)
        out["ours/original per core (in-process)"] = _ratio(per_core["ours:in-process"] / per_core["original"], 10.0)
    out["ours/floor per core (Ray, warm run)"] = _ratio(ray1 / floor, 0.5)
    out["ours/floor per core (in-process)"] = _ratio(per_core["ours:in-process"] / floor, 0.5)
    out["ours spectrogram only / floor (in memory)"] = _ratio(per_core["ours:spectrogram"] / floor, 0.5)
    if 1 in workers and 2 in workers:
        out["parallel efficiency 1->2 (Ray, whole run)"] = _ratio(
            per_core["ours:ray2"] / (2 * per_core["ours:ray1"]), 0.85)
        if "ours:pool2" in per_core:
            out["parallel efficiency 1->2 (process pool vs in-process)"] = _ratio(
                per_core["ours:pool2"] / (2 * per_core["ours:in-process"]), 0.85)
    return out


def _ratio(value: float, target: float) -> dict:
    return {"value": round(value, 3), "target": f">= {target:g}", "met": bool(value >= target)}


if __name__ == "__main__":
    main()
