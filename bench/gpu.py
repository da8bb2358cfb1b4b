"""The GPU path in one command: training speed and cuDNN use, then four trials sharing one GPU.

    .venv/bin/python bench/gpu.py [--sizes demo paper] [--models seq2seq bahdanau luong] [--no-search]

On a machine without a GPU it prints one line saying so and exits 0. On a GPU machine (about
5 minutes; not yet run on one: no GPU was lent to the project when it was written):

1. Training and feature extraction samples/s of seq2seq, Bahdanau and Luong at the demo size
   (configs/demo.yaml: 1 x 64 units, batch 32, 128 frames, 64 mel bands) and the paper size
   (2 x 256 units, batch 64, 200 frames, 120 mel bands; bench/train.py's sizes), through the
   product's path (Trainer.fit_epoch, Trainer.features), rows of random lengths (right-padded,
   masked, as a corpus' clips are), in a child process with memory growth on:
   - `xla off`: the product's GPU path. Keras runs every GRU/LSTM layer on cuDNN when it can, and
     then refuses XLA for the whole model (cuDNN ops do not compile), so training.jit_compile (on
     by default) changes nothing here;
   - `xla on`: cuDNN switched off (Keras' cudnn_ok made to answer no, one patch in `no_cudnn`,
     checked against Keras 3.15) so that XLA can compile the step: what XLA would give instead.
   Which layers ran on cuDNN, and how we know: Keras 3 (keras/src/backend/tensorflow/rnn.py,
   `gru`/`lstm`) emits a `CudnnRNNV3` op for a GRU/LSTM layer only when its arguments allow it
   (tanh/sigmoid activations, no unrolling, biases, GRU reset_after), a GPU is visible and the op
   can be built; otherwise it raises NotImplementedError and the layer's `inner_loop` silently
   falls back to the generic while loop. So the forward pass is traced (as the training step
   traces it) and each RNN layer (Bidirectional: both directions) is "on cuDNN" if a CudnnRNNV3 op
   sits under its name scope. The cuDNN kernel also needs right-padded masks without an empty row
   (`_assert_valid_mask` puts a tf.Assert in the graph): the clips here have random lengths, so a
   timed epoch that runs has passed that assertion. The Bahdanau decoder is a tf.scan over GRU
   cells: never cuDNN, by construction.
2. Four trials at `resources.gpu: 0.25` at once on one GPU: a real tiny `auttention-search run` of
   a small space on a 120-clip demo corpus, 3 epochs, while nvidia-smi is sampled twice a second:
   each trial process' peak GPU memory against its share (a quarter of the GPU's memory; a trial
   caps TensorFlow at 90% of it, search.resources.configure_tensorflow), the GPU's peak in all, and
   each trial's result (the fusion rho; older runs call it fused_rho).

Prints a table and writes bench/results/gpu.json, which bench/scale.py reads for its GPU-node
projection. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, loadavg, table, write_result  # noqa: E402

from auttention.record import FUSION, NETWORKS, EpochReport  # noqa: E402

MIB = 2**20
SHARE = 0.25
TRIALS = 4
MIN_SECONDS = 2.0
SEARCH_TIMEOUT_S = 480  # the four-trial search, export included (about a minute on a GPU, expected)  # per variant: timed epochs until this much time is measured (at least 2)


def nvidia_gpus() -> list[dict]:
    """The GPUs nvidia-smi lists (index, name, memory total MiB); [] without nvidia-smi or a GPU."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines() if out.returncode == 0 else []:
        index, name, total = [v.strip() for v in line.split(",")]
        gpus.append({"index": int(index), "name": name, "memory_total_mib": float(total)})
    return gpus


# -- 1. training (in a child process) ----------------------------------------------------------

