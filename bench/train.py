"""Autoencoder training throughput: samples/s and achieved GFLOP/s, ours vs an eager step-by-step decoder.

    .venv/bin/python bench/train.py [--sizes paper demo] [--models seq2seq bahdanau luong] [--xla off on]

For each size and model the product's own training path is timed: auttention.training.Trainer
.fit_epoch (one compiled Keras `fit` pass, Adam on the reconstruction MSE), after one untimed warm-up
epoch that traces (and with XLA compiles) the step. `--xla on` compiles the step with XLA
(jit_compile=True) even on a CPU, where the product itself keeps it off (see training.use_xla).
All variants of a size are built and warmed up first, then timed round-robin (--repeats rounds), so
that load changes on a shared machine hit every variant alike; the best round is reported (other
programs only ever add time), the median is in the JSON.
TensorFlow runs on one thread by default (--threads 1), as each trial of the demo search does
(resources.cpu 1): figures per core, and far steadier on a shared machine than two threads that
wait for each other at every small op whenever another program holds the second core.

The baseline is the original code's way of training the attention decoder: a Python for-loop over
the time steps in eager mode under one tf.GradientTape (Bahdanau attention, then the stacked GRU
cells, then the output layer at every step), with the same encoder, sizes and batch; it computes
the same function as our Bahdanau model (W1 h_enc once per batch). The original also recomputed
W1 h_enc at every step: `--eager-original` times that variant too (by default at the demo size only;
at the paper size it takes minutes per step).

Sizes: `paper` = 2 layers x 256 units, batch 64, 120 mel bands and T = the paper preset's
train_min frames on the corpus (200 on the demo corpus); `demo` = configs/demo.yaml (1 layer x 64
units, batch 32, 64 mel bands, T = 128). Inputs are random frames in [-1, 1] (speed does not depend
on the values).

FLOPs per sample are counted analytically (multiply-adds x 2 of every matrix product; see
`forward_flops`); a training step costs about 3x the forward pass (backward = 2x forward).
Prints a table and writes bench/results/train.json. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_folder, loadavg, summary, table, timed, write_result  # noqa: E402

SHORT = {"ours": "ours", "eager step-by-step": "eager", "eager as the original": "original"}
MODELS = {  # benchmark name -> (network, attention)
    "seq2seq": ("seq2seq", None),
    "bahdanau": ("attention", "bahdanau"),
    "luong": ("attention", "luong"),
}


def sizes(paper_frames: int) -> dict[str, dict]:
    """The two sizes: the paper's (configs/paper.yaml) and the demo's (configs/demo.yaml)."""
    return {
        "paper": dict(frames=paper_frames, n_mels=120, units=256, layers=2, batch=64, dropout=0.2,
                      decoder_bidirectional=True),
        "demo": dict(frames=128, n_mels=64, units=64, layers=1, batch=32, dropout=0.1,
                     decoder_bidirectional=False),
    }


def model_config(size: dict, model: str):
    from auttention.config import MODEL_CONFIGS

    network, attention = MODELS[model]
    kwargs = dict(cell="gru", layers=size["layers"], units=size["units"],
                  encoder_bidirectional=True, dropout=size["dropout"])
    if network == "seq2seq":
        kwargs["decoder_bidirectional"] = size["decoder_bidirectional"]
    else:
        kwargs["attention"] = attention
    return MODEL_CONFIGS[network](**kwargs)


# -- analytic FLOPs ------------------------------------------------------------------------------

def _rnn_step(kind: str, inputs: int, units: int) -> int:
    """FLOPs of one step of one GRU/LSTM direction: gates x 2 x units x (inputs + units)."""
    gates = 3 if kind == "gru" else 4
    return gates * 2 * units * (inputs + units)


def _stack_step(kind: str, first_in: int, units: int, layers: int, directions: int) -> int:
    total, inputs = 0, first_in
    for _ in range(layers):
        total += directions * _rnn_step(kind, inputs, units)
        inputs = directions * units
    return total


def forward_flops(cfg, frames: int, n_mels: int) -> int:
    """Forward FLOPs of one sample (matrix products only; elementwise ops, softmax, biases not counted).

    encoder  T x sum over layers/directions of gates*2*U*(I+U)          (I = F, then D*U)
    seq2seq  bottleneck (L*D*U)*Fu*2 [+ Fu*U*2 projection]; decoder like the encoder on F inputs;
             output Dense T*(Dd*U)*F*2
    bahdanau keys W1 h_enc: Te*De*A*2 once; per step: W2 s: U*A*2, v^T tanh(.): Te*A*2 (+Te*A add),
             context Te*De*2, cells on [c; frame] then U, output Dense (U+De)*F*2; init Dense De*U*2
    luong    decoder stack (1 direction) on F inputs; per step: s W: U*De*2, scores Te*De*2,
             context Te*De*2, attentional Dense (De+U)*U*2, output Dense U*F*2; init Dense De*U*2
    """
    from auttention.models import feature_size

    t, f, u, layers = frames, n_mels, cfg.units, cfg.layers
    d = 2 if cfg.encoder_bidirectional else 1
    de = d * u  # encoder output width
    enc = t * _stack_step(cfg.cell, f, u, layers, d)
    if cfg.network == "seq2seq":
        n_states = layers * d * (2 if cfg.cell == "lstm" else 1)
        fu = feature_size(cfg)
        head = n_states * u * fu * 2 + (fu * u * 2 if fu != u else 0)
        dd = 2 if cfg.decoder_bidirectional else 1
        dec = t * _stack_step(cfg.cell, f, u, layers, dd) + t * dd * u * f * 2
        return enc + head + dec
    init = de * u * 2
    if cfg.attention == "bahdanau":
        a = cfg.attention_units or u
        keys = t * de * a * 2
        cells = _rnn_step(cfg.cell, de + f, u) + (layers - 1) * _rnn_step(cfg.cell, u, u)
        step = u * a * 2 + t * a * 3 + t * de * 2 + cells + (u + de) * f * 2
        return enc + init + keys + t * step
    dec = t * _stack_step(cfg.cell, f, u, layers, 1)
    step = u * de * 2 + 2 * t * de * 2 + (de + u) * u * 2 + u * f * 2
    return enc + init + dec + t * step


# -- the eager step-by-step baseline --------------------------------------------------------------

class EagerAttention:
    """The original code's training loop: eager mode, a Python loop over time steps under one GradientTape."""

    def __init__(self, cfg, frames: int, n_mels: int, learning_rate: float = 1e-3, seed: int = 0,
                 recompute_keys: bool = False):
        import keras
        from keras import layers

        keras.utils.set_random_seed(seed)
        u, a = cfg.units, cfg.attention_units or cfg.units
        self.frames = frames
        self.recompute_keys = recompute_keys  # the original applied W1 to the encoder outputs at every step
        self.dropout = layers.Dropout(cfg.dropout, seed=seed)
        self.encoder = [layers.Bidirectional(layers.GRU(u, return_sequences=True, return_state=True))
                        for _ in range(cfg.layers)]
        self.init = layers.Dense(u, activation="tanh")
        self.w1, self.w2 = layers.Dense(a), layers.Dense(a, use_bias=False)
        self.v = layers.Dense(1, use_bias=False)
        self.cells = [layers.GRUCell(u) for _ in range(cfg.layers)]
        self.out = layers.Dense(n_mels, activation="tanh")
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self._variables = None

    def loss(self, x):
        import tensorflow as tf

        h = self.dropout(x, training=True)
        for layer in self.encoder:
            h, fw, bw = layer(h, training=True)
        state = self.init(tf.concat([fw, bw], -1))
        rev = tf.reverse(x, [1])
        dec_in = tf.concat([tf.zeros_like(rev[:, :1]), rev[:, :-1]], 1)
        keys = self.w1(h)
        states = [state] * len(self.cells)
        outputs = []
        for t in range(self.frames):
            if self.recompute_keys:
                keys = self.w1(h)
            scores = tf.squeeze(self.v(tf.tanh(keys + tf.expand_dims(self.w2(states[-1]), 1))), -1)
            weights = tf.nn.softmax(scores, -1)
            context = tf.einsum("bt,btd->bd", weights, h)
            inputs = tf.concat([context, dec_in[:, t]], -1)
            new_states = []
            for i, cell in enumerate(self.cells):
                inputs, st = cell(inputs, [states[i]], training=True)
                new_states.append(st[0] if isinstance(st, (list, tuple)) else st)
            states = new_states
            outputs.append(self.out(tf.concat([inputs, context], -1)))
        return tf.reduce_mean((tf.stack(outputs, 1) - rev) ** 2)

    def train_step(self, x) -> float:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self.loss(x)
        if self._variables is None:
            parts = [*self.encoder, self.init, self.w1, self.w2, self.v, *self.cells, self.out]
            self._variables = [v for p in parts for v in p.trainable_variables]
        grads = tape.gradient(loss, self._variables)
        self.optimizer.apply_gradients(zip(grads, self._variables))
        return float(loss)


