"""What a ComParE-size search costs: a trial epoch's time against clips, frames and units, fit, projected.

    .venv/bin/python bench/scale.py [--frames 200] [--trials 200] [--no-before]

A trial epoch (search/trial.py) is: one epoch of each autoencoder on the training clips, the
features of train and devel from both, and select_c for attention, seq2seq and their fusion.
Measured here, on this machine, one TensorFlow thread and one BLAS thread (a trial of one CPU):

- training and feature extraction of the paper's two autoencoders (2-layer bidirectional GRU
  encoders, Bahdanau attention with attention_units = units, a bidirectional seq2seq decoder,
  dropout 0.2, batch 64, 120 mel bands; random frames, the speed does not depend on them) at a
  base point (64 clips, 50 frames, 64 units) and, one factor at a time, at 64/128/256 clips,
  50/100/200 frames and 64/128/256 units: each point one untimed warm-up epoch (tracing), then one
  timed epoch, the features of its clips (after an untimed call that traces their batch shape) and
  the three select_c (included in the point's epoch);
  each component fit as k * clips * frames^b * units^c (least squares in logs; an epoch's time is
  proportional to its clips, and a free fit's clip exponent is printed as the check);
- the scoring at ComParE's size itself, not extrapolated: select_c on random features of the
  paper configuration's sizes (attention 512, seq2seq 256, fusion 768) for 1/4, 1/2 and all of
  ComParE's 5,564 train / 5,328 devel clips; and, unless --no-before, select_c as it was before
  auttention/svr.py (a liblinear LinearSVR per C from zero) at the full size;
- a trial's start-up: a fresh Python importing TensorFlow (timed in a subprocess), building both
  paper-size autoencoders and tracing their steps (the 256-unit point's build and warm-up, less
  its clips' steady cost). Ray's own worker start-up (about a second) is not included.

The projection: 200 trials (`--trials`) of spaces/paper.yaml's ASHA (max 10 epochs, grace 2,
reduction 2: rungs at 2, 4 and 8 epochs, half the trials continue past each, so 4.25 epochs per
trial on average; every epoch scored, report_every 1) on ComParE (training on its 5,564 train
clips, features of those and its 5,328 devel clips) at `--frames` frames (default 200: the paper
preset crops every clip to the shortest training clip; 200 frames = 2.3 s at its 22.05 kHz and
hop 256, what bench/train.py uses as the paper size; pass your corpus' figure), every trial at
2 x 256 units (the paper's point; the searched 128-384 average about that):

- this machine: two trials at once, one CPU each;
- one 8-GPU node at four trials per GPU (32 at once): the trials' training and features from
  bench/results/gpu.json (paper size, cuDNN path, one trial alone on a GPU, divided by four: the
  GPU's throughput shared) when it exists, "not measured" otherwise; the scoring and start-up on
  the trial's CPU (this machine's per-core figure);
- the CPU part alone on that node (scoring and start-up, a lower bound whatever the GPU does),
  with the scoring of now and, where measured, of before.

Prints the tables (the projection also in Markdown for docs/PERFORMANCE.md) and writes
bench/results/scale.json with a `projections` list of {"setting", "hours"}. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, loadavg, markdown_table, table, write_result  # noqa: E402

COMPARE = {"train": 5564, "devel": 5328}
PAPER_UNITS = 256
BASE = {"clips": 64, "frames": 50, "units": 64}
SERIES = {"clips": [64, 128, 256], "frames": [50, 100, 200], "units": [64, 128, 256]}
N_MELS, BATCH = 120, 64
GPUS, TRIALS_PER_GPU = 8, 4
COMPONENTS = ("train_attention", "train_seq2seq", "features_attention", "features_seq2seq")


def model_configs(units: int):
    """The paper's attention (Bahdanau) and seq2seq autoencoders at `units`."""
    from auttention.config import AttentionConfig, Seq2seqConfig

    common = dict(cell="gru", layers=2, units=units, encoder_bidirectional=True, dropout=0.2)
    return (AttentionConfig(attention="bahdanau", attention_units=units, **common),
            Seq2seqConfig(decoder_bidirectional=True, **common))


def asha_epochs(max_epochs: int = 10, grace: int = 2, reduction: int = 2) -> float:
    """Expected epochs per trial under ASHA: all reach the first rung, 1/reduction of those each next one."""
    rungs = []
    r = grace
    while r < max_epochs:
        rungs.append(r)
        r *= reduction
    bounds = [0, *rungs, max_epochs]
    return sum((hi - lo) * reduction ** -i for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])))


