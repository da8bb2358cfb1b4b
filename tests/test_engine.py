"""The engine: one epoch loop for every driver; exact resume from its checkpoints, the order of the networks'
epochs changes no number, its hooks, scoring, and the selection statistic."""

import dataclasses
import json

import numpy as np
import pytest

from auttention.config import AttentionConfig, PipelineConfig, Seq2seqConfig, TrainingConfig
from auttention.engine import Engine, Hooks, selection_score
from auttention.record import FUSION, NETWORKS, EpochReport
from auttention.errors import UserError
from auttention.spectrogram import Spectrograms
from auttention.training import Trainer

T, F = 12, 8

SMALL = Seq2seqConfig(cell="gru", layers=1, units=8, encoder_bidirectional=False, decoder_bidirectional=False,
                      dropout=0.2)
ATTENTION = AttentionConfig(cell="gru", layers=1, units=4, encoder_bidirectional=False, dropout=0.2)


def spectrograms(n_train=32, n_devel=0, seed=0, corpus="c0") -> Spectrograms:
    """Real spectrogram rows of a learnable, time-asymmetric signal (per-clip ramps over time with a per-band
    offset) whose label follows the ramp's slope: train rows, then devel rows."""
    rng = np.random.default_rng(seed)
    n = n_train + n_devel
    slope = rng.uniform(0.3, 0.8, (n, 1, 1)) * rng.choice([-1, 1], (n, 1, 1))
    offset = rng.uniform(-0.2, 0.2, (n, 1, F))
    x = (slope * np.linspace(-1, 1, T)[None, :, None] + offset).astype(np.float32)
    partition = np.array(["train"] * n_train + ["devel"] * n_devel)
    names = np.array([f"{p}_{i:04d}.wav" for i, p in enumerate(partition)])
    label = np.clip(np.round(5 + 5 * slope[:, 0, 0]), 1, 9).astype(float)
    return Spectrograms(names, partition, label, x, np.full(n, T, np.int32), np.zeros(n, np.int32),
                        {"corpus": corpus, "settings_hash": "s0"})


def test_resume_equals_straight_training_and_seed_determinism(tmp_path):
    """The `train` step's engine: 2 epochs + checkpoint + resume 1 == 3 epochs straight; same seed, same losses;
    a log line per epoch, TensorBoard, and a checkpoint of another model or other data refused."""
    spec = spectrograms()
    tcfg = TrainingConfig(epochs=2, batch_size=8, learning_rate=1e-2, clip_value=1.0, seed=7, jit_compile=False)
    seen = []
    hooks = Hooks(trained=lambda name, epoch, loss: seen.append((name, epoch)))

    def trained(folder, cfg, model=SMALL, data=spec):
        engine = Engine.resume({"seq2seq": model}, cfg, data, {"seq2seq": folder})
        engine.run(cfg.epochs, hooks)
        engine.close()
        return engine.trainers["seq2seq"]

    first = trained(tmp_path / "a", tcfg)
    assert seen == [("seq2seq", 1), ("seq2seq", 2)]
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and state["model"]["cell"] == "gru"
    assert list((tmp_path / "a" / "tensorboard").iterdir())  # TensorBoard event file

    # More epochs continue the model: only the third runs (a killed run continues from its checkpoint).
    three = dataclasses.replace(tcfg, epochs=3)
    resumed = trained(tmp_path / "a", three)
    assert seen[2:] == [("seq2seq", 3)]

    straight = trained(tmp_path / "b", three)
    assert straight.losses[:2] == first.losses  # same config, data and seed: the same losses
    assert np.isclose(straight.losses[2], resumed.losses[2], rtol=1e-6, atol=0)
    for a, b in zip(straight.autoencoder.get_weights(), resumed.autoencoder.get_weights()):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6)
    # Optimizer state came back too (Adam's step count and moments).
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy()) == 12

    # Loading the output folder gives the final model (what `features --model out` does).
    loaded = Trainer.load(tmp_path / "b")
    assert loaded.epoch == 3 and loaded.model_cfg == SMALL
    assert np.allclose(loaded.features(spec.x), straight.features(spec.x), atol=1e-6)

    # The same folder with another model, or other spectrograms, is refused, not silently mixed.
    with pytest.raises(UserError, match="model settings differ"):
        trained(tmp_path / "a", tcfg, model=dataclasses.replace(SMALL, units=4))
    with pytest.raises(UserError, match="training data"):
        trained(tmp_path / "a", three, data=spectrograms(corpus="c1"))