# -- measurements --------------------------------------------------------------------------------

class OursRunner:
    """One of our models trained through the product's path (Trainer.fit_epoch) on `batches` batches."""

    def __init__(self, size: dict, model: str, xla: bool, batches: int):
        from auttention.config import TrainingConfig
        from auttention.training import Trainer

        self.cfg = model_config(size, model)
        b, t, f = size["batch"], size["frames"], size["n_mels"]
        self.trainer = Trainer(self.cfg, TrainingConfig(batch_size=b, jit_compile=xla), t, f)
        if xla and not self.trainer.jit_compile:  # the product keeps XLA off on a CPU: force it to compare
            self.trainer.autoencoder.compile(optimizer=self.trainer.optimizer, loss="mse", jit_compile=True)
        self.x = np.random.default_rng(0).uniform(-1, 1, (batches * b, t, f)).astype(np.float32)
        self.batch, self.samples = b, batches * b
        self.fwd = forward_flops(self.cfg, t, f)

    def warm_up(self) -> float:
        """One epoch of one batch: traces (and with XLA compiles) the train step."""
        return timed(lambda: self.trainer.fit_epoch(self.x[:self.batch]))[0]

    def run(self) -> float:
        return timed(lambda: self.trainer.fit_epoch(self.x))[0]

    def extra(self) -> dict:
        return {"jit_compile": bool(self.trainer.autoencoder.jit_compile),
                "params": int(self.trainer.autoencoder.count_params())}