@contextlib.contextmanager
def no_cudnn():
    """Keras' GRU/LSTM layers built and traced inside take the generic loop, never cuDNN (Keras 3.15:
    `cudnn_ok` decides both the layer's XLA support at construction and the kernel at trace time)."""
    import importlib

    from keras.src import backend

    rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")  # the module (the package exports a function `rnn`)

    saved = backend.cudnn_ok, rnn.cudnn_ok
    backend.cudnn_ok = rnn.cudnn_ok = lambda *args, **kwargs: False
    try:
        yield
    finally:
        backend.cudnn_ok, rnn.cudnn_ok = saved


def rnn_layers(model) -> list:
    """Every GRU/LSTM layer of a model, the two directions of a Bidirectional as two."""
    import keras

    found = []

    def visit(layer):
        if isinstance(layer, keras.layers.Bidirectional):
            found.extend([layer.forward_layer, layer.backward_layer])
        elif isinstance(layer, keras.layers.RNN):
            found.append(layer)
        for sub in getattr(layer, "layers", []) or []:
            visit(sub)

    for layer in model.layers:
        visit(layer)
    return found


def graph_ops(concrete) -> list[tuple[str, str]]:
    """(name, type) of every op of a traced function, those of the functions it calls included."""
    graph_def = concrete.graph.as_graph_def()
    ops = [(n.name, n.op) for n in graph_def.node]
    for function in graph_def.library.function:
        ops += [(f"{function.signature.name}/{n.name}", n.op) for n in function.node_def]
    return ops


def cudnn_use(trainer, batch: int) -> dict:
    """Which RNN layers of the autoencoder the traced training forward pass runs on cuDNN."""
    import tensorflow as tf

    model = trainer.autoencoder
    fn = tf.function(lambda x, lengths: model([x, lengths], training=True))
    concrete = fn.get_concrete_function(tf.TensorSpec((batch, trainer.n_frames, trainer.n_mels), tf.float32),
                                        tf.TensorSpec((batch,), tf.int32))
    ops = graph_ops(concrete)
    cudnn = [name for name, kind in ops if kind.startswith("CudnnRNN") and "Backprop" not in kind]
    layers = rnn_layers(model)

    def on_cudnn(layer) -> bool:
        pattern = re.compile(rf"{re.escape(layer.name)}(_\d+)?")
        return any(any(pattern.fullmatch(part) for part in name.split("/")) for name in cudnn)

    names = [layer.name for layer in layers]
    on = [layer.name for layer in layers if on_cudnn(layer)]
    return {"rnn_layers": names, "on_cudnn": on, "not_on_cudnn": [n for n in names if n not in on],
            "cudnn_ops": len(cudnn), "while_loops": sum(kind in ("While", "StatelessWhile") for _, kind in ops)}


