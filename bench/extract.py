"""Spectrogram extraction throughput: the original PNG pipeline vs ours (Ray Data, process pool) vs the floor;
and the driver's peak memory while a search extracts and hands out the spectrograms, at two corpus sizes.

    .venv/bin/python bench/extract.py [--data DIR] [--clips N] [--repeats 3] [--workers 1 2]
                                      [--driver-clips 600 6000] [--skip-driver]

Measured on the same clips, one after the other in this process (ratios are back to back):

(a) original  the research code's extraction, reimplemented faithfully on one core: librosa.load
              (resampling to 22.05 kHz), STFT (n_fft 1024, Hamming), a 240-band mel filterbank on the
              complex STFT, amplitude_to_db re max, min-max to 0..255, PNG written with PIL; then the
              normalisation pass: every PNG read for its width, read again, cropped to the shortest,
              written, read again, resized to 120 rows (bicubic) and written again.
(b) ours      the product at the paper preset (22.05 kHz, Hamming, n_fft 1024, hop 256, 120 bands):
              - in-process, one core: auttention.extraction.extract, ProcessPool(1) (decode, resample,
                spectrogram, Parquet);
              Ray Data and the plain tasks run after the rounds of the others, in a fresh Ray session per
              CPU count (--workers: Ray Data uses every CPU of its cluster), both back to back in each
              round; and again on the demo corpus of --scaling-clips clips (default 6,000: fixed costs
              of a run weigh less);
              - Ray Data: extraction.extract with search.extract.RayData (what ensure_spectrograms calls: map_batches,
                write_parquet by the workers) with 1, 2, ... tasks at once; the first call in a fresh
                Ray session (worker start-up, imports) is reported apart from warm runs (later calls,
                workers reused); Ray's workers run at niceness 0 here (--ray-niceness; Ray's default
                15 starves them on a shared machine);
              - the plain Ray tasks Ray Data replaced (one task per chunk returning its table to the
                driver, which wrote the parts: `plain_task_extract` below), same chunks, same counts;
              - the local process pool: extraction.extract, ProcessPool(n), pool start included.
(c) floor     STFT + mel + dB of audio already decoded and resampled in memory, one core: the fastest of
              librosa, NumPy framing + scipy.fft (float32) with a dense or a sparse filterbank, and the
              product's own mel_spectrogram (so the floor is never slower than what we ship).

Ray is started and warmed up first; then every measurement runs once per round, --repeats rounds,
so that changes in the load of a shared machine hit all of them alike; the best of the rounds is
kept. Throughput in clips/s and audio-seconds/s.

(d) driver    for the demo corpus at each --driver-clips size (the generator's own size option: 600 is
              the built-in corpus, other sizes are synthesised once into the cache), a fresh Python
              process does what `run` does before the trials start, with the demo space's spectrogram
              setting (whole clips): Ray started, ensure_spectrograms (Ray Data, into a fresh cache),
              spectrogram_sources (auto); its peak RSS (VmHWM) then, against the spectrograms'
              size, and after it also reads them itself, as the replaced code did before ray.put.

Prints tables and writes bench/results/extract.json. Nothing here asserts a time or a size.
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

# -- what Ray Data replaced --------------------------------------------------------------------------

def plain_task_extract(corpus, cfg, out: Path) -> None:
    """The extraction before Ray Data, for comparison: the same chunks as RayData, one Ray task each
    (one per CPU of the session in flight) returning its Arrow table; the driver writes each as a part."""
    import ray

    from auttention import spectrogram as spectro
    from auttention.config import to_dict
    from search.extract import MAX_CHUNK, MIN_CHUNK, _batch

    parallelism = int(ray.cluster_resources()["CPU"])
    frames = spectro.common_frames(corpus, cfg)
    rows = corpus[["file_name", "path", "partition", "label"]].reset_index(drop=True)
    chunk = int(np.clip(np.ceil(len(rows) / (4 * parallelism)), MIN_CHUNK, MAX_CHUNK))
    chunks = [rows.iloc[i:i + chunk] for i in range(0, len(rows), chunk)]
    task = ray.remote(num_cpus=1)(_batch)
    if out.exists():
        shutil.rmtree(out)
    (out / "parquet").mkdir(parents=True)
    in_flight, settings = [], to_dict(cfg)
    for i in range(len(chunks)):
        while len(in_flight) < parallelism and chunks:
            in_flight.append(task.remote(chunks.pop(0), settings, frames))
        done, in_flight = ray.wait(in_flight, num_returns=1)
        spectro.write_part(ray.get(done[0]), out / "parquet" / f"part-{i:05d}.parquet")


def pool_extract(corpus, cfg, out: Path, jobs: int):
    """extraction.extract with a ProcessPool of `jobs`, into a fresh folder each call (it reuses a finished one)."""
    from auttention.extraction import ProcessPool, extract

    return extract(corpus, cfg, Path(tempfile.mkdtemp(dir=out.parent)) / out.name, ProcessPool(jobs))


def ray_scaling(corpus, cfg, workers: list[int], repeats: int, tmp: Path) -> dict:
    """Ray Data (RayData) and the plain tasks it replaced, each in a fresh Ray session per CPU count
    (Ray Data uses every CPU of its cluster): the session's start, its first extraction (worker start-up,
    imports), then `repeats` rounds of both, back to back. {key: seconds or [seconds]}."""
    import ray

    from auttention.extraction import extract
    from search.extract import RayData

    def ray_extract(corpus, cfg, out):  # a fresh folder each call: extract reuses a finished one
        return extract(corpus, cfg, Path(tempfile.mkdtemp(dir=out.parent)) / out.name, RayData())
    from search.raysession import start_ray

    out: dict = {}
    for w in workers:
        t_init, _ = timed(lambda: start_ray(None, dashboard=False, num_cpus=w))
        try:
            t_cold, _ = timed(lambda: ray_extract(corpus, cfg, tmp / "ray-cold"))
            plain_task_extract(corpus, cfg, tmp / "tasks-warm")  # its workers warm too
            out[f"init{w}"], out[f"first{w}"] = t_init, t_cold
            out[f"ours:ray{w}"], out[f"tasks:ray{w}"] = [], []
            for r in range(repeats):
                out[f"ours:ray{w}"].append(timed(lambda: ray_extract(corpus, cfg, tmp / f"ray{w}"))[0])
                out[f"tasks:ray{w}"].append(timed(lambda: plain_task_extract(corpus, cfg, tmp / f"tasks{w}"))[0])
                print(f"{len(corpus)} clips, {w} CPU(s), round {r + 1}/{repeats}: Ray Data "
                      f"{out[f'ours:ray{w}'][-1]:.2f} s, plain tasks {out[f'tasks:ray{w}'][-1]:.2f} s", flush=True)
        finally:
            ray.shutdown()
    return out


# -- (d) the driver's memory -----------------------------------------------------------------------------

def demo_corpus_of(clips: int) -> Path:
    """The demo corpus with `clips` clips (the generator's size option; 600 is the built-in one)."""
    from auttention.democorpus import build_demo_corpus
    from search.prepare import CACHE_ENV, demo_corpus, home_cache

    if clips == 600:
        return demo_corpus(home_cache(os.environ.get(CACHE_ENV)), 0)
    folder = home_cache(os.environ.get(CACHE_ENV)) / "demo-corpus" / f"seed0-n{clips}"
    if not (folder / "lab" / "labels.csv").is_file():
        print(f"demo corpus: synthesising {clips} clips into {folder} (once) ...", flush=True)
        if folder.exists():
            shutil.rmtree(folder)
        build_demo_corpus(folder, n_clips=clips, seed=0)
    return folder


def driver_child(corpus_dir: str) -> None:
    """In a fresh process: what `run` does before the trials, then its peak RSS; prints one JSON line."""
    import json
    import resource

    from auttention import spectrogram as spectro
    from auttention.corpus import read_corpus
    from search.extract import ensure_spectrograms
    from search.raysession import start_ray
    from search.sources import size_bytes, spectrogram_sources
    from search.space import load_space

    def peak_mib() -> float:
        # VmHWM: this process' own peak (ru_maxrss would carry the parent's from before the exec)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    settings = load_space(Path(__file__).resolve().parent.parent / "spaces" / "demo.yaml").spectrogram_settings()[:1]
    corpus = read_corpus(corpus_dir)
    start_ray(None, dashboard=False)
    import ray

    at_start = peak_mib()
    cache = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    try:
        t, folders = timed(lambda: ensure_spectrograms(corpus, settings, cache))
        sources = spectrogram_sources(folders, corpus, "auto", lambda line: None)
        after_sources = peak_mib()
        size = sum(size_bytes(f) for f in folders.values()) / 2**20
        delivery = next(iter(sources.values())).delivery
        spec = spectro.read(next(iter(folders.values()))).with_labels(corpus)  # what the driver did before
        after_read = peak_mib()
        rows = len(spec.file_name)
    finally:
        ray.shutdown()
        shutil.rmtree(cache, ignore_errors=True)
    print("DRIVER " + json.dumps({"clips": len(corpus), "rows": rows, "spectrograms_mib": size, "delivery": delivery,
                                  "extract_seconds": t, "peak_rss_mib_ray_started": at_start,
                                  "peak_rss_mib_extracted_and_handed_out": after_sources,
                                  "peak_rss_mib_if_the_driver_reads_them": after_read}), flush=True)


def driver_memory(sizes: list[int]) -> list[dict]:
    import json
    import subprocess

    out = []
    for clips in sizes:
        folder = demo_corpus_of(clips)
        proc = subprocess.run([sys.executable, __file__, "--driver-child", str(folder)], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DRIVER ")]
        if proc.returncode or not lines:
            raise SystemExit(f"driver measurement at {clips} clips failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        out.append(json.loads(lines[-1][len("DRIVER "):]))
        print(f"driver at {clips} clips: {out[-1]}", flush=True)
    return out


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
    parser.add_argument("--driver-clips", type=int, nargs="+", default=[600, 6000],
                        help="demo corpus sizes at which to measure the driver's peak memory")
    parser.add_argument("--skip-driver", action="store_true", help="do not measure the driver's memory")
    parser.add_argument("--scaling-clips", type=int, default=6000,
                        help="also measure Ray Data's and the plain tasks' scaling on the demo corpus of this many "
                             "clips (0: not)")
    parser.add_argument("--driver-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ray_niceness(args.ray_niceness)
    if args.driver_child:
        return driver_child(args.driver_child)

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from auttention import spectrogram as spectro
    from auttention.audio import audio_length, load_audio
    from auttention.config import SPECTROGRAM_PRESETS, SpectrogramConfig
    from auttention.corpus import read_corpus

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

        # rounds: every measurement once per round, so that load changes hit all of them alike
        jobs: dict[str, callable] = {}
        if not args.skip_original:
            jobs["original"] = lambda: run_original(paths, tmp / "png")
        for name, fn in floors.items():
            jobs[f"floor:{name}"] = lambda fn=fn: [fn(a) for a in audio]
        jobs["ours:decode+resample"] = lambda: [load_audio(p, cfg.sample_rate) for p in paths]
        jobs["ours:spectrogram"] = lambda: [spectro.mel_spectrogram(a, cfg) for a in audio]
        jobs["ours:in-process"] = lambda: pool_extract(corpus, cfg, tmp / "local1", 1)
        for w in workers:
            if w > 1:
                jobs[f"ours:pool{w}"] = lambda w=w: pool_extract(corpus, cfg, tmp / f"pool{w}", w)
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
        # Ray: a fresh session per CPU count (after the rounds above: those run without Ray's workers)
        scaling = ray_scaling(corpus, cfg, workers, args.repeats, tmp)
        times.update({k: v for k, v in scaling.items() if isinstance(v, list)})
        results["ray_start"] = {k: v for k, v in scaling.items() if not isinstance(v, list)}
        if args.scaling_clips:
            big = read_corpus(demo_corpus_of(args.scaling_clips))
            results["scaling_big"] = ray_scaling(big, cfg, workers, max(1, args.repeats - 1), tmp)
            results["scaling_big"]["clips"] = len(big)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.skip_driver:
        results["driver"] = driver_memory(args.driver_clips)

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
                                    f"replaced: plain Ray tasks, {key[9:]} CPU(s), whole run (warm)"
                                    if key.startswith("tasks:") else
                                    f"ours: Ray Data, {key[8:]} CPU(s), whole run (warm)")
        rows.append((label, t, n / t, audio_s / t, 1e3 * t / n))
    rs = results["ray_start"]
    w0 = workers[0]
    rows.append((f"ours: Ray Data, {w0} CPU(s), fresh session", rs[f"first{w0}"], n / rs[f"first{w0}"],
                 audio_s / rs[f"first{w0}"], 1e3 * rs[f"first{w0}"] / n))
    print()
    print(table(rows, ["extraction", "seconds", "clips/s", "audio s/s", "ms/clip"]))
    print()
    steady = best[f"ours:ray{w0}"]
    print(f"Ray start-up: ray.init {rs[f'init{w0}']:.1f} s; first extraction in the fresh session "
          f"{rs[f'first{w0}']:.1f} s vs {steady:.2f} s warm: "
          f"{rs[f'first{w0}'] - steady:.1f} s of worker start-up and first calls")
    big = results.get("scaling_big")
    if big and 1 in workers and 2 in workers:
        b = {k: min(v) for k, v in big.items() if isinstance(v, list)}
        results["ratios"]["parallel efficiency 1->2 (Ray Data, {} clips)".format(big["clips"])] = _ratio(
            b["ours:ray1"] / (2 * b["ours:ray2"]), 0.85)
        results["ratios"]["parallel efficiency 1->2 (plain Ray tasks, replaced, {} clips)".format(big["clips"])] = _ratio(
            b["tasks:ray1"] / (2 * b["tasks:ray2"]), 0.85)
        print(table([(("ours: Ray Data" if k.startswith("ours") else "replaced: plain Ray tasks") + f", {k.rsplit('ray', 1)[1]} CPU(s)",
                      t, big["clips"] / t) for k, t in b.items()],
                    [f"{big['clips']} clips, best of {len(big['ours:ray1'])}", "seconds", "clips/s"]))
        print()
    print(f"floor = {floor_name} (max |difference| from ours on [-1, 1]: {diffs[floor_name]:.1e})")
    print()
    print(table([(k, v["value"], v["target"], "yes" if v["met"] else "NO") for k, v in results["ratios"].items()],
                ["ratio", "measured", "target", "met"]))
    if results.get("driver"):
        print()
        print(table([(d["clips"], d["rows"], d["spectrograms_mib"], d["delivery"], d["peak_rss_mib_ray_started"],
                      d["peak_rss_mib_extracted_and_handed_out"], d["peak_rss_mib_if_the_driver_reads_them"])
                     for d in results["driver"]],
                    ["clips", "rows", "spectrograms MiB", "delivery", "driver peak MiB: Ray started",
                     "extracted + handed out", "reading them too (before)"]))
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
        out["parallel efficiency 1->2 (Ray Data, whole run)"] = _ratio(
            per_core["ours:ray2"] / (2 * per_core["ours:ray1"]), 0.85)
        out["parallel efficiency 1->2 (plain Ray tasks, replaced)"] = _ratio(
            per_core["tasks:ray2"] / (2 * per_core["tasks:ray1"]), 0.85)
        if "ours:pool2" in per_core:
            out["parallel efficiency 1->2 (process pool vs in-process)"] = _ratio(
                per_core["ours:pool2"] / (2 * per_core["ours:in-process"]), 0.85)
    return out


def _ratio(value: float, target: float) -> dict:
    return {"value": round(value, 3), "target": f">= {target:g}", "met": bool(value >= target)}


if __name__ == "__main__":
    main()