class EagerRunner:
    """The eager step-by-step Bahdanau baseline, `batches` train steps per timing."""

    def __init__(self, size: dict, batches: int, original: bool = False):
        import tensorflow as tf

        self.cfg = model_config(size, "bahdanau")
        b, t, f = size["batch"], size["frames"], size["n_mels"]
        self.model = EagerAttention(self.cfg, t, f, recompute_keys=original)
        self.x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (b, t, f)).astype(np.float32))
        self.batch, self.batches, self.samples = b, batches, batches * b
        # FLOPs of the model's function (the original's recomputed keys are extra work, not counted)
        self.fwd = forward_flops(self.cfg, t, f)

    def warm_up(self) -> float:
        """A forward pass of two samples: builds the variables (eager mode has nothing to trace)."""
        return timed(lambda: self.model.loss(self.x[:2]))[0]

    def run(self) -> float:
        return timed(lambda: [self.model.train_step(self.x) for _ in range(self.batches)])[0]

    def extra(self) -> dict:
        return {}


def measure_size(size_name: str, size: dict, models: list[str], xlas: list[str], batches: int,
                 eager_batches: int, repeats: int, eager_original: bool) -> list[dict]:
    """Build and warm up every variant of one size, then time them round-robin, `repeats` rounds."""
    import keras

    runners = {}
    for model in models:
        for xla in xlas:
            runners[(model, xla, "ours")] = OursRunner(size, model, xla == "on", batches)
    if eager_batches:
        runners[("bahdanau", "off", "eager step-by-step")] = EagerRunner(size, eager_batches)
        if eager_original:
            runners[("bahdanau", "off", "eager as the original")] = EagerRunner(size, eager_batches, original=True)
    warm = {}
    for key, runner in runners.items():
        warm[key] = runner.warm_up()
        print(f"  warm-up {key[0]:9s} {key[2]:18s} XLA {key[1]:3s}: {warm[key]:.1f} s", flush=True)
    times: dict = {key: [] for key in runners}
    for r in range(repeats):
        for key, runner in runners.items():
            times[key].append(runner.run())
        print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{k[0]}/{SHORT[k[2]]}/{k[1]} {v[-1]:.2f} s"
                                                       for k, v in times.items()), flush=True)
    out = []
    for key, runner in runners.items():
        model, xla, impl = key
        r = _rates(summary(times[key]), runner.samples, runner.fwd)
        r.update(size=size_name, model=model, xla=xla, implementation=impl, batch=runner.batch,
                 warmup_seconds=warm[key], **runner.extra())
        out.append(r)
    runners.clear()
    keras.backend.clear_session()
    return out


def _rates(times: dict, samples: int, fwd: int) -> dict:
    """Rates from the best round: on a shared machine other programs only ever add time."""
    best = times["best"]
    return {"times": times, "samples_per_timing": samples, "samples_per_s": samples / best,
            "samples_per_s_median": samples / times["median"], "forward_flops_per_sample": fwd,
            "train_gflops_per_s": 3 * fwd * samples / best / 1e9}


