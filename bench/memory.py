"""Peak memory of a search with 1, 2, 4 concurrent trials: driver, each trial worker, the object store.

    .venv/bin/python bench/memory.py [--concurrency 1 2 4] [--epochs 2] [--data DIR]

For each concurrency k a tiny search runs through the product (search.runner.run_search): k trials,
all at once (resources.cpu = min(1, CPUs / k)), no early stopping, --epochs epochs each, the demo
corpus' spectrogram setting and the demo configuration (configs/demo.yaml's models). While it runs,
a background thread samples every process of ours (this driver and every descendant: raylet, GCS,
Ray workers, trial actors) with psutil every --interval seconds:

- RSS, USS (pages only this process holds) and PSS (shared pages divided among their sharers) from
  /proc/PID/smaps; Ray workers map the object store (plasma, in /dev/shm), so their RSS counts the
  shared spectrograms once per worker while USS counts none of it and PSS splits it;
- for each trial worker, the part of its memory that is plasma pages (resident, and private);
- the object store's bytes in use (the raylet's store statistics).

The spectrograms are read into the object store once by a Ray task (search.sources, the object-store
delivery) and every trial maps them:
the store's bytes stay the size of one copy whatever k is, each trial's plasma pages are shared,
not private, and the extra memory per added trial (PSS summed over all our processes) is compared
with the spectrogram array's size and with an estimate of one trial's own model and data.

Prints a table and writes bench/results/memory.json. Nothing asserts a size.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_folder, import_psutil, loadavg, psutil_path, table, write_result  # noqa: E402

MIB = 2**20
TRIAL_MARKERS = ("Trial", "ImplicitFunc", "run_trial")  # the trainable's actor title (ray::AuttentionTrial)


def tiny_space(k: int, epochs: int) -> dict:
    """k identical-sized trials at once (one searched value so that Optuna has something to sample)."""
    cpus = os.cpu_count() or 1
    return {
        "experiment": {"name": f"bench-memory-{k}", "metric": "fusion_score", "num_samples": k, "max_concurrent": k,
                       "seed": 0, "max_failures": 0},
        "resources": {"cpu": min(1.0, cpus / k), "gpu": 0},
        "spectrogram": {"sample_rate": 16000, "window": "hamming", "n_fft": 1024, "hop_length": 640, "n_mels": 64,
                        "clip_below": -70.0, "frames": 128},
        "seq2seq": {"cell": "gru", "layers": 1, "units": 64, "encoder_bidirectional": True,
                    "decoder_bidirectional": False, "dropout": 0.1},
        "attention": {"cell": "gru", "layers": 1, "units": 64, "encoder_bidirectional": True, "dropout": 0.1,
                      "attention": "luong"},
        "training": {"batch_size": 32, "learning_rate": {"loguniform": [0.001, 0.003]}, "seed": 0},
        "scheduler": {"type": "none", "max_epochs": epochs},
        "searcher": {"type": "random"},
    }


class MemorySampler:
    """Background sampling of our process tree's memory and the Ray object store's use."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.procs: dict[tuple[int, float], dict] = {}  # (pid, create time) -> peaks and identity
        self.tree_pss_peak = 0  # the largest sum of PSS over all our processes at one sample
        self.tree_uss_peak = 0
        self.store_used_peak = 0
        self.store_objects_peak = 0
        self.max_trials_alive = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as exc:  # a sampling error must not end the benchmark
                print(f"[memory] sampling failed: {exc}", file=sys.stderr)
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        psutil = import_psutil()
        me = psutil.Process()
        pss = uss = trials = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    name = " ".join(proc.cmdline()[:1]) or proc.name()
                    info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
            rec = self.procs.setdefault(key, {"pid": proc.pid, "names": set(), "rss": 0, "uss": 0, "pss": 0,
                                              "plasma_rss": 0, "plasma_private": 0, "driver": proc.pid == me.pid})
            rec["names"].add(name[:80])
            rec["rss"], rec["uss"], rec["pss"] = max(rec["rss"], info.rss), max(rec["uss"], info.uss), \
                max(rec["pss"], info.pss)
            pss += info.pss
            uss += info.uss
            if is_trial(rec):
                trials += 1
                plasma_rss, plasma_private = plasma_pages(proc)
                rec["plasma_rss"] = max(rec["plasma_rss"], plasma_rss)
                rec["plasma_private"] = max(rec["plasma_private"], plasma_private)
        self.tree_pss_peak = max(self.tree_pss_peak, pss)
        self.tree_uss_peak = max(self.tree_uss_peak, uss)
        self.max_trials_alive = max(self.max_trials_alive, trials)
        used, objects = object_store_use()
        self.store_used_peak = max(self.store_used_peak, used)
        self.store_objects_peak = max(self.store_objects_peak, objects)
        self.samples += 1


def is_trial(rec: dict) -> bool:
    """Whether a process is a Tune trial actor (its title is ray::ImplicitFunc... while it runs a trial)."""
    return any(n.startswith("ray::") and any(m in n for m in TRIAL_MARKERS) for n in rec["names"])


