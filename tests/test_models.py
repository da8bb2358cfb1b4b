"""The autoencoders: shapes, the reversed teacher-forcing input, attention, dropout, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from auttention.config import MODEL_CONFIGS, AttentionConfig, Seq2seqConfig
from auttention.models import (
    BahdanauDecoder,
    FrameMask,
    LuongAttention,
    _decoder_stack,
    attention_weights,
    build_autoencoder,
    decoder_inputs,
    feature_size,
    frame_weights,
    full_lengths,
    targets,
)

T, F, N = 12, 8, 16


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (N, T, F)).astype(np.float32)


def whole(x):
    """Model inputs of rows that are all real frames."""
    return [x, full_lengths(x)]


CONFIGS = [
    # network, attention, cell, layers, bidirectional, feature_units
    ("seq2seq", "bahdanau", "gru", 2, True, None),
    ("seq2seq", "bahdanau", "lstm", 1, False, 5),
    ("seq2seq", "bahdanau", "lstm", 2, True, 12),
    ("attention", "bahdanau", "gru", 2, True, None),
    ("attention", "bahdanau", "lstm", 1, False, None),
    ("attention", "luong", "gru", 1, False, None),
    ("attention", "luong", "lstm", 2, True, None),
]


def _cfg(network, attention, cell, layers, bi, feature_units, **kw):
    extra = ({"decoder_bidirectional": bi, "feature_units": feature_units} if network == "seq2seq"
             else {"attention": attention})
    return MODEL_CONFIGS[network](cell=cell, layers=layers, units=8, encoder_bidirectional=bi,
                       **extra, **kw)


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda s: "-".join(map(str, s)))
def test_shapes(spec, x):
    cfg = _cfg(*spec)
    autoencoder, encoder = build_autoencoder(cfg, T, F)
    both = keras.Model(autoencoder.input, [autoencoder.output, encoder.output])  # one forward pass
    reconstruction, features = (np.asarray(v) for v in both(whole(x)))
    assert reconstruction.shape == (N, T, F)
    assert features.shape == (N, feature_size(cfg))
    assert np.all(np.abs(features) <= 1)  # tanh bottleneck / RNN states
    # The two networks share the encoder layers.
    shared = {id(v) for v in encoder.weights}
    assert shared <= {id(v) for v in autoencoder.weights}


def test_feature_size():
    assert feature_size(Seq2seqConfig(units=8)) == 8
    assert feature_size(Seq2seqConfig(units=8, feature_units=3)) == 3
    assert feature_size(AttentionConfig(units=8)) == 16  # both directions, like the paper's 512
    assert feature_size(AttentionConfig(units=8, encoder_bidirectional=False)) == 8
    assert feature_size(AttentionConfig(units=8, feature="mean_std")) == 32
    assert feature_size(Seq2seqConfig(units=8, feature_units=3, feature="final_mean")) == 3 + 16


def test_decoder_inputs_are_the_shifted_reversed_frames():
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    lengths = np.array([5, 3])
    d = np.asarray(decoder_inputs(x, lengths))
    rev = targets(x, lengths)
    assert np.array_equal(rev[0], x[0, ::-1])
    assert np.array_equal(rev[1, :3], x[1, 2::-1]) and np.all(rev[1, 3:] == -1)  # real frames reversed, then padding
    assert np.array_equal(frame_weights(x, lengths), [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert d.shape == x.shape
    assert np.all(d[:, 0] == 0)
    for t in range(1, 3):
        assert np.array_equal(d[:, t], rev[:, t - 1])  # teacher forcing: the previous target frame


def test_model_feeds_the_decoder_the_shifted_reversed_frames(x):
    autoencoder, _ = build_autoencoder(_cfg(*CONFIGS[0]), T, F)
    probe = keras.Model(autoencoder.input, autoencoder.get_layer("decoder_inputs").output)
    lengths = np.arange(N) % T + 1
    assert np.allclose(np.asarray(probe([x, lengths])), np.asarray(decoder_inputs(x, lengths)))


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("feature", ["final", "mean_std", "final_mean"])
def test_padding_teaches_nothing(spec, feature, x):
    """A clip padded to a longer row has the features it has unpadded (final states at its last real frame,
    statistics over its real frames), whatever the padding holds; and the loss ignores the padding."""
    if feature != "final" and spec[0] == "seq2seq" and spec[2] == "lstm":
        pytest.skip("one LSTM seq2seq case is enough")
    cfg = _cfg(*spec, feature=feature)
    short = 7
    long_ae, long_enc = build_autoencoder(cfg, T, F)
    short_ae, short_enc = build_autoencoder(cfg, short, F)
    short_ae.set_weights(long_ae.get_weights())  # the weights do not depend on the row length
    padded = x.copy()
    padded[:, short:] = np.random.default_rng(5).uniform(-1, 1, padded[:, short:].shape)  # any padding
    lengths = np.full(N, short)
    a = np.asarray(long_enc([padded, lengths]))
    b = np.asarray(short_enc(whole(x[:, :short])))
    assert np.allclose(a, b, atol=1e-5)
    weights = frame_weights(padded, lengths)
    recon_long = np.asarray(long_ae([padded, lengths]))[:, :short]
    recon_short = np.asarray(short_ae(whole(x[:, :short])))
    assert np.allclose(recon_long, recon_short, atol=1e-5)  # the real steps reconstruct the same
    assert weights[:, short:].sum() == 0


def _decoder_probe(cfg, bidirectional: bool, luong: bool):
    """A model of the decoder alone: (teacher-forcing frames, initial state, encoder outputs, lengths) -> outputs."""
    frames, init = keras.Input((T, F)), keras.Input((cfg.units,))
    enc, lengths = keras.Input((T, 6)), keras.Input((), dtype="int32")
    mask = FrameMask(T)(lengths)
    out = _decoder_stack(cfg, frames, init, bidirectional, mask)
    if luong:
        out = LuongAttention()([out, enc, mask])[0]
    return keras.Model([frames, init, enc, lengths], out)


@pytest.mark.parametrize("kind", ["seq2seq-unidirectional", "luong", "seq2seq-bidirectional"])
def test_decoder_causality(kind):
    """Unidirectional and attention decoders never see the frame they predict: the teacher-forcing frame at
    step t (the target of step t - 1) changes no output before t. The bidirectional seq2seq decoder (the
    paper's) does see later frames: its backward direction carries them to earlier steps."""
    cfg = Seq2seqConfig(units=4, layers=2)
    probe = _decoder_probe(cfg, kind == "seq2seq-bidirectional", kind == "luong")
    rng = np.random.default_rng(3)
    frames = rng.normal(size=(2, T, F)).astype(np.float32)
    inputs = [frames, np.zeros((2, 4), np.float32), rng.normal(size=(2, T, 6)).astype(np.float32), np.full(2, T)]
    base = np.asarray(probe(inputs))
    changed = frames.copy()
    t = 6
    changed[:, t] += 1.0
    moved = np.asarray(probe([changed, *inputs[1:]]))
    assert not np.allclose(base[:, t:], moved[:, t:])
    if kind == "seq2seq-bidirectional":
        assert not np.allclose(base[:, :t], moved[:, :t])  # not causal: documented in the config and models
    else:
        assert np.allclose(base[:, :t], moved[:, :t], atol=1e-6)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_attention_weights_sum_to_one_over_encoder_time(attention, x):
    autoencoder, _ = build_autoencoder(AttentionConfig(attention=attention, units=8,
                                                   layers=2), T, F)
    w = attention_weights(autoencoder, x)
    assert w.shape == (N, T, T)  # (decoder steps, encoder steps)
    assert np.all(w >= 0)
    assert np.allclose(w.sum(-1), 1, atol=1e-5)
    lengths = np.arange(N) % T + 1
    w = attention_weights(autoencoder, x, lengths)
    assert np.allclose(w.sum(-1), 1, atol=1e-5)
    for i, n in enumerate(lengths):
        assert np.all(w[i, :, n:] < 1e-6)  # no weight on padding


def test_bahdanau_decoder_is_recurrent():
    """Later outputs depend on earlier frames only through the recurrent state (not re-initialised)."""
    layer = BahdanauDecoder("gru", units=4, layers=2, attention_units=3)
    rng = np.random.default_rng(1)
    enc = rng.normal(size=(2, 5, 6)).astype(np.float32)
    frames = rng.normal(size=(2, 7, 3)).astype(np.float32)
    init = np.zeros((2, 4), np.float32)
    mask = np.ones((2, 5), bool)
    out, weights = layer([enc, frames, init, mask])
    assert tuple(out.shape) == (2, 7, 4 + 6) and tuple(weights.shape) == (2, 7, 5)
    assert np.allclose(np.asarray(weights).sum(-1), 1, atol=1e-5)
    changed = frames.copy()
    changed[:, 0] += 1.0  # only the first frame
    out2, _ = layer([enc, changed, init, mask])
    assert not np.allclose(np.asarray(out)[:, -1], np.asarray(out2)[:, -1])  # ... still changes the last step
    later = frames.copy()
    later[:, -1] += 1.0  # only the last frame: earlier steps are untouched (step-wise, causal)
    out3, _ = layer([enc, later, init, mask])
    assert np.allclose(np.asarray(out)[:, :-1], np.asarray(out3)[:, :-1])
    assert not np.allclose(np.asarray(out)[:, -1], np.asarray(out3)[:, -1])
    # The configuration round-trips (the layer is registered and serialisable).
    clone = BahdanauDecoder.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_bahdanau_decoder_compiles_with_xla():
    """Its loop and gradient compile with XLA (tf.scan is bounded; keras.ops.scan is not)."""
    layer = BahdanauDecoder("gru", units=3, layers=1)
    rng = np.random.default_rng(2)
    enc = tf.constant(rng.normal(size=(2, 4, 5)), tf.float32)
    frames = tf.constant(rng.normal(size=(2, 3, 2)), tf.float32)
    init = tf.zeros((2, 3))
    mask = tf.constant([[True, True, True, False], [True, True, True, True]])
    layer([enc, frames, init, mask])

    @tf.function(jit_compile=True)
    def loss_and_grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer([enc, frames, init, mask])[0] ** 2)
        return loss, tape.gradient(loss, layer.trainable_variables)

    loss, grads = loss_and_grads()
    assert np.isfinite(loss.numpy())
    assert len(grads) == len(layer.trainable_variables) and all(g is not None for g in grads)