def pipeline_config(**training) -> PipelineConfig:
    return PipelineConfig(seq2seq=SMALL, attention=ATTENTION,
                          training=TrainingConfig(batch_size=8, learning_rate=1e-2, jit_compile=False, seed=3, **training))


def test_the_order_of_the_networks_epochs_changes_no_number(tmp_path):
    """Both networks an epoch each in turn (a trial, `pipeline`) train exactly as each network alone (each
    has its own seeds); one network alone has no fusion."""
    spec, cfg = spectrograms(n_devel=16), pipeline_config()
    pair = Engine.new(cfg, spec)
    pair.run(2)
    for name in NETWORKS:
        alone = Engine.resume({name: getattr(cfg, name)}, cfg.training, spec, {name: tmp_path / name})
        alone.run(2)
        assert alone.trainers[name].losses == pair.trainers[name].losses
        for a, b in zip(alone.trainers[name].autoencoder.get_weights(), pair.trainers[name].autoencoder.get_weights()):
            assert np.array_equal(a, b)
    # one network alone (the `train` step's engine): no fusion, and no scoring without scoring settings
    assert set(alone.features()) == {name}
    with pytest.raises(ValueError, match="scoring"):
        alone.score()


def test_scored_epochs_hooks_and_a_saved_pair_scores_the_same(tmp_path):
    """A trial's use: devel scored every k-th epoch and the last, each through the `scored` hook and into
    `history`; the pair saved there and loaded again gives the same features and the same evaluation."""
    spec, cfg = spectrograms(n_devel=16), pipeline_config()
    engine = Engine.new(cfg, spec)
    trained, reported = [], []
    engine.run(3, Hooks(trained=lambda n, e, loss: trained.append((n, e)), scored=reported.append), score_every=2)
    assert trained == [(n, e) for e in (1, 2, 3) for n in engine.trainers]
    assert [r.epoch for r in reported] == [2, 3] and engine.history == reported
    last = reported[-1]
    assert set(last.scores) == {*NETWORKS, FUSION} and set(last.losses) == set(NETWORKS)
    assert last.losses["seq2seq"] == engine.trainers["seq2seq"].losses[-1]
    # the flat dict a trial reports, and back
    assert EpochReport.from_result(last.to_result()).scores == last.scores
    assert {"fusion_score", "fusion_c", "seq2seq_loss", "epoch", "epoch_seconds"} <= set(last.to_result())
    features, evaluations = engine.evaluate()
    assert set(features) == {*NETWORKS, FUSION}
    assert evaluations[FUSION].score == last.score("fusion_score")  # the same features, the same choice
    engine.save(tmp_path / "ckpt")
    loaded = Engine.load(tmp_path / "ckpt", cfg, spec)
    assert loaded.epoch == 3
    again, _ = loaded.evaluate()
    for name in features:
        assert features[name].equals(again[name])


def test_selection_score():
    history = [0.1, float("nan"), 0.5, 0.3, None, 0.2]
    assert selection_score(history, "best", 3) == 0.5
    assert selection_score(history, "last", 3) == 0.2
    assert selection_score(history, "mean_last", 2) == pytest.approx(0.25)
    assert np.isnan(selection_score([float("nan")], "mean_last", 3))


def test_speakers_are_joined_by_file_name_and_reach_the_feature_tables():
    """with_labels takes the corpus' speakers (by file name, like labels); select keeps them; a clip cut into
    chunks gets its speaker once; the speaker column is a key, never a feature."""
    import pandas as pd

    from auttention.engine import clip_features
    from auttention.features import feature_columns

    spec = spectrograms(n_train=4, n_devel=2)
    corpus = pd.DataFrame({"file_name": spec.file_name[::-1], "label": spec.label[::-1],
                           "speaker": [f"s{n[-5]}" for n in spec.file_name[::-1]]})
    spec = spec.with_labels(corpus)
    assert list(spec.speaker) == [f"s{n[-5]}" for n in spec.file_name]
    assert list(spec.select("devel").speaker) == ["s4", "s5"]
    assert spec.with_labels(corpus[["file_name", "label"]]).speaker is None
    chunked = dataclasses.replace(spec, file_name=np.repeat(spec.file_name[:3], 2), partition=spec.partition[:6],
                                  label=np.repeat(spec.label[:3], 2), speaker=np.repeat(spec.speaker[:3], 2))
    table = clip_features(chunked, np.ones((6, 2), np.float32), "f")
    assert list(table["speaker"]) == ["s0", "s1", "s2"] and feature_columns(table) == ["f_0000", "f_0001"]
