"""The two recurrent autoencoders of the paper (seq2seq and attention), built with Keras 3.

Every model takes the spectrogram rows x, shaped (batch, frames, mel bands) and scaled to
[-1, 1], and each row's real frames `lengths` (batch,): a row is a clip padded at its end, and
the padding is masked everywhere, so it teaches the model nothing. Each model reconstructs the
real frames of x reversed in time (the target: `targets`). The decoder's teacher-forcing input
(the reversed clip shifted right by one step, as auDeep does) is computed inside the model.
Masks are right-padded, the shape cuDNN's kernels accept. The encoders' final states are taken at
each clip's last real frame (the backward direction's at its first), and the reconstruction loss
counts real frames only (`frame_weights`).

- seq2seq: (bi)GRU/LSTM encoder; the final states of all its layers and directions through a
  tanh Dense layer are the paper's feature; a (bi)directional decoder starts from it. A
  unidirectional decoder is causal (step t sees target frames before t only); a bidirectional
  one, as in the paper, also sees the frames after t through its backward direction.
- attention: the same encoder; the paper's feature is the top layer's final states; the decoder
  attends over the (real) encoder outputs, either step by step (`bahdanau`, the paper) or over all
  decoder steps at once (`luong`, "general" scoring, fully parallel and much faster); both are causal.
- `feature` (ModelConfig) chooses the read-out: the paper's (`final`), the mean (and standard
  deviation) of the top encoder layer's outputs over the real frames, or both.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .config import AttentionConfig, ModelConfig, Seq2seqConfig

PACKAGE = "auttention"


def final_size(cfg: ModelConfig) -> int:
    """Length of the paper's feature (seq2seq: the bottleneck; attention: the top final states)."""
    if isinstance(cfg, Seq2seqConfig):
        return cfg.feature_units or cfg.units
    return cfg.units * (2 if cfg.encoder_bidirectional else 1)


def feature_size(cfg: ModelConfig) -> int:
    """Length of the feature vector the encoder of `cfg` produces (per cfg.feature)."""
    outputs = cfg.units * (2 if cfg.encoder_bidirectional else 1)  # the top encoder layer's width
    parts = cfg.feature.split("_")
    return (final_size(cfg) if "final" in parts else 0) + outputs * (("mean" in parts) + ("std" in parts))


def full_lengths(x: np.ndarray) -> np.ndarray:
    """Every row whole (no padding): lengths for x whose frames are all real."""
    return np.full(len(x), np.shape(x)[1], np.int32)


def _reverse_index(lengths, n_frames: int):
    """(B, T) index of reversed time within each row's real frames, and whether that step is real."""
    steps = ops.expand_dims(ops.arange(n_frames, dtype="int32"), 0)
    index = ops.expand_dims(ops.cast(lengths, "int32"), 1) - 1 - steps
    return ops.maximum(index, 0), index >= 0


def reverse_real(x, lengths):
    """x with each row's first `length` frames reversed in time, padding left at the end (tensors)."""
    index, real = _reverse_index(lengths, x.shape[1])
    rev = ops.take_along_axis(x, ops.expand_dims(index, -1), axis=1)
    return ops.where(ops.expand_dims(real, -1), rev, ops.full_like(rev, -1.0))


def decoder_inputs(x, lengths):
    """Teacher-forcing input: each clip reversed in time (real frames only), shifted right by one step
    (first step zeros). Step t is the reversed clip at step t - 1, the frame the decoder produced
    (should have produced) just before."""
    rev = reverse_real(x, lengths)
    return ops.concatenate([ops.zeros_like(rev[:, :1]), rev[:, :-1]], axis=1)


