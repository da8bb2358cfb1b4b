"""The MFCC-functionals reference baseline: shape, names, units, validation."""

from __future__ import annotations

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

    from auttention.scoring import format_rho, spearman

    assert math.isnan(spearman(np.array([3.0, 3.0, 3.0]), np.array([1.0, 2.0, 3.0])))  # nothing to rank
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0])) == 0.0  # ranks nothing: chance
    assert format_rho(spearman(np.array([3.0, 3.0]), np.array([1.0, 2.0]))) == "undefined (every label equal)"
    assert format_rho(None) == "n/a" and format_rho(0.12345) == "0.123" and format_rho(0.12345, 4) == "0.1235"