def cpu_timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def score_three(att_train, att_devel, s2s_train, s2s_devel, y_train, y_devel, select_c, cfg) -> float:
    """Seconds of the trial's per-epoch scoring: select_c for attention, seq2seq and their fusion."""
    t0 = time.perf_counter()
    select_c(att_train, y_train, att_devel, y_devel, cfg)
    select_c(s2s_train, y_train, s2s_devel, y_devel, cfg)
    select_c(np.hstack([att_train, s2s_train]), y_train, np.hstack([att_devel, s2s_devel]), y_devel, cfg)
    return time.perf_counter() - t0


def measure_points(echo) -> list[dict]:
    """Every (clips, frames, units) point of the one-factor-at-a-time design."""
    from common import select_c

    from auttention.config import ScoringConfig, TrainingConfig
    from auttention.training import Trainer

    cfg = ScoringConfig()
    shapes = sorted({(BASE["frames"], BASE["units"])} | {(t, BASE["units"]) for t in SERIES["frames"]}
                    | {(BASE["frames"], u) for u in SERIES["units"]})
    rng = np.random.default_rng(0)
    points = []
    for frames, units in shapes:
        att_cfg, s2s_cfg = model_configs(units)
        train_cfg = TrainingConfig(batch_size=BATCH, learning_rate=1e-3, seed=0, jit_compile=False)
        build, (att, s2s) = cpu_timed(lambda: (Trainer(att_cfg, train_cfg, frames, N_MELS),
                                               Trainer(s2s_cfg, train_cfg, frames, N_MELS)))
        clips_list = SERIES["clips"] if (frames, units) == (BASE["frames"], BASE["units"]) else [BASE["clips"]]
        x = rng.uniform(-1, 1, (max(clips_list), frames, N_MELS)).astype(np.float32)
        lengths = np.full(len(x), frames, np.int32)
        warm = {}
        for name, trainer in (("attention", att), ("seq2seq", s2s)):
            warm[name], _ = cpu_timed(lambda: (trainer.fit_epoch(x[:BATCH], lengths[:BATCH]),
                                               trainer.features(x[:BATCH], lengths[:BATCH])))
        for clips in clips_list:
            xs, ls = x[:clips], lengths[:clips]
            p = {"clips": clips, "frames": frames, "units": units, "build_s": build,
                 "warm_up_attention_s": warm["attention"], "warm_up_seq2seq_s": warm["seq2seq"]}
            p["train_attention"], _ = cpu_timed(lambda: att.fit_epoch(xs, ls))
            p["train_seq2seq"], _ = cpu_timed(lambda: s2s.fit_epoch(xs, ls))
            att.features(xs, ls), s2s.features(xs, ls)  # untimed: a new clip count is a new batch shape, traced once
            p["features_attention"], fa = cpu_timed(lambda: att.features(xs, ls))
            p["features_seq2seq"], fs = cpu_timed(lambda: s2s.features(xs, ls))
            y = rng.integers(1, 10, clips).astype(float)
            p["scoring"] = score_three(fa, fa, fs, fs, y, y, select_c, cfg)
            p["epoch_s"] = sum(p[c] for c in (*COMPONENTS, "scoring"))
            points.append(p)
            echo(f"  {clips} clips, {frames} frames, {units} units: epoch {p['epoch_s']:.1f} s "
                 f"(train {p['train_attention']:.1f} + {p['train_seq2seq']:.1f}, features "
                 f"{p['features_attention'] + p['features_seq2seq']:.2f}, scoring {p['scoring']:.2f})")
    return points


def fit_power(points: list[dict], key: str) -> dict:
    """k, b, c of key = k * clips * frames^b * units^c (least squares in logs).

    An epoch is its batches, each the same work, so the time is proportional to the clips; fixing
    that exponent keeps the noise of small timings on a shared machine out of a 20-fold extrapolation.
    `clips_free` is the exponent a free fit gives, a check of that proportionality."""
    a = np.array([[1.0, math.log(p["frames"]), math.log(p["units"])] for p in points])
    y = np.log([p[key] / p["clips"] for p in points])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    free = np.c_[a, np.log([p["clips"] for p in points])]
    clips_free = float(np.linalg.lstsq(free, np.log([p[key] for p in points]), rcond=None)[0][3])
    return {"k": float(math.exp(coef[0])), "clips": 1.0, "frames": float(coef[1]), "units": float(coef[2]),
            "clips_free": clips_free, "max_log_error": float(np.abs(resid).max())}


def predict(fit: dict, clips: float, frames: float, units: float) -> float:
    return fit["k"] * clips ** fit["clips"] * frames ** fit["frames"] * units ** fit["units"]