def targets(x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """The reconstruction target: each row's real frames reversed in time, padding (-1) after them."""
    x = np.asarray(x, dtype=np.float32)
    lengths = full_lengths(x) if lengths is None else np.asarray(lengths)
    steps = np.arange(x.shape[1])[None, :]
    index = lengths[:, None] - 1 - steps
    out = np.take_along_axis(x, np.maximum(index, 0)[:, :, None], axis=1)
    out[index < 0] = -1.0
    return np.ascontiguousarray(out)


def frame_weights(x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """(B, T) float32: 1 on each row's real frames, 0 on its padding (the loss' sample weights)."""
    lengths = full_lengths(x) if lengths is None else np.asarray(lengths)
    return (np.arange(np.shape(x)[1])[None, :] < lengths[:, None]).astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecoderInputs(layers.Layer):
    """Layer form of `decoder_inputs` (reverse each clip in time, shift right by one step)."""

    def call(self, x, lengths):
        return decoder_inputs(x, lengths)

    def compute_output_shape(self, x_shape, lengths_shape=None):
        return x_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameMask(layers.Layer):
    """(B, T) boolean mask of each row's real frames, from its length."""

    def __init__(self, n_frames: int, **kwargs):
        super().__init__(**kwargs)
        self.n_frames = int(n_frames)

    def call(self, lengths):
        steps = ops.expand_dims(ops.arange(self.n_frames, dtype="int32"), 0)
        return steps < ops.expand_dims(ops.cast(lengths, "int32"), 1)

    def compute_output_shape(self, lengths_shape):
        return (lengths_shape[0], self.n_frames)

    def get_config(self):
        return {**super().get_config(), "n_frames": self.n_frames}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedStatistics(layers.Layer):
    """Mean (and standard deviation, with `std`) over the real frames of (B, T, D) sequences."""

    def __init__(self, std: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.std = bool(std)
        self.supports_masking = True  # it takes the mask as an input: one vector per clip, no mask after it

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, h, mask):
        w = ops.expand_dims(ops.cast(mask, h.dtype), -1)
        n = ops.maximum(ops.sum(w, axis=1), 1.0)
        mean = ops.sum(h * w, axis=1) / n
        if not self.std:
            return mean
        var = ops.sum(ops.square(h - ops.expand_dims(mean, 1)) * w, axis=1) / n
        return ops.concatenate([mean, ops.sqrt(var + 1e-8)], axis=-1)

    def compute_output_shape(self, h_shape, mask_shape=None):
        return (h_shape[0], h_shape[-1] * (2 if self.std else 1))

    def get_config(self):
        return {**super().get_config(), "std": self.std}


def _cell(kind: str, units: int, name: str) -> layers.Layer:
    """One GRU/LSTM cell with Keras' default (cuDNN-compatible) activations."""
    return layers.GRUCell(units, name=name) if kind == "gru" else layers.LSTMCell(units, name=name)


def _rnn(cfg: ModelConfig, bidirectional: bool, name: str) -> layers.Layer:
    """A sequence-returning, state-returning GRU/LSTM layer, optionally bidirectional.

    Default activations, no recurrent dropout and no unrolling keep the cuDNN kernel on GPU.
    """
    rnn_cls = layers.GRU if cfg.cell == "gru" else layers.LSTM
    rnn = rnn_cls(cfg.units, return_sequences=True, return_state=True, name=name)
    # Bidirectional flips the backward outputs back into forward time order before concatenating.
    return layers.Bidirectional(rnn, name=name) if bidirectional else rnn


def _states_per_direction(cfg: ModelConfig) -> int:
    return 2 if cfg.cell == "lstm" else 1


def _encoder(cfg: ModelConfig, x, mask, seed: int):
    """Input dropout + stacked masked RNN layers; returns (top outputs, [per layer: its final states]).

    With the mask, each direction's final state is its state at the clip's last real frame (the
    backward direction's at its first), whatever padding follows.
    """
    h = x
    if cfg.dropout > 0:
        h = layers.Dropout(cfg.dropout, seed=seed, name="encoder_dropout")(h)
    all_states = []
    for i in range(cfg.layers):
        out = _rnn(cfg, cfg.encoder_bidirectional, f"encoder_{i}")(h, mask=mask)
        h, states = out[0], list(out[1:])
        all_states.append(states)  # GRU: [h] or [h_fw, h_bw]; LSTM: [h, c] or [h_fw, c_fw, h_bw, c_bw]
    return h, all_states


def _decoder_stack(cfg: ModelConfig, inputs, init, bidirectional: bool, mask):
    """Stacked teacher-forced, masked decoder RNN layers, each starting from `init` (every state tensor)."""
    n_states = _states_per_direction(cfg) * (2 if bidirectional else 1)
    h = inputs
    for i in range(cfg.layers):
        h = _rnn(cfg, bidirectional, f"decoder_{i}")(h, initial_state=[init] * n_states, mask=mask)[0]
    return h


def _masked_scores(scores, mask):
    """Attention scores (B, T, Te) or (B, Te) with padded encoder steps pushed to -1e9 (weight 0)."""
    keep = ops.cast(mask, scores.dtype)
    if len(scores.shape) == 3:
        keep = ops.expand_dims(keep, 1)
    return scores * keep - 1e9 * (1.0 - keep)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BahdanauDecoder(layers.Layer):
    """Step-wise decoder with additive (Bahdanau) attention over the encoder outputs.

    Inputs: [encoder outputs (B, Te, De), teacher-forcing frames (B, T, F), initial state (B, units),
    encoder mask (B, Te)]. At step t: e = v^T tanh(W1 h_enc + W2 s_{t-1}); a_t = softmax over the
    real encoder steps;
    c_t = a_t . h_enc; the stacked cells update on [c_t ; previous frame]. Outputs:
    [s_t ; c_t] for every step (B, T, units + De) and the attention weights (B, T, Te).
    The loop over time is a compiled `tf.scan`; W1 h_enc is computed once outside it.
    """

    def __init__(
        self, cell: str = "gru", units: int = 256, layers: int = 1, attention_units: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.cell_kind = cell
        self.units = int(units)
        self.n_layers = int(layers)
        self.attention_units = int(attention_units or units)
        self.cells = [_cell(cell, self.units, f"cell_{i}") for i in range(self.n_layers)]
        self.w_enc = keras.layers.Dense(self.attention_units, name="w_enc")  # W1 (+ the one bias)
        self.w_dec = keras.layers.Dense(self.attention_units, use_bias=False, name="w_dec")  # W2
        self.v = keras.layers.Dense(1, use_bias=False, name="v")
        self.supports_masking = True  # the encoder mask is an input; the steps' outputs carry none

    def compute_mask(self, inputs, mask=None):
        return None

    def build(self, input_shape):
        enc_shape, dec_shape = input_shape[0], input_shape[1]
        enc_dim, frame_dim = enc_shape[-1], dec_shape[-1]
        self.w_enc.build((None, None, enc_dim))
        self.w_dec.build((None, self.units))
        self.v.build((None, None, self.attention_units))
        in_dim = enc_dim + frame_dim
        for cell in self.cells:
            cell.build((None, in_dim))
            in_dim = self.units
        self.built = True

    def _n_state(self) -> int:
        return 2 if self.cell_kind == "lstm" else 1

    def call(self, inputs, training=None):
        enc, frames, init, enc_mask = inputs
        keys = self.w_enc(enc)  # (B, Te, A): W1 h_enc + b, once for all steps
        batch = ops.shape(enc)[0]
        # Carry: every layer's states (each starting at `init`), the context, the weights.
        states0 = tuple(init for _ in range(self.n_layers * self._n_state()))
        context0 = ops.zeros((batch, enc.shape[-1]), dtype=enc.dtype)
        weights0 = ops.zeros((batch, enc.shape[1]), dtype=enc.dtype)
        n_state = self._n_state()

        def step(carry, frame):
            states, _, _ = carry
            s_prev = states[(self.n_layers - 1) * n_state]  # top layer's h
            scores = ops.squeeze(self.v(ops.tanh(keys + ops.expand_dims(self.w_dec(s_prev), 1))), -1)
            scores = _masked_scores(scores, enc_mask)
            weights = ops.softmax(scores, axis=-1)  # over encoder time
            context = ops.einsum("bt,btd->bd", weights, enc)
            h = ops.concatenate([context, frame], axis=-1)
            new_states: list = []
            for i, cell in enumerate(self.cells):
                layer_states = list(states[i * n_state : (i + 1) * n_state])
                h, out_states = cell(h, layer_states, training=training)
                new_states.extend(out_states if isinstance(out_states, (list, tuple)) else [out_states])
            return tuple(new_states), context, weights

        xs = ops.transpose(frames, (1, 0, 2))  # time-major for the scan
        # tf.scan, unlike keras.ops.scan (TF backend), bounds its while loop (maximum_iterations),
        # which XLA needs to compile the gradient; the loop runs in the compiled graph either way.
        states_seq, context_seq, weights_seq = tf.scan(step, xs, initializer=(states0, context0, weights0))
        top = states_seq[(self.n_layers - 1) * n_state]  # (T, B, units)
        out = ops.transpose(ops.concatenate([top, context_seq], axis=-1), (1, 0, 2))
        return out, ops.transpose(weights_seq, (1, 0, 2))

    def compute_output_shape(self, input_shape):
        enc_shape, dec_shape = input_shape[0], input_shape[1]
        return ((dec_shape[0], dec_shape[1], self.units + enc_shape[-1]), (dec_shape[0], dec_shape[1], enc_shape[1]))

    def get_config(self):
        return {
            **super().get_config(),
            "cell": self.cell_kind,
            "units": self.units,
            "layers": self.n_layers,
            "attention_units": self.attention_units,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class LuongAttention(layers.Layer):
    """Global "general" attention of all decoder steps at once: softmax((s W) h_enc^T) . h_enc.

    Inputs: [decoder outputs s (B, T, U), encoder outputs (B, Te, De), encoder mask (B, Te)].
    Outputs: the context vectors (B, T, De) and the attention weights (B, T, Te), zero on padding.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # the encoder mask is an input; the context carries none

    def compute_mask(self, inputs, mask=None):
        return None

    def build(self, input_shape):
        dec_shape, enc_shape = input_shape[0], input_shape[1]
        self.kernel = self.add_weight(shape=(dec_shape[-1], enc_shape[-1]), initializer="glorot_uniform", name="kernel")
        self.built = True

    def call(self, inputs):
        dec, enc, enc_mask = inputs
        scores = _masked_scores(ops.einsum("btd,bsd->bts", ops.matmul(dec, self.kernel), enc), enc_mask)
        weights = ops.softmax(scores, axis=-1)  # over encoder time
        return ops.einsum("bts,bsd->btd", weights, enc), weights

    def compute_output_shape(self, input_shape):
        dec_shape, enc_shape = input_shape[0], input_shape[1]
        return ((dec_shape[0], dec_shape[1], enc_shape[-1]), (dec_shape[0], dec_shape[1], enc_shape[1]))


def build_autoencoder(cfg: ModelConfig, n_frames: int, n_mels: int, seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """(autoencoder: [x, lengths] -> reconstruction of each reversed clip, encoder: [x, lengths] -> feature
    vector), sharing layers. Initialisation is deterministic in `seed` (this calls keras.utils.set_random_seed(seed)).
    """
    keras.utils.set_random_seed(seed)
    x = keras.Input((n_frames, n_mels), name="frames")
    lengths = keras.Input((), dtype="int32", name="lengths")
    mask = FrameMask(n_frames, name="frame_mask")(lengths)
    dec_in = DecoderInputs(name="decoder_inputs")(x, lengths)
    enc_out, enc_states = _encoder(cfg, x, mask, seed)

    if isinstance(cfg, Seq2seqConfig):
        flat = [s for layer_states in enc_states for s in layer_states]
        final = flat[0] if len(flat) == 1 else layers.Concatenate(name="encoder_states")(flat)
        final = layers.Dense(final_size(cfg), activation="tanh", name="feature")(final)
        init = final
        if final_size(cfg) != cfg.units:
            init = layers.Dense(cfg.units, name="decoder_init")(final)  # linear projection
        dec = _decoder_stack(cfg, dec_in, init, cfg.decoder_bidirectional, mask)
        recon = layers.Dense(n_mels, activation="tanh", name="reconstruction")(dec)
    else:
        assert isinstance(cfg, AttentionConfig), cfg  # MODEL_CONFIGS has the two
        top = enc_states[-1]
        per_dir = _states_per_direction(cfg)
        hs = top[::per_dir]  # the h state of each direction (LSTM: skip c)
        final = hs[0] if len(hs) == 1 else layers.Concatenate(name="final_states")(hs)
        init = layers.Dense(cfg.units, activation="tanh", name="decoder_init")(final)
        if cfg.attention == "bahdanau":
            out, _ = BahdanauDecoder(cfg.cell, cfg.units, cfg.layers, cfg.attention_units, name="bahdanau_decoder")(
                [enc_out, dec_in, init, mask]
            )
        else:
            dec = _decoder_stack(cfg, dec_in, init, False, mask)
            context, _ = LuongAttention(name="luong_attention")([dec, enc_out, mask])
            out = layers.Concatenate(name="attentional")([context, dec])
            out = layers.Dense(cfg.units, activation="tanh", name="attentional_hidden")(out)
        recon = layers.Dense(n_mels, activation="tanh", name="reconstruction")(out)

    parts = cfg.feature.split("_")
    pieces = [final] if "final" in parts else []
    if "mean" in parts:
        pieces.append(MaskedStatistics(std="std" in parts, name="frame_statistics")(enc_out, mask))
    feature = pieces[0] if len(pieces) == 1 else layers.Concatenate(name="features")(pieces)
    autoencoder = keras.Model([x, lengths], recon, name=f"{cfg.network}_autoencoder")
    encoder = keras.Model([x, lengths], feature, name=f"{cfg.network}_encoder")
    return autoencoder, encoder


def attention_weights(
    autoencoder: keras.Model, x: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 256
) -> np.ndarray:
    """Attention weights (N, decoder steps, encoder steps) of an attention autoencoder, inference mode."""
    for name in ("bahdanau_decoder", "luong_attention"):
        try:
            layer = autoencoder.get_layer(name)
        except ValueError:
            continue
        probe = keras.Model(autoencoder.input, layer.output[1])
        x = np.asarray(x, dtype=np.float32)
        lengths = full_lengths(x) if lengths is None else np.asarray(lengths, np.int32)
        # Direct calls: an analysis helper, not worth tracing a predict function for.
        return np.concatenate(
            [
                np.asarray(probe([x[i : i + batch_size], lengths[i : i + batch_size]], training=False))
                for i in range(0, len(x), batch_size)
            ]
        )
    raise ValueError(f"{autoencoder.name} has no attention layer")