def ablation(size: dict, repeats: int) -> dict:
    """Where Bahdanau's time goes: the same decoder loop with the score additive (ours), a dot product,
    or no attention at all (a fixed context), against Luong; round-robin timed through Trainer.fit_epoch."""
    import tensorflow as tf
    from keras import ops

    from auttention import models

    original_call = models.BahdanauDecoder.call

    def make_call(mode: str):
        def call(self, inputs, training=None):
            enc, frames, init = inputs
            keys = self.w_enc(enc)
            batch = ops.shape(enc)[0]
            n_state = self._n_state()
            states0 = tuple(init for _ in range(self.n_layers * n_state))
            context0 = ops.zeros((batch, enc.shape[-1]), dtype=enc.dtype)
            weights0 = ops.zeros((batch, enc.shape[1]), dtype=enc.dtype)
            mean = ops.mean(enc, 1)

            def step(carry, frame):
                states, _, _ = carry
                s_prev = states[(self.n_layers - 1) * n_state]
                if mode == "none":
                    weights, context = weights0, mean
                else:
                    if mode == "dot":
                        scores = ops.einsum("bta,ba->bt", keys, self.w_dec(s_prev))
                    else:
                        scores = ops.squeeze(self.v(ops.tanh(keys + ops.expand_dims(self.w_dec(s_prev), 1))), -1)
                    weights = ops.softmax(scores, axis=-1)
                    context = ops.einsum("bt,btd->bd", weights, enc)
                h = ops.concatenate([context, frame], axis=-1)
                new_states = []
                for i, cell in enumerate(self.cells):
                    h, out = cell(h, list(states[i * n_state:(i + 1) * n_state]), training=training)
                    new_states.extend(out if isinstance(out, (list, tuple)) else [out])
                return tuple(new_states), context, weights

            seq = tf.scan(step, ops.transpose(frames, (1, 0, 2)), initializer=(states0, context0, weights0))
            top = seq[0][(self.n_layers - 1) * n_state]
            return (ops.transpose(ops.concatenate([top, seq[1]], axis=-1), (1, 0, 2)),
                    ops.transpose(seq[2], (1, 0, 2)))
        return call

    import warnings

    warnings.filterwarnings("ignore", message="Gradients do not exist")  # the variants leave some weights unused
    variants = {"bahdanau (additive score)": "additive", "dot-product score in the loop": "dot",
                "no attention in the loop": "none", "luong": None}
    runners = {}
    try:
        for name, mode in variants.items():
            models.BahdanauDecoder.call = make_call(mode) if mode else original_call
            runners[name] = OursRunner(size, "luong" if mode is None else "bahdanau", False, 8 if size["batch"] < 64 else 1)
            runners[name].warm_up()  # traced now, with this variant's call
    finally:
        models.BahdanauDecoder.call = original_call
    times = {k: [] for k in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            times[name].append(runner.run())
    return {name: {"times": summary(t), "seconds_per_step": min(t) * runners[name].batch
                   / runners[name].samples} for name, t in times.items()}


def paper_frames(data: str | None) -> int:
    """T of the paper's setting: the paper preset's train_min on the corpus (header reads only)."""
    from auttention import spectrogram as spectro
    from auttention.config import SPECTROGRAM_PRESETS, SpectrogramConfig
    from auttention.corpus import read_corpus

    corpus = read_corpus(corpus_folder(data))
    return spectro.common_frames(corpus, SpectrogramConfig(**SPECTROGRAM_PRESETS["paper"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", nargs="+", choices=("paper", "demo"), default=["demo", "paper"])
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--xla", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--data", help="corpus whose paper-preset train_min sets the paper T (default: demo corpus)")
    parser.add_argument("--paper-frames", type=int, help="T at the paper size (default: from the corpus)")
    parser.add_argument("--repeats", type=int, nargs=2, default=[2, 3], metavar=("PAPER", "DEMO"),
                        help="rounds of timings at the paper and the demo size (the best is reported)")
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 8], metavar=("PAPER", "DEMO"),
                        help="batches per timed epoch at the paper and the demo size")
    parser.add_argument("--eager-batches", type=int, nargs=2, default=[1, 1], metavar=("PAPER", "DEMO"),
                        help="eager steps per timing at the paper and the demo size (0: skip the baseline)")
    parser.add_argument("--eager-original", nargs="*", choices=("paper", "demo"), default=["demo"],
                        help="sizes at which to also time the eager loop exactly as the original ran it "
                             "(W1 h_enc recomputed at every step; slow at the paper size)")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra-op threads (default 1: one core, as a trial of spaces/demo.yaml "
                             "with resources.cpu 1 runs; 0: TensorFlow's default, every core)")
    parser.add_argument("--ablation", action="store_true",
                        help="only profile the Bahdanau decoder at the demo size (additive / dot-product / no "
                             "attention in the loop vs Luong); writes bench/results/train_ablation.json")
    args = parser.parse_args()

    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    if args.threads:  # as search.resources.configure_tensorflow does for a trial with `threads` CPUs
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, args.threads))
    load_start = loadavg()
    if args.ablation:
        out = ablation(sizes(0)["demo"], args.repeats[1] + 2)
        print(table([(k, v["seconds_per_step"]) for k, v in out.items()], ["demo size, decoder variant", "s/step"]))
        print(f"load average: start {load_start}, end {loadavg()}")
        print(f"wrote {write_result('train_ablation', {'load_start': load_start, 'load_end': loadavg(), 'variants': out, 'intra_op_threads': args.threads or 'all'})}")
        return
    t_paper = args.paper_frames or (paper_frames(args.data) if "paper" in args.sizes else 0)
    all_sizes = sizes(t_paper)
    print(f"load average {load_start}; TensorFlow {tf.__version__}, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} intra-op threads")
    results: dict = {"load_start": load_start, "sizes": {k: all_sizes[k] for k in args.sizes}, "runs": [],
                     "intra_op_threads": args.threads or "all"}
    rows = []
    for size_name in args.sizes:
        size = all_sizes[size_name]
        idx = 0 if size_name == "paper" else 1
        print(f"\n{size_name}: T {size['frames']}, {size['n_mels']} mels, {size['layers']} x {size['units']} units, "
              f"batch {size['batch']}", flush=True)
        runs = measure_size(size_name, size, args.models, args.xla, args.batches[idx], args.eager_batches[idx],
                            args.repeats[idx], size_name in args.eager_original)
        results["runs"].extend(runs)
        rows.extend(_row(r) for r in runs)
    results["load_end"] = loadavg()
    results["ratios"] = ratios(results["runs"])
    print()
    print(table(rows, ["size", "model", "implementation", "XLA", "samples/s", "GFLOP/s", "s/step",
                       "warm-up s", "GFLOP/sample"]))
    print()
    print(table([(k, v["value"], v["target"], "yes" if v["met"] else "NO") for k, v in results["ratios"].items()],
                ["ratio", "measured", "target", "met"]))
    print(f"load average: start {load_start}, end {results['load_end']}")
    print(f"wrote {write_result('train', results)}")


