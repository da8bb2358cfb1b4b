"""The one pipeline: provenance of its artefacts (nothing reused from another corpus or other settings),
and scoring that cannot leak test information into the choice of C."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_tone_corpus

from auttention.config import ScoringConfig
from auttention.corpus import fingerprint, read_corpus
from auttention.evaluation import evaluate
from auttention.features import feature_frame
from auttention.svr import fit_predict
from search.cli import main

pytestmark = pytest.mark.timeout(600)

CONFIG = {"spectrogram": {"n_fft": 256, "hop_length": 128, "n_mels": 12},
          "seq2seq": {"units": 4, "layers": 1, "dropout": 0.0, "decoder_bidirectional": False},
          "attention": {"units": 4, "layers": 1, "dropout": 0.0, "attention": "luong"},
          "training": {"epochs": 1, "batch_size": 8, "jit_compile": False}}


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_second_corpus_in_the_same_folder_is_its_own(tmp_path):
    """The normal way to meet it: the same config and --out for two corpora. The second run reports the
    second corpus (spectrograms and models made again, saying so), never the first one's table."""
    a = write_tone_corpus(tmp_path / "a", n_per_part=5)
    b = write_tone_corpus(tmp_path / "b", n_per_part=7, seconds=0.8)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "x"
    first = cli("pipeline", "--data", str(a), "--config", str(config), "--out", str(out))
    assert first.exit_code == 0, first.output
    second = cli("pipeline", "--data", str(b), "--config", str(config), "--out", str(out))
    assert second.exit_code == 0, second.output
    assert "made from another corpus" in second.output and "reusing" not in second.output
    assert f"functionals: {out / 'functionals'} was made from another corpus" in second.output
    assert "removed and are trained again" in second.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["made_from"]["corpus"] == fingerprint(read_corpus(b))
    assert metrics["fusion"]["n_test"] == 7
    assert len(pd.read_csv(out / "predictions.test.csv")) == 7
    # the same corpus again: everything reused
    again = cli("pipeline", "--data", str(b), "--config", str(config), "--out", str(out))
    assert "spectrograms: reusing" in again.output and "trained again" not in again.output
    assert f"functionals: reusing {out / 'functionals'}" in again.output
    # other spectrogram settings: made again, models too
    config.write_text(yaml.safe_dump({**CONFIG, "spectrogram": {**CONFIG["spectrogram"], "n_mels": 10}}))
    other = cli("pipeline", "--data", str(b), "--config", str(config), "--out", str(out))
    assert other.exit_code == 0, other.output
    assert "made with other spectrogram settings" in other.output and "trained again" in other.output
    # relabelling keeps the spectrograms and uses the new labels
    labels = (b / "lab" / "labels.csv").read_text().splitlines()
    relabelled = [labels[0]] + [f"{ln.split(',')[0]},{10 - int(ln.split(',')[1])}" for ln in labels[1:]]
    (b / "lab" / "labels.csv").write_text("\n".join(relabelled) + "\n")
    third = cli("pipeline", "--data", str(b), "--config", str(config), "--out", str(out))
    assert "spectrograms: reusing" in third.output and "functionals: reusing" in third.output
    table = pd.read_csv(b / "lab" / "labels.csv").set_index("file_name")
    for branch in ("fusion", "functionals"):  # the kept features, joined with the new labels by file name
        devel = pd.read_parquet(out / "features" / branch / "features.parquet").set_index("file_name")
        assert (devel["label"] == table.loc[devel.index, "label"]).all()