def measure_training(sizes: list[str], models: list[str], xlas: list[str]) -> list[dict]:
    """Every (size, model, xla) variant: warm-up, training and feature samples/s, cuDNN use, memory."""
    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    from train import model_config
    from train import sizes as train_sizes

    from auttention.config import TrainingConfig
    from auttention.training import Trainer

    rows = []
    all_sizes = train_sizes(200)
    for size_name in sizes:
        size = all_sizes[size_name]
        b, t, f = size["batch"], size["frames"], size["n_mels"]
        batches = 16 if size_name == "demo" else 8
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (batches * b, t, f)).astype(np.float32)
        lengths = rng.integers(t // 2, t + 1, len(x)).astype(np.int32)
        x[np.arange(t)[None, :] >= lengths[:, None]] = 0.0  # right-padded, as the spectrogram cache is
        for model in models:
            for xla in xlas:
                with (no_cudnn() if xla == "on" else contextlib.nullcontext()):
                    row = {"size": size_name, "model": model, "xla": xla, "frames": t, "n_mels": f, "batch": b}
                    try:
                        row.update(_one_variant(Trainer, TrainingConfig, model_config(size, model), b, t, f, x,
                                                lengths, xla == "on"))
                    except Exception as exc:  # one failing variant must not hide the others
                        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                rows.append(row)
                print(f"  {size_name} {model} xla {xla}: " + (row.get("error") or
                      f"{row['train_samples_s']:.0f} samples/s training, cuDNN {len(row['cudnn']['on_cudnn'])}/"
                      f"{len(row['cudnn']['rnn_layers'])} RNN layers"), flush=True)
    return rows


def _one_variant(Trainer, TrainingConfig, cfg, b, t, f, x, lengths, xla: bool) -> dict:
    import tensorflow as tf

    t0 = time.perf_counter()
    trainer = Trainer(cfg, TrainingConfig(batch_size=b, jit_compile=xla), t, f)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.fit_epoch(x[:b], lengths[:b])  # traces (with XLA: compiles) the training step
    trainer.features(x[:b], lengths[:b])
    warm = time.perf_counter() - t0
    epochs = []
    while len(epochs) < 2 or sum(epochs) < MIN_SECONDS:
        t0 = time.perf_counter()
        trainer.fit_epoch(x, lengths)
        epochs.append(time.perf_counter() - t0)
    feats = []
    while len(feats) < 2 or sum(feats) < 1.0:
        t0 = time.perf_counter()
        trainer.features(x, lengths)
        feats.append(time.perf_counter() - t0)
    peak = None
    with contextlib.suppress(Exception):
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / MIB
        tf.config.experimental.reset_memory_stats("GPU:0")
    return {"build_s": build, "warm_up_s": warm, "epoch_s": min(epochs), "train_samples_s": len(x) / min(epochs),
            "features_samples_s": len(x) / min(feats), "xla_used": bool(trainer.jit_compile),
            "cudnn": cudnn_use(trainer, b), "gpu_peak_mib_so_far": peak}


# -- 2. four trials on one GPU -----------------------------------------------------------------

def metric_name() -> str:
    """The fusion branch's score, the metric the search reports and ranks by (auttention/record.py)."""
    from auttention.record import FUSION
    from auttention.record import metric_name as named

    return named(FUSION)


def tiny_space(cpus: float) -> dict:
    """Four small trials at once, each a quarter of one GPU, 3 epochs, no early stopping."""
    return {
        "experiment": {"name": "bench-gpu", "metric": metric_name(), "num_samples": TRIALS,
                       "max_concurrent": TRIALS, "seed": 0, "max_failures": 0},
        "resources": {"cpu": cpus, "gpu": SHARE},
        "spectrogram": {"sample_rate": 16000, "window": "hamming", "n_fft": 1024, "hop_length": 640, "n_mels": 64,
                        "clip_below": -70.0, "frames": 128},
        "seq2seq": {"cell": "gru", "layers": 1, "units": 64, "encoder_bidirectional": True,
                    "decoder_bidirectional": False, "dropout": 0.1},
        "attention": {"cell": "gru", "layers": 1, "units": 64, "encoder_bidirectional": True, "dropout": 0.1,
                      "attention": {"choice": ["luong", "bahdanau"]}},
        "training": {"batch_size": 32, "learning_rate": {"loguniform": [0.001, 0.003]}, "seed": 0},
        "scheduler": {"type": "none", "max_epochs": 3},
        "searcher": {"type": "random"},
    }


class GpuSampler:
    """nvidia-smi every `interval` s: each compute process' GPU memory (MiB) and the GPU's in all, peaks kept."""

    def __init__(self, index: int, interval: float = 0.5) -> None:
        self.index, self.interval = index, interval
        self.per_pid: dict[int, float] = {}
        self.titles: dict[int, str] = {}
        self.total_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _query(self, what: str) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits", "-i", str(self.index)],
                             capture_output=True, text=True, timeout=10)
        return [[v.strip() for v in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                for row in self._query("compute-apps=pid,used_memory"):
                    with contextlib.suppress(ValueError):  # "[N/A]" where the driver hides a process' memory
                        pid, used = int(row[0]), float(row[1])
                        self.per_pid[pid] = max(self.per_pid.get(pid, 0.0), used)
                        self.titles.setdefault(pid, _title(pid))
                for row in self._query("gpu=memory.used"):
                    with contextlib.suppress(ValueError, IndexError):
                        self.total_peak = max(self.total_peak, float(row[0]))


def _title(pid: int) -> str:
    """A process' title (Ray names a trial's worker ray::AuttentionTrial...), '' where unreadable
    (nvidia-smi in a container may report host pids)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return ""


def read_results(run_dir: Path) -> list[dict]:
    """Each trial's last result (Tune's result.json lines)."""
    out = []
    for path in sorted((run_dir / "tune").glob("trial_*/result.json")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            last = max(lines, key=lambda r: r.get("training_iteration", 0))
            report = EpochReport.from_result(last)
            out.append({"trial": path.parent.name, "epochs": report.epoch,
                        **{f"{branch}_score": report.scores[branch].score if branch in report.scores else None
                           for branch in (FUSION, *NETWORKS)},
                        "epoch_seconds": [r.get("epoch_seconds") for r in lines],
                        "time_total_s": last.get("time_total_s")})
    return out


def cli() -> list[str]:
    """The product's console script next to this Python (python -m search where it is missing)."""
    script = Path(sys.executable).with_name("auttention-search")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "search"]