def _row(r: dict) -> tuple:
    step = r["times"]["best"] * r["batch"] / r["samples_per_timing"]
    return (r["size"], r["model"], r["implementation"], r["xla"], r["samples_per_s"], r["train_gflops_per_s"],
            step, r["warmup_seconds"], 3 * r["forward_flops_per_sample"] / 1e9)


def ratios(runs: list[dict]) -> dict:
    """Targets: our attention training >= 50x the eager step-by-step; Luong >= 3x Bahdanau (XLA off: the product's CPU path)."""
    def rate(size, model, impl="ours", xla="off"):
        for r in runs:
            if (r["size"], r["model"], r["implementation"], r["xla"]) == (size, model, impl, xla):
                return r["samples_per_s"]
        return None

    out = {}
    for size in ("paper", "demo"):
        for impl in ("eager step-by-step", "eager as the original"):
            eager = rate(size, "bahdanau", impl)
            for model in ("bahdanau", "luong"):
                ours = rate(size, model)
                if eager and ours:
                    out[f"{size}: ours {model} / {impl}"] = _ratio(ours / eager, 50.0)
        lu, ba = rate(size, "luong"), rate(size, "bahdanau")
        if lu and ba:
            out[f"{size}: luong / bahdanau"] = _ratio(lu / ba, 3.0)
        for model in MODELS:
            on, off = rate(size, model, xla="on"), rate(size, model)
            if on and off:
                out[f"{size}: {model} XLA on / off"] = {"value": round(on / off, 3), "target": "-", "met": True}
    return out


def _ratio(value: float, target: float) -> dict:
    return {"value": round(value, 3), "target": f">= {target:g}", "met": bool(value >= target)}


if __name__ == "__main__":
    main()
