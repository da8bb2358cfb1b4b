"""The step-by-step CLI end to end on a tiny demo corpus, the one-command pipeline, and error lines."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from search.cli import main

pytestmark = pytest.mark.timeout(600)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    invoke("demo-corpus", str(root / "demo"), "--clips", "48", "--speakers", "24", "--seed", "3")
    return root


def test_steps_end_to_end(demo):
    data, runs = demo / "demo", demo / "runs"
    out = invoke("extract", "--data", str(data), "--out", str(runs / "spec"), "--n-fft", "512", "--hop-length", "320",
                 "--n-mels", "16", "--frames", "40")
    assert "48 clips x 40 frames x 16 bands" in out
    common = ["--spectrograms", str(runs / "spec"), "--units", "8", "--layers", "1", "--epochs", "2",
              "--batch-size", "16", "--no-jit-compile"]
    out = invoke("train", "--network", "seq2seq", "--out", str(runs / "seq2seq"), "--no-decoder-bidirectional", *common)
    assert "seq2seq: epoch 2 loss" in out
    invoke("train", "--network", "attention", "--out", str(runs / "attention"), "--attention", "luong", *common)
    for net in ("seq2seq", "attention"):
        invoke("features", "--model", str(runs / net), "--spectrograms", str(runs / "spec"),
               "--out", str(runs / "features" / net), "--csv")
    out = invoke("fuse", str(runs / "features" / "seq2seq"), str(runs / "features" / "attention"),
                 "--out", str(runs / "features" / "fusion"))
    assert "48 clips x 24" in out  # 8 (seq2seq bottleneck = units) + 16 (attention: both directions)
    labels = str(data / "lab" / "labels.csv")
    out = invoke("evaluate", "--features", str(runs / "features" / "fusion"), "--labels", labels,
                 "--out", str(runs / "predictions.test.csv"))
    assert "devel rho=" in out and "speakers resampled" in out  # lab/speakers.csv beside the labels
    preds = pd.read_csv(runs / "predictions.test.csv")
    truth = pd.read_csv(labels)
    assert sorted(preds.file_name) == sorted(truth[truth.file_name.str.startswith("test_")].file_name)
    assert preds.prediction.between(1, 9).all()
    out = invoke("score", "--predictions", str(runs / "predictions.test.csv"), "--labels", labels)
    # with its interval (speakers resampled: lab/speakers.csv), or a word on why there is none (a one-epoch
    # model may predict one value for every clip)
    assert re.search(rf"Spearman rho = -?\d\.\d{{3}} \[-?\d\.\d\d, -?\d\.\d\d\] over {len(preds)} clips  "
                     rf"\[95% interval, speakers resampled\]|Spearman rho = 0\.000 over {len(preds)} clips  \(no "
                     rf"interval: the predictions or labels are constant in most resamples\)", out), out
    assert (runs / "features" / "seq2seq" / "features.csv").is_file()
    # resuming a finished model does not train again
    out = invoke("train", "--network", "seq2seq", "--out", str(runs / "seq2seq"), "--no-decoder-bidirectional", *common)
    assert "epoch 1 loss" not in out


def test_pipeline_prints_the_table(demo):
    config = demo / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "spectrogram": {"n_fft": 512, "hop_length": 320, "n_mels": 16, "frames": 40},
        "seq2seq": {"units": 8, "layers": 1},
        "attention": {"units": 8, "layers": 1, "attention": "bahdanau"},
        "training": {"epochs": 1, "batch_size": 16}}))
    out = invoke("pipeline", "--data", str(demo / "demo"), "--config", str(config), "--out", str(demo / "runs" / "p"))
    lines = out.splitlines()
    rho = r"(-?\d\.\d{3}( \[-?\d\.\d\d, -?\d\.\d\d\])?|undefined \(every label equal\))"
    for name in ("attention", "seq2seq", "fusion", "functionals"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert re.fullmatch(rf"{name} +{rho} +{rho} +\S+", row), row  # name, devel [interval], test [interval], C
    assert "[95% bootstrap interval, speakers resampled]" in out  # the demo corpus writes lab/speakers.csv
    diff = r"(-|\+)\d\.\d{3}( \[(-|\+)\d\.\d\d, (-|\+)\d\.\d\d\])?"
    versus = next(line for line in lines if line.startswith("fusion vs functionals"))
    assert re.fullmatch(rf"fusion vs functionals \(paired, the same clips\): devel {diff}, test {diff}", versus), versus
    metrics = yaml.safe_load((demo / "runs" / "p" / "metrics.json").read_text())
    assert set(metrics) >= {"attention", "seq2seq", "fusion", "functionals", "fusion_vs_functionals"}
    for name in ("attention", "seq2seq", "fusion", "functionals"):
        assert metrics[name]["resampled"] == "speakers"
        ci = metrics[name]["devel_rho_ci"]
        assert ci is None or ci[0] <= ci[1]
    for part in ("devel", "test"):  # the paired difference is the difference of the two rhos on the same clips
        entry = metrics["fusion_vs_functionals"][part]
        assert entry["resampled"] == "speakers" and entry["clips"] == metrics["fusion"][f"n_{part}"] if part == "test" \
            else entry["clips"] > 0
        assert entry["difference"] == pytest.approx(metrics["fusion"][f"{part}_rho"] - metrics["functionals"][f"{part}_rho"])
        assert entry["ci"] is None or entry["ci"][0] <= entry["difference"] <= entry["ci"][1]
    assert (demo / "runs" / "p" / "predictions" / "functionals.test.csv").is_file()
    assert (demo / "runs" / "p" / "predictions.test.csv").is_file()
    again = yaml.safe_load((demo / "runs" / "p" / "config.yaml").read_text())
    assert again["attention"]["attention"] == "bahdanau" and again["training"]["epochs"] == 1


@pytest.mark.parametrize("args, expected", [
    (["extract", "--data", "/no/such/corpus", "--out", "x"], "/no/such/corpus: no such corpus folder"),
    (["extract", "--data", ".", "--out", "x", "--n-fft", "abc"], "spectrogram.n_fft must be a number"),
    (["train", "--network", "seq2seq", "--spectrograms", ".", "--out", "x", "--attention", "luong"],
     "--attention does not apply to --network seq2seq"),
    (["features", "--model", "nowhere", "--spectrograms", ".", "--out", "x"], "no trained model here"),
    (["pipeline", "--data", ".", "--config", "/no/such.yaml"], "/no/such.yaml: no such file"),
    (["run", "/no/such.yaml"], "/no/such.yaml: no such file"),
])
def test_user_errors_are_one_line(tmp_path, args, expected):
    proc = subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