def test_dropout_active_in_training_only(x):
    cfg = Seq2seqConfig(units=8, layers=1, dropout=0.5)
    autoencoder, encoder = build_autoencoder(cfg, T, F)
    assert isinstance(encoder.get_layer("encoder_dropout"), keras.layers.Dropout)
    a, b = np.asarray(encoder(whole(x), training=True)), np.asarray(encoder(whole(x), training=True))
    assert not np.allclose(a, b)
    c, d = np.asarray(encoder(whole(x), training=False)), np.asarray(encoder(whole(x)))
    assert np.array_equal(c, d)
    assert not np.allclose(a, c)


def test_same_seed_same_weights_other_seed_other_weights():
    cfg = AttentionConfig(attention="bahdanau", units=4, layers=1)
    w1 = build_autoencoder(cfg, T, F, seed=3)[0].get_weights()
    w2 = build_autoencoder(cfg, T, F, seed=3)[0].get_weights()
    w3 = build_autoencoder(cfg, T, F, seed=4)[0].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w3))


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_keras_save_and_safe_load(attention, x, tmp_path):
    autoencoder, _ = build_autoencoder(AttentionConfig(attention=attention, units=4,
                                                   layers=1, dropout=0.0), T, F)
    path = tmp_path / "model.keras"
    autoencoder.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert np.allclose(np.asarray(loaded(whole(x))), np.asarray(autoencoder(whole(x))), atol=1e-6)
