"""The MFCC-functionals reference baseline: shape, names, units, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auttention.baseline import mfcc_functional_names, mfcc_functionals


def _tone(f0: float, seconds: float = 2.0, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(0)
    return 0.2 * np.sign(np.sin(2 * np.pi * f0 * t)) + 0.005 * rng.standard_normal(len(t))


def test_vector_shape_names_and_pitch():
    names = mfcc_functional_names()
    for f0 in (90.0, 220.0):
        v = mfcc_functionals(_tone(f0), 16000)
        assert v.dtype == np.float32 and v.shape == (len(names),) and np.all(np.isfinite(v))
        stats = dict(zip(names, v))
        assert stats["voiced_fraction"] > 0.9
        assert stats["f0_st_median"] == pytest.approx(12 * np.log2(f0 / 100), abs=0.3)


def test_noise_is_unvoiced_and_int16_matches_float():
    rng = np.random.default_rng(1)
    noise = 0.1 * rng.standard_normal(16000)
    stats = dict(zip(mfcc_functional_names(), mfcc_functionals(noise, 16000)))
    assert stats["voiced_fraction"] < 0.1
    tone = _tone(150.0)
    pcm = np.round(tone * 32768).astype(np.int16)
    assert np.allclose(mfcc_functionals(pcm, 16000), mfcc_functionals(tone, 16000), atol=0.05)


def test_timing_and_spectral_shape():
    """Three seconds of 0.6 s voiced bursts a second: the durations and rates count them; white noise has a
    higher centroid and a flatter slope than a low buzz; one frame of audio is enough."""
    t = np.arange(48000) / 16000
    bursts = _tone(150.0, 3.0) * ((t % 1.0) < 0.6)
    stats = dict(zip(mfcc_functional_names(), mfcc_functionals(bursts, 16000)))
    samples = float(stats["duration_s"]) * 16000  # the clip's length, an audio feature (not a timing)
    assert round(samples) == len(bursts)
    assert stats["voiced_segments_per_s"] == pytest.approx(1.0)
    assert stats["voiced_segment_mean_s"] == pytest.approx(0.6, abs=0.05)
    assert stats["pauses_per_s"] == pytest.approx(2 / 3)  # the trailing silence is no pause
    assert stats["pause_mean_s"] == pytest.approx(0.4, abs=0.05)
    noise = dict(zip(mfcc_functional_names(), mfcc_functionals(np.random.default_rng(2).standard_normal(16000) * 0.1, 16000)))
    assert noise["centroid_khz_mean"] > 3.0 > stats["centroid_khz_mean"]
    assert noise["slope_db_per_khz_mean"] > stats["slope_db_per_khz_mean"]
    assert noise["flux_mean"] > stats["flux_mean"] > 0
    assert noise["voiced_segments_per_s"] == 0 and noise["pauses_per_s"] == 0
    assert np.all(np.isfinite(mfcc_functionals(_tone(150.0, 0.025), 16000)))  # one 25 ms frame


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        mfcc_functionals(np.zeros((2, 16000)), 16000)
    with pytest.raises(ValueError, match="fewer than one"):
        mfcc_functionals(np.zeros(100), 16000)
    with pytest.raises(ValueError, match="NaN"):
        mfcc_functionals(np.full(16000, np.nan), 16000)


def test_evaluate_baseline_on_a_tone_corpus(tone_corpus):
    from auttention.baseline import evaluate_baseline
    from auttention.config import ScoringConfig
    from auttention.corpus import read_corpus

    ev = evaluate_baseline(read_corpus(tone_corpus), ScoringConfig(), jobs=2)
    assert ev.c in ScoringConfig().complexities
    assert ev.devel_rho > 0.5  # pitch falls with the label, and the baseline measures pitch
    assert ev.test_rho is not None and len(ev.test) == 6


def test_baseline_with_every_label_equal_says_rho_is_undefined(tone_corpus):
    """Spearman's rho is undefined where every label is equal: the CLI says so and prints no number for it."""
    import subprocess
    import sys

    labels = tone_corpus / "lab" / "labels.csv"
    rows = labels.read_text().splitlines()
    labels.write_text("\n".join([rows[0]] + [f"{row.split(',')[0]},5" for row in rows[1:]]) + "\n")
    out = subprocess.run([sys.executable, "-m", "search.cli", "baseline", "--data", str(tone_corpus), "--jobs", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert "devel rho=undefined (every label equal)" in line and "test rho=undefined (every label equal)" in line
    assert "0.000" not in line and "nan" not in line.lower()


def test_rho_is_formatted_in_one_place():
    import math

    from auttention.formatting import format_rho
    from auttention.metric import spearman

    assert math.isnan(spearman(np.array([3.0, 3.0, 3.0]), np.array([1.0, 2.0, 3.0])))  # nothing to rank
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0])) == 0.0  # ranks nothing: chance
    assert format_rho(spearman(np.array([3.0, 3.0]), np.array([1.0, 2.0]))) == "undefined (every label equal)"
    assert format_rho(None) == "n/a" and format_rho(0.12345) == "0.123" and format_rho(0.12345, 4) == "0.1235"


def test_functionals_are_kept_by_provenance(tone_corpus, tmp_path, log_lines):
    """Kept in a folder and reused for the same corpus and settings, with one line saying so; made again,
    saying why, for another corpus; bad audio under 'fail' leaves no folder; labels joined by file name."""
    from conftest import write_tone_corpus

    from auttention.audio import BadAudio
    from auttention.baseline import SETTINGS, functionals
    from auttention.corpus import fingerprint, read_corpus

    corpus = read_corpus(tone_corpus)
    folder = tmp_path / "kept"
    first = functionals(corpus, folder, jobs=1)
    assert (folder / SETTINGS).is_file() and not list(tmp_path.glob(".*"))
    assert sorted(first["file_name"]) == sorted(corpus["file_name"])
    assert first.attrs["made_from"]["corpus"] == fingerprint(corpus)
    relabelled = corpus.assign(label=10 - corpus["label"])
    again = functionals(relabelled, folder, jobs=1)
    assert f"functionals: reusing {folder}" in log_lines
    columns = [c for c in first.columns if c.startswith("functionals_")]
    assert np.array_equal(again.set_index("file_name").loc[first["file_name"], columns].to_numpy(),
                          first[columns].to_numpy())
    assert (again.set_index("file_name").loc[corpus["file_name"], "label"].to_numpy()
            == 10 - corpus["label"].to_numpy()).all()
    other = read_corpus(write_tone_corpus(tmp_path / "other", n_per_part=3))
    functionals(other, folder, jobs=1)
    assert f"functionals: {folder} was made from another corpus (or the audio files changed); computing them again" \
        in log_lines
    assert json.loads((folder / SETTINGS).read_text())["corpus"] == fingerprint(other)

    broken = write_tone_corpus(tmp_path / "broken", n_per_part=3)
    (broken / "wav" / "test_0002.wav").write_bytes(b"RIFF not audio")
    with pytest.raises(BadAudio, match="test_0002.wav"):
        functionals(read_corpus(broken), tmp_path / "never", jobs=1)
    assert not (tmp_path / "never").exists()