def test_train_refuses_a_checkpoint_of_other_spectrograms(tmp_path):
    """`train` resumes a checkpoint only on the spectrograms it was trained on; `features` and `fuse`
    refuse models and feature sets of other spectrograms or corpora, in one line each."""
    a = write_tone_corpus(tmp_path / "a", n_per_part=4)
    b = write_tone_corpus(tmp_path / "b", n_per_part=4, seconds=0.7)
    for name, corpus in (("sa", a), ("sb", b)):
        done = cli("extract", "--data", str(corpus), "--out", str(tmp_path / name), "--n-fft", "256",
                   "--hop-length", "128", "--n-mels", "12", "--frames", "30")
        assert done.exit_code == 0, done.output
    model = ["--network", "seq2seq", "--units", "4", "--layers", "1", "--batch-size", "4", "--no-jit-compile",
             "--no-decoder-bidirectional"]
    common = [*model, "--epochs", "1"]
    first = cli("train", "--spectrograms", str(tmp_path / "sa"), "--out", str(tmp_path / "m"), *common)
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(main, ["train", "--spectrograms", str(tmp_path / "sb"), "--out", str(tmp_path / "m"),
                                       *model, "--epochs", "2"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "training data" in lines[0] and "Traceback" not in result.output
    feats = CliRunner().invoke(main, ["features", "--model", str(tmp_path / "m"), "--spectrograms",
                                      str(tmp_path / "sb"), "--out", str(tmp_path / "f")])
    assert feats.exit_code == 2 and "trained on other data" in feats.output
    for name in ("sa", "sb"):
        cli("train", "--spectrograms", str(tmp_path / name), "--out", str(tmp_path / f"m{name}"), *common)
        cli("features", "--model", str(tmp_path / f"m{name}"), "--spectrograms", str(tmp_path / name),
            "--out", str(tmp_path / f"f{name}"))
    fused = CliRunner().invoke(main, ["fuse", str(tmp_path / "fsa"), str(tmp_path / "fsb"), "--out", str(tmp_path / "g")])
    assert fused.exit_code == 2 and "made from another corpus" in fused.output


def _features(rng, n=(40, 30, 30)):
    parts = np.repeat(["train", "devel", "test"], n)
    y = rng.integers(1, 10, len(parts)).astype(float)
    x = rng.normal(size=(len(parts), 6)) + y[:, None] * np.linspace(0.05, 0.3, 6)
    names = [f"{p}_{i:04d}.wav" for i, p in enumerate(parts)]
    return feature_frame(names, parts, y, x, "f")


def test_test_partition_cannot_move_the_choice_and_the_final_model_is_refit_on_train_and_devel():
    rng = np.random.default_rng(0)
    frame = _features(rng)
    cfg = ScoringConfig()
    ev = evaluate(frame, cfg)
    test = frame["partition"] == "test"
    cols = [c for c in frame.columns if c.startswith("f_")]
    perturbed = frame.copy()
    perturbed.loc[test, cols] = (rng.normal(size=(int(test.sum()), len(cols))) * 100).astype(np.float32)
    perturbed.loc[test, "label"] = rng.permutation(perturbed.loc[test, "label"].to_numpy())
    ev2 = evaluate(perturbed, cfg)
    assert ev2.c == ev.c and ev2.devel_rho == ev.devel_rho and ev2.score_per_c == ev.score_per_c
    assert ev2.devel.equals(ev.devel)
    # the test predictions are those of a scaler + SVR fit on train+devel with the chosen C ...
    fit = frame[~test].sort_values("file_name")
    x_test = frame[test].sort_values("file_name")
    expected = fit_predict(fit[cols].to_numpy(), fit["label"].to_numpy(), x_test[cols].to_numpy(), ev.c, cfg)
    assert np.array_equal(ev.test.set_index("file_name").loc[x_test["file_name"], "prediction"].to_numpy(), expected)
    # ... and not those of one fit on train alone
    train = frame[frame["partition"] == "train"].sort_values("file_name")
    train_only = fit_predict(train[cols].to_numpy(), train["label"].to_numpy(), x_test[cols].to_numpy(), ev.c, cfg)
    assert not np.array_equal(expected, train_only)


def test_functionals_are_a_branch_and_fuse_with_the_autoencoders(tmp_path):
    """scoring.fuse puts the utterance functionals into the fusion branch; every table shows each branch:
    attention, seq2seq, functionals, fusion; the fused set's provenance names the functionals' settings.
    The same run chooses C by scoring.validation speaker_folds (one pipeline run for both: the suite's time):
    speaker-disjoint folds over train+devel; the table shows that score (with its interval) before devel and
    test, and metrics.json records it for every branch, and the paired difference of the scores."""
    corpus = write_tone_corpus(tmp_path / "c", n_per_part=6)
    names = pd.read_csv(corpus / "lab" / "labels.csv")["file_name"]
    pd.DataFrame({"file_name": names, "speaker": [f"{n.split('_')[0]}{i % 3}" for i, n in enumerate(names)]}) \
        .to_csv(corpus / "lab" / "speakers.csv", index=False)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "scoring": {"fuse": "attention+seq2seq+functionals",
                                                            "validation": "speaker_folds", "folds": 3}}))
    out = tmp_path / "x"
    result = cli("pipeline", "--data", str(corpus), "--config", str(config), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.output.splitlines() if line.split()[:1] and " vs " not in line
            and line.split()[0] in ("attention", "seq2seq", "functionals", "fusion")]
    assert rows == ["attention", "seq2seq", "functionals", "fusion"]
    fused = pd.read_parquet(out / "features" / "fusion" / "features.parquet")
    alone = pd.read_parquet(out / "features" / "functionals" / "features.parquet")
    columns = [c for c in alone.columns if c.startswith("functionals_")]
    assert columns and set(columns) <= set(fused.columns)
    assert any(c.startswith("attention_") for c in fused.columns) and any(c.startswith("seq2seq_") for c in fused.columns)
    merged = fused.set_index("file_name").loc[alone["file_name"], columns].to_numpy()
    assert np.array_equal(merged, alone[columns].to_numpy())  # joined on file name, not row order
    import pyarrow.parquet as pq

    made_from = json.loads(pq.read_schema(out / "features" / "fusion" / "features.parquet").metadata[b"auttention.made_from"])
    assert made_from["functionals"]["features"].startswith("MFCC, energy, voicing, spectral shape and timing functionals")
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"attention", "seq2seq", "functionals", "fusion", "fusion_vs_functionals"} <= set(metrics)
    lines = result.output.splitlines()
    head = next(line for line in lines if " devel" in line and " test" in line and line.rstrip().endswith("C"))
    assert head.split()[:3] == ["3-fold", "devel", "test"]
    assert any(line.startswith("(3-fold: the mean rho of speaker-disjoint folds") for line in lines)
    for branch in ("attention", "seq2seq", "functionals", "fusion"):
        entry = metrics[branch]
        assert entry["validation"] == "speaker_folds" and entry["score_name"] == "3-fold"
        assert entry["score_per_c"][f"{entry['c']:g}"] == entry["score"]  # C is the one with the best score
        assert entry["score"] == max(entry["score_per_c"].values())
    # the fusion against the functionals on their 3-fold scores too, paired on the same clips and folds
    versus = metrics["fusion_vs_functionals"]
    assert versus["score_name"] == "3-fold" and versus["score"]["clips"] == 12
    assert versus["score"]["difference"] == pytest.approx(metrics["fusion"]["score"] - metrics["functionals"]["score"])
    assert any(line.startswith("fusion vs functionals (paired, the same clips): 3-fold ") for line in lines)
    # a fuse the configuration does not know is one line
    config.write_text(yaml.safe_dump({**CONFIG, "scoring": {"fuse": "attention+mfcc"}}))
    bad = cli("pipeline", "--data", str(corpus), "--config", str(config), "--out", str(tmp_path / "y"))
    assert bad.exit_code == 2 and "scoring.fuse must be one of attention+seq2seq" in bad.output