def plasma_pages(proc) -> tuple[int, int]:
    """(resident bytes, private bytes) of a process' mappings of the Ray object store (plasma, /dev/shm)."""
    rss = private = 0
    try:
        for m in proc.memory_maps(grouped=True):
            if "plasma" in m.path or m.path.startswith("/dev/shm"):
                rss += m.rss
                private += m.private_clean + m.private_dirty
    except Exception:
        pass
    return rss, private


def object_store_use() -> tuple[int, int]:
    """(bytes used, objects) in this session's object store, from the raylet's store statistics."""
    import ray

    if not ray.is_initialized():
        return 0, 0
    try:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address),
                                      timeout_seconds=10)
        return int(reply.store_stats.object_store_bytes_used), int(reply.store_stats.num_local_objects)
    except Exception:
        return 0, 0


def tensorflow_baseline() -> dict:
    """USS/PSS/RSS of a fresh Python process that has imported TensorFlow and Keras and built a tiny model:
    the fixed cost of every trial process, whatever its data."""
    import json
    import subprocess

    code = ("import os, sys, json; sys.path.append(sys.argv[1]); import psutil\n"
            "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'\n"
            "import tensorflow as tf, keras\n"
            "m = keras.Sequential([keras.Input((8, 4)), keras.layers.GRU(4)]); m.compile('adam', 'mse')\n"
            "m.fit(tf.zeros((2, 8, 4)), tf.zeros((2, 4)), verbose=0)\n"
            "i = psutil.Process().memory_full_info(); print(json.dumps([i.rss, i.uss, i.pss]))")
    out = subprocess.run([sys.executable, "-c", code, psutil_path()], capture_output=True, text=True, timeout=600)
    try:
        rss, uss, pss = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return {"rss_mib": rss / MIB, "uss_mib": uss / MIB, "pss_mib": pss / MIB}


def trial_estimate(space: dict, spec) -> dict:
    """What one trial holds of its own: two models with Adam state and gradients, and its batches.

    Its spectrograms are views of the object store (Spectrograms.select of contiguous rows) and
    training and prediction cut one batch at a time (training.batches): of the data, a trial holds
    a training batch and its reversed target, a prediction batch (256 clips), and what Keras makes
    of each (counted twice)."""
    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    from auttention.config import MODEL_CONFIGS
    from auttention.models import build_autoencoder

    _, frames, n_mels = spec.x.shape
    params = 0
    for net in ("attention", "seq2seq"):
        model, _ = build_autoencoder(MODEL_CONFIGS[net](**space[net]), frames, n_mels)
        params += model.count_params()
    clip = frames * n_mels * 4
    batch = space["training"]["batch_size"]
    data = 2 * (2 * batch + 256) * clip
    # weights + Adam m, v + gradients in float32
    model_bytes = params * 4 * 4
    # activations of one batch: a few (batch, frames, units*2) tensors per layer, kept for the gradient
    units = max(space["attention"]["units"], space["seq2seq"]["units"])
    activations = 12 * batch * frames * 2 * units * 4
    return {"params": params, "model_bytes": model_bytes, "batch_bytes": data,
            "activation_bytes": activations, "total_bytes": model_bytes + data + activations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4], help="concurrent trials to measure")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--data", help="corpus folder or manifest CSV (default: the built-in demo corpus)")
    args = parser.parse_args()

    import ray

    from auttention import spectrogram as spectro
    from auttention.corpus import read_corpus
    from auttention.io import write_yaml
    from search.extract import ensure_spectrograms
    from search.prepare import CACHE_ENV, home_cache
    from search.raysession import start_ray
    from search.runner import run_search
    from search.space import load_space

    load_start = loadavg()
    data = str(corpus_folder(args.data))
    print(f"load average {load_start}; concurrency {args.concurrency}; {args.epochs} epoch(s) per trial")
    runs = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    # the spectrograms extracted beforehand: the measured runs only read the cache
    write_yaml(runs / "probe.yaml", tiny_space(1, args.epochs))
    settings = load_space(runs / "probe.yaml").spectrogram_settings()
    start_ray(None, dashboard=False)
    try:
        folders = ensure_spectrograms(read_corpus(data), settings, home_cache(os.environ.get(CACHE_ENV)), lambda s: print(f"[cache] {s}"))
    finally:
        ray.shutdown()
    spec = spectro.read(next(iter(folders.values())))
    spec_bytes = int(spec.x.nbytes)
    print(f"spectrograms: {spec.x.shape} float32 = {spec_bytes / MIB:.1f} MiB")

    runs_out = []
    for k in args.concurrency:
        space = tiny_space(k, args.epochs)
        path = runs / f"memory-{k}.yaml"
        write_yaml(path, space)
        print(f"\n{k} concurrent trial(s) ...", flush=True)
        with MemorySampler(args.interval) as sampler:
            t0 = time.perf_counter()
            run_search(str(path), data=data, runs=str(runs), dashboard=False,
                       name=f"bench-memory-{k}-{time.strftime('%H%M%S')}")
            seconds = time.perf_counter() - t0
        runs_out.append(summarise(k, sampler, seconds))
        r = runs_out[-1]
        print(f"  driver peak RSS {r['driver']['rss_mib']:.0f} MiB; trials {r['trials_seen']} "
              f"(at most {r['max_trials_alive']} at once); object store peak {r['store_used_peak_mib']:.1f} MiB; "
              f"all our processes: peak PSS {r['tree_pss_peak_mib']:.0f} MiB", flush=True)

    estimate = trial_estimate(tiny_space(1, args.epochs), spec)
    analysis = analyse(runs_out, spec_bytes, estimate)
    analysis["TensorFlow process baseline USS (MiB)"] = tensorflow_baseline().get("uss_mib", math.nan)
    results = {"load_start": load_start, "load_end": loadavg(), "epochs": args.epochs,
               "spectrogram_shape": list(spec.x.shape), "spectrogram_bytes": spec_bytes,
               "trial_estimate": estimate, "runs": runs_out, "analysis": analysis}
    report(results)
    import shutil

    shutil.rmtree(runs, ignore_errors=True)
    print(f"wrote {write_result('memory', results)}")