def run_bounded(command: list[str], env: dict, timeout: float) -> tuple[int | None, str]:
    """(exit status, output) of a command in its own process group; past `timeout` the group gets SIGINT
    (the search shuts Ray down), then SIGKILL: no Ray process outlives the benchmark. None: timed out."""
    import signal

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output = proc.communicate(timeout=timeout)[0]
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGINT, 60), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                return None, proc.communicate(timeout=grace)[0]
            except subprocess.TimeoutExpired:
                continue
        return None, ""


def four_trials(gpu: dict, work: Path) -> dict:
    """The tiny search of four trials at gpu 0.25, with nvidia-smi's per-process peaks against the share."""
    import yaml

    cpus = max(1, min(4, (os.cpu_count() or 4) // TRIALS))
    space = work / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(cpus), sort_keys=False))
    corpus, runs, cache = work / "corpus", work / "runs", work / "cache"
    t0 = time.perf_counter()
    made = subprocess.run([*cli(), "demo-corpus", str(corpus), "--clips", "120"], capture_output=True, text=True)
    if made.returncode:
        return {"error": f"demo-corpus failed: {(made.stderr or made.stdout).strip().splitlines()[-1:]}"}
    corpus_s = time.perf_counter() - t0
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu["index"])}  # one GPU: all four trials share it
    command = [*cli(), "run", str(space), "--data", str(corpus), "--name", "bench-gpu", "--runs", str(runs),
               "--cache", str(cache), "--no-dashboard"]
    t0 = time.perf_counter()
    with GpuSampler(gpu["index"]) as sampler:  # nvidia-smi numbers GPUs physically, whatever CUDA_VISIBLE_DEVICES says
        returncode, output = run_bounded(command, env, SEARCH_TIMEOUT_S)
    wall = time.perf_counter() - t0
    share_mib = gpu["memory_total_mib"] * SHARE
    processes = [{"pid": pid, "title": sampler.titles.get(pid, ""), "peak_mib": peak,
                  "share_mib": share_mib, "within_share": peak <= share_mib}
                 for pid, peak in sorted(sampler.per_pid.items())]
    return {"command": " ".join(["auttention-search", *command[len(cli()):]]), "returncode": returncode,
            "timed_out": returncode is None, "output_tail": output.strip().splitlines()[-15:], "corpus_s": corpus_s,
            "wall_s": wall, "cpus_per_trial": cpus, "memory_total_mib": gpu["memory_total_mib"], "share_mib": share_mib, "gpu_peak_total_mib": sampler.total_peak,
            "processes": processes, "trials": read_results(runs / "bench-gpu"), "space": tiny_space(cpus)}


