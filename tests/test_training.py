"""Training one autoencoder: learning, divergence, checkpoints, XLA (exact resume: test_engine.py)."""


import numpy as np
import pytest
import tensorflow as tf

from auttention.config import Seq2seqConfig, TrainingConfig
from auttention.errors import TrainingDiverged, UserError
from auttention.models import feature_size, frame_weights, full_lengths, targets
from auttention.training import Trainer, use_xla

T, F, N = 12, 8, 32

SMALL = Seq2seqConfig(cell="gru", layers=1, units=8, encoder_bidirectional=False,
                      decoder_bidirectional=False, dropout=0.2)


def ramps(n=N, seed=0):
    """A learnable, time-asymmetric signal: per-sample ramps over time with a per-band offset."""
    rng = np.random.default_rng(seed)
    slope = rng.uniform(0.3, 0.8, (n, 1, 1)) * rng.choice([-1, 1], (n, 1, 1))
    offset = rng.uniform(-0.2, 0.2, (n, 1, F))
    t = np.linspace(-1, 1, T)[None, :, None]
    return (slope * t + offset).astype(np.float32)


@pytest.fixture(scope="module")
def x():
    return ramps()


def reconstruction_loss(trainer: Trainer, x: np.ndarray) -> float:
    """The mean reconstruction MSE of x's frames, inference mode (no training)."""
    lengths = full_lengths(x)
    return float(trainer.autoencoder.evaluate([x, lengths], targets(x, lengths), sample_weight=frame_weights(x, lengths),
                                              verbose=0))


def test_loss_decreases_and_the_decoder_learns_the_reversed_input(x):
    trainer = Trainer(SMALL, TrainingConfig(batch_size=8, learning_rate=1e-2, jit_compile=False), T, F)
    before = reconstruction_loss(trainer, x)
    losses = [trainer.fit_epoch(x) for _ in range(6)]
    assert trainer.epoch == 6 and trainer.losses == losses
    assert losses[-1] < 0.5 * losses[0]
    assert reconstruction_loss(trainer, x) < 0.5 * before
    recon = trainer.autoencoder.predict([x, full_lengths(x)], verbose=0)
    # The target is x reversed in time: the reconstruction is far closer to it than to x.
    assert np.mean((recon - targets(x)) ** 2) < 0.25 * np.mean((recon - x) ** 2)
    features = trainer.features(x)
    assert features.shape == (N, feature_size(SMALL)) and features.dtype == np.float32
    assert np.array_equal(features, trainer.features(x, batch_size=5))  # inference: no dropout


def test_nan_input_raises_training_diverged(x):
    trainer = Trainer(SMALL, TrainingConfig(batch_size=8, jit_compile=False), T, F)
    bad = x.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(TrainingDiverged, match="NaN"):
        trainer.fit_epoch(bad)
    assert trainer.epoch == 0
    # A NaN that appears in training itself (here: poisoned weights) is caught from the loss.
    weights = trainer.autoencoder.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    trainer.autoencoder.set_weights(weights)
    with pytest.raises(TrainingDiverged, match="diverged"):
        trainer.fit_epoch(x)
    assert issubclass(TrainingDiverged, RuntimeError)


def test_bad_shape_is_refused(x):
    trainer = Trainer(SMALL, TrainingConfig(jit_compile=False), T, F)
    with pytest.raises(ValueError, match="shaped"):
        trainer.fit_epoch(x[:, :5])


def test_load_reports_a_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not a model checkpoint"):
        Trainer.load(tmp_path)


def test_xla_only_where_it_pays():
    assert use_xla(False) is False
    assert use_xla(True) == bool(tf.config.list_physical_devices("GPU"))  # slower on CPU: off


def test_batch_by_batch_trains_exactly_as_whole_arrays_from_a_read_only_view(x):
    """fit_epoch feeds Keras batch by batch (training.batches) from a read-only view, as a trial does
    with the object store's pages: the same weights, loss and features as Keras' own fit of the
    shuffled copy and its reversed targets (N = 32 with batch 10: a last partial batch too)."""
    cfg = TrainingConfig(batch_size=10, learning_rate=1e-2, jit_compile=False, seed=3)
    view = x[:]
    view.flags.writeable = False
    ours, whole = Trainer(SMALL, cfg, T, F), Trainer(SMALL, cfg, T, F)
    lengths = np.arange(len(x)) % T + 1  # padded rows too: the masks and weights go the same way
    for epoch in range(2):
        loss = ours.fit_epoch(view, lengths)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(x))
        xs, ls = x[order], lengths[order]
        history = whole.autoencoder.fit([xs, ls], targets(xs, ls), sample_weight=frame_weights(xs, ls),
                                        batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=0)
        assert loss == history.history["loss"][-1]
    for a, b in zip(ours.autoencoder.get_weights(), whole.autoencoder.get_weights()):
        assert np.array_equal(a, b)
    assert np.array_equal(ours.features(view, lengths), whole.encoder.predict([x, lengths], batch_size=256, verbose=0))