def measure_scoring(before: bool, echo) -> dict:
    """select_c x 3 on random features of the paper sizes at 1/4, 1/2 and all of ComParE; before: liblinear."""
    from common import select_c
    from scoring import before as select_c_before

    from auttention.config import ScoringConfig
    from auttention.models import feature_size

    cfg = ScoringConfig()
    d_att, d_s2s = (feature_size(c) for c in model_configs(PAPER_UNITS))
    rng = np.random.default_rng(0)
    out = {"features": {"attention": d_att, "seq2seq": d_s2s, "fusion": d_att + d_s2s}, "by_clips": []}
    for share in (0.25, 0.5, 1.0):
        n_tr, n_dv = int(COMPARE["train"] * share), int(COMPARE["devel"] * share)
        data = [rng.uniform(size=(n, d)).astype(np.float32) for n, d in
                ((n_tr, d_att), (n_dv, d_att), (n_tr, d_s2s), (n_dv, d_s2s))]
        y_tr, y_dv = rng.integers(1, 10, n_tr).astype(float), rng.integers(1, 10, n_dv).astype(float)
        seconds = score_three(*data, y_tr, y_dv, select_c, cfg)
        row = {"train_clips": n_tr, "devel_clips": n_dv, "seconds": seconds}
        if before and share == 1.0:
            att_tr, att_dv, s2s_tr, s2s_dv = data
            row["before_seconds"], _ = cpu_timed(lambda: [
                select_c_before(att_tr, y_tr, att_dv, y_dv, cfg), select_c_before(s2s_tr, y_tr, s2s_dv, y_dv, cfg),
                select_c_before(np.hstack([att_tr, s2s_tr]), y_tr, np.hstack([att_dv, s2s_dv]), y_dv, cfg)])
        out["by_clips"].append(row)
        echo(f"  scoring at {n_tr} train / {n_dv} devel clips: {seconds:.1f} s"
             + (f" (before: {row['before_seconds']:.1f} s)" if "before_seconds" in row else ""))
    xs = np.log([r["train_clips"] for r in out["by_clips"]])
    slope, intercept = np.polyfit(xs, np.log([r["seconds"] for r in out["by_clips"]]), 1)
    out["fit"] = {"k": float(math.exp(intercept)), "clips": float(slope)}
    out["at_compare_s"] = out["by_clips"][-1]["seconds"]
    out["before_at_compare_s"] = out["by_clips"][-1].get("before_seconds")
    return out


def tensorflow_import_seconds() -> float:
    """A fresh Python importing TensorFlow and Keras as a trial does (best of 2)."""
    code = "import time; t = time.perf_counter(); import auttention; auttention.import_tensorflow_quietly(); " \
           "import keras; print(time.perf_counter() - t)"
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
        runs.append(float(done.stdout.strip().splitlines()[-1]))
    return min(runs)