# -- the command ---------------------------------------------------------------------------------

def report(rows: list[dict], search: dict | None) -> None:
    print()
    print(table([[r["size"], r["model"], r["xla"], r.get("train_samples_s"), r.get("features_samples_s"),
                  r.get("warm_up_s"), "yes" if r.get("xla_used") else "no",
                  f"{len(r['cudnn']['on_cudnn'])}/{len(r['cudnn']['rnn_layers'])}" if "cudnn" in r else "",
                  ", ".join(r["cudnn"]["not_on_cudnn"]) if "cudnn" in r else r.get("error", "")]
                 for r in rows],
                ["size", "model", "xla", "train samples/s", "features samples/s", "warm-up s", "XLA used",
                 "RNN layers on cuDNN", "not on cuDNN / error"]))
    if not search:
        return
    print()
    if "error" in search:
        print(f"four trials at gpu {SHARE}: {search['error']}")
        return
    print(f"four trials at gpu {SHARE} on one GPU: {'timed out' if search['timed_out'] else 'exit ' + str(search['returncode'])}, {search['wall_s']:.0f} s; "
          f"GPU peak in all {search['gpu_peak_total_mib']:,.0f} MiB of {search['memory_total_mib']:,.0f}")
    print(table([[p["pid"], p["title"][:60], p["peak_mib"], p["share_mib"], "yes" if p["within_share"] else "NO"]
                 for p in search["processes"]], ["pid", "process", "peak MiB", "share MiB", "within share"]))
    print(table([[t["trial"], t["epochs"], t["fusion_score"], t["attention_score"], t["seq2seq_score"], t["time_total_s"]]
                 for t in search["trials"]], ["trial", "epochs", "fusion score", "attention score", "seq2seq score",
                                              "wall s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["demo", "paper"], choices=["demo", "paper"])
    parser.add_argument("--models", nargs="+", default=["seq2seq", "bahdanau", "luong"],
                        choices=["seq2seq", "bahdanau", "luong"])
    parser.add_argument("--xla", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--no-search", action="store_true", help="skip the four-trial search")
    parser.add_argument("--training-child", help=argparse.SUPPRESS)  # internal: the child's JSON output
    args = parser.parse_args()

    if args.training_child:
        rows = measure_training(args.sizes, args.models, args.xla)
        Path(args.training_child).write_text(json.dumps(rows))
        return
    gpus = nvidia_gpus()
    if not gpus:
        print("bench/gpu.py: no GPU on this machine (nvidia-smi is missing or lists none); nothing measured")
        return
    load_start, t_start = loadavg(), time.perf_counter()
    gpu = gpus[0]
    print(f"GPU: {gpu['name']}, {gpu['memory_total_mib']:,.0f} MiB (of {len(gpus)} GPU(s)); training variants ...",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        out = work / "training.json"
        child = subprocess.run([sys.executable, __file__, "--training-child", str(out), "--sizes", *args.sizes,
                                "--models", *args.models, "--xla", *args.xla],
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu["index"])}, cwd=ROOT)
        if child.returncode or not out.is_file():
            print(f"bench/gpu.py: the training child failed (exit {child.returncode}); see its output above")
            sys.exit(1)
        rows = json.loads(out.read_text())
        if not any("train_samples_s" in r for r in rows) and all("error" in r for r in rows):
            print("bench/gpu.py: no variant trained; TensorFlow may not see the GPU (CUDA libraries?)")
        search = None if args.no_search else four_trials(gpu, work)
    report(rows, search)
    path = write_result("gpu", {"gpu": gpu, "gpus": len(gpus), "share": SHARE, "training": rows, "four_trials": search,
                                "load_start": load_start, "load_end": loadavg(),
                                "wall_s": time.perf_counter() - t_start})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