def summarise(k: int, sampler: MemorySampler, seconds: float) -> dict:
    procs = list(sampler.procs.values())
    driver = next(p for p in procs if p["driver"])
    trials = [p for p in procs if is_trial(p)]

    def mib(p: dict) -> dict:
        return {"rss_mib": p["rss"] / MIB, "uss_mib": p["uss"] / MIB, "pss_mib": p["pss"] / MIB,
                "plasma_rss_mib": p["plasma_rss"] / MIB, "plasma_private_mib": p["plasma_private"] / MIB,
                "names": sorted(p["names"])}

    return {"concurrency": k, "seconds": seconds, "samples": sampler.samples, "driver": mib(driver),
            "trials": [mib(p) for p in trials], "trials_seen": len(trials), "max_trials_alive": sampler.max_trials_alive,
            "other_processes": sorted((mib(p) for p in procs if not p["driver"] and not is_trial(p)),
                                      key=lambda p: -p["pss_mib"]),
            "tree_pss_peak_mib": sampler.tree_pss_peak / MIB, "tree_uss_peak_mib": sampler.tree_uss_peak / MIB,
            "store_used_peak_mib": sampler.store_used_peak / MIB, "store_objects_peak": sampler.store_objects_peak}


def analyse(runs: list[dict], spec_bytes: int, estimate: dict) -> dict:
    """Extra memory per added concurrent trial vs the spectrograms' size and one trial's own estimate."""
    out: dict = {"spectrogram_mib": spec_bytes / MIB, "trial_estimate_mib": estimate["total_bytes"] / MIB}
    base = runs[0]
    for r in runs[1:]:
        added = r["concurrency"] - base["concurrency"]
        if added <= 0:
            continue
        extra = (r["tree_pss_peak_mib"] - base["tree_pss_peak_mib"]) / added
        out[f"extra PSS per added trial, {base['concurrency']}->{r['concurrency']} (MiB)"] = extra
    out["object store peak by concurrency (MiB)"] = {r["concurrency"]: r["store_used_peak_mib"] for r in runs}
    out["object store peak / spectrogram size, by concurrency"] = {
        r["concurrency"]: r["store_used_peak_mib"] * MIB / spec_bytes for r in runs}
    plasma = [t["plasma_rss_mib"] for r in runs for t in r["trials"]]
    private = [t["plasma_private_mib"] for r in runs for t in r["trials"]]
    out["trial plasma pages resident, max (MiB)"] = max(plasma) if plasma else math.nan
    out["trial plasma pages private, max (MiB)"] = max(private) if private else math.nan
    uss = [t["uss_mib"] for r in runs for t in r["trials"]]
    out["trial USS, median (MiB)"] = sorted(uss)[len(uss) // 2] if uss else math.nan
    return out


def report(results: dict) -> None:
    rows = []
    for r in results["runs"]:
        t = r["trials"]
        rows.append((r["concurrency"], r["max_trials_alive"], r["driver"]["rss_mib"], r["driver"]["uss_mib"],
                     _med([x["rss_mib"] for x in t]), _med([x["uss_mib"] for x in t]), _med([x["pss_mib"] for x in t]),
                     _med([x["plasma_rss_mib"] for x in t]), _med([x["plasma_private_mib"] for x in t]),
                     r["store_used_peak_mib"], r["tree_pss_peak_mib"]))
    print()
    print(table(rows, ["trials", "alive", "driver RSS", "driver USS", "trial RSS", "trial USS", "trial PSS",
                       "trial plasma", "plasma private", "store used", "all PSS"]))
    print("(MiB; peaks; trial columns: median over the trials)")
    print()
    for k, v in results["analysis"].items():
        print(f"  {k}: {v if not isinstance(v, float) else round(v, 1)}")
    print(f"load average: start {results['load_start']}, end {results['load_end']}")


def _med(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else math.nan


if __name__ == "__main__":
    main()