def gpu_figures(frames: int, fits: dict) -> dict | None:
    """Paper-size training and features samples/s per model from bench/results/gpu.json (cuDNN path), or None."""
    path = RESULTS / "gpu.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get("training", [])
    found = {}
    for model, key in (("bahdanau", "attention"), ("seq2seq", "seq2seq")):
        row = next((r for r in rows if r.get("size") == "paper" and r.get("model") == model and r.get("xla") == "off"
                    and "train_samples_s" in r), None)
        if row is None:
            return None
        # gpu.py's paper size has its own frame count: scale by this machine's fitted frame exponent
        ratio = (frames / row["frames"])
        found[key] = {"train_samples_s": row["train_samples_s"] / ratio ** fits[f"train_{key}"]["frames"],
                      "features_samples_s": row["features_samples_s"] / ratio ** fits[f"features_{key}"]["frames"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per clip of the projected corpus")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--no-before", action="store_true", help="skip the liblinear scoring at ComParE size (~1-2 min)")
    args = parser.parse_args()

    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    tf.config.threading.set_intra_op_parallelism_threads(1)  # one trial of one CPU
    tf.config.threading.set_inter_op_parallelism_threads(1)
    load_start, t_start = loadavg(), time.perf_counter()
    echo = lambda line: print(line, flush=True)  # noqa: E731
    with threadpool_limits(1):
        echo("trial epochs at small sizes (one thread) ...")
        points = measure_points(echo)
        echo("scoring at ComParE size ...")
        scoring = measure_scoring(not args.no_before, echo)
    fits = {c: fit_power(points, c) for c in COMPONENTS}
    tf_import = tensorflow_import_seconds()
    paper = [p for p in points if p["units"] == PAPER_UNITS][0]
    steady = sum(predict(fits[c], BATCH, paper["frames"], PAPER_UNITS) for c in COMPONENTS)
    startup = tf_import + paper["build_s"] + max(0.0, paper["warm_up_attention_s"] + paper["warm_up_seq2seq_s"] - steady)

    # one trial epoch at ComParE size, per step
    n_fit, n_feat, t, u = COMPARE["train"], COMPARE["train"] + COMPARE["devel"], args.frames, PAPER_UNITS
    cpu_epoch = {"train_attention": predict(fits["train_attention"], n_fit, t, u),
                 "train_seq2seq": predict(fits["train_seq2seq"], n_fit, t, u),
                 "features": predict(fits["features_attention"], n_feat, t, u)
                 + predict(fits["features_seq2seq"], n_feat, t, u),
                 "scoring": scoring["at_compare_s"]}
    epochs = asha_epochs()
    trials = args.trials

    def hours(epoch_s: float, start_s: float, concurrent: int) -> float:
        return trials * (start_s + epochs * epoch_s) / concurrent / 3600

    gpu = gpu_figures(args.frames, fits)
    concurrent = GPUS * TRIALS_PER_GPU
    gpu_epoch = None
    if gpu:
        gpu_epoch = {"train_attention": n_fit / (gpu["attention"]["train_samples_s"] / TRIALS_PER_GPU),
                     "train_seq2seq": n_fit / (gpu["seq2seq"]["train_samples_s"] / TRIALS_PER_GPU),
                     "features": sum(n_feat / (gpu[k]["features_samples_s"] / TRIALS_PER_GPU)
                                     for k in ("attention", "seq2seq")),
                     "scoring": scoring["at_compare_s"]}
    projections = [
        {"setting": "this machine: 2 trials at once, 1 CPU each", "hours": hours(sum(cpu_epoch.values()), startup, 2),
         "epoch_s": sum(cpu_epoch.values()), "start_up_s": startup},
        {"setting": f"one {GPUS}-GPU node, {TRIALS_PER_GPU} trials per GPU ({concurrent} at once)",
         "hours": hours(sum(gpu_epoch.values()), startup, concurrent) if gpu_epoch else None,
         "epoch_s": sum(gpu_epoch.values()) if gpu_epoch else None, "start_up_s": startup,
         "note": "from bench/results/gpu.json" if gpu_epoch else "not measured: no bench/results/gpu.json (no GPU run yet)"},
        {"setting": "that node, CPU part alone (scoring + start-up; a lower bound)",
         "hours": hours(scoring["at_compare_s"], startup, concurrent), "epoch_s": scoring["at_compare_s"],
         "start_up_s": startup},
    ]
    if scoring["before_at_compare_s"] is not None:
        projections.append({"setting": "that node, CPU part alone, scoring as before (liblinear per C)",
                            "hours": hours(scoring["before_at_compare_s"], startup, concurrent),
                            "epoch_s": scoring["before_at_compare_s"], "start_up_s": startup})

    print()
    print(table([[c, f"{f['k']:.3g}", f["frames"], f["units"], f["clips_free"], f["max_log_error"]]
                 for c, f in fits.items()],
                ["step (this machine, 1 thread)", "k (s)", "frames exp", "units exp", "clips exp (free fit)",
                 "max |log error|"]))
    print()
    steps = [[step, cpu_epoch[step], gpu_epoch[step] if gpu_epoch else None] for step in cpu_epoch]
    print(f"one trial epoch at ComParE size ({n_fit:,} train clips, features of {n_feat:,}; {t} frames, 2 x {u} units), s:")
    print(table(steps + [["start-up per trial", startup, startup if gpu_epoch else None]],
                ["step", "this machine", f"GPU node ({TRIALS_PER_GPU} per GPU)"]))
    print()
    rows = [[p["setting"], "not measured" if p["hours"] is None else p["hours"], p["epoch_s"], p["start_up_s"]]
            for p in projections]
    header = ["setting", "hours", "s per trial epoch", "start-up s per trial"]
    print(f"{trials} trials, ASHA (max 10, grace 2, reduction 2): {epochs:g} epochs per trial on average")
    print(table(rows, header))
    print()
    print(markdown_table(rows, header))
    path = write_result("scale", {
        "frames": args.frames, "trials": trials, "asha_epochs_per_trial": epochs, "compare": COMPARE,
        "units": PAPER_UNITS, "points": points, "fits": fits, "scoring": scoring, "tensorflow_import_s": tf_import,
        "start_up_s": startup, "epoch_cpu_s": cpu_epoch, "epoch_gpu_node_s": gpu_epoch, "gpu_figures": gpu,
        "projections": projections, "load_start": load_start, "load_end": loadavg(),
        "wall_s": time.perf_counter() - t_start})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
