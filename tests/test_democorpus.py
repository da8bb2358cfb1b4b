"""The demo corpus: layout, labels, speaker-disjoint partitions, determinism, cue direction, refusal."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from auttention import democorpus
from auttention.democorpus import build_demo_corpus
from auttention.errors import UserError

SMALL = dict(n_clips=48, n_speakers=24)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return build_demo_corpus(tmp_path_factory.mktemp("small") / "corpus", seed=0, jobs=1, **SMALL)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    return build_demo_corpus(tmp_path_factory.mktemp("medium") / "corpus", n_clips=144, n_speakers=24,
                             seed=3, jobs=2)


def test_layout_counts_and_audio(small):
    wavs = sorted(p.name for p in (small / "wav").iterdir())
    assert len(wavs) == SMALL["n_clips"]
    assert (small / "README.txt").read_text().strip()
    labels = _rows(small / "lab" / "labels.csv")
    assert list(labels[0]) == ["file_name", "label"]
    assert sorted(r["file_name"] for r in labels) == wavs
    for part in ("train", "devel", "test"):
        numbered = sorted(w for w in wavs if w.startswith(part + "_"))
        assert numbered == [f"{part}_{i:04d}.wav" for i in range(1, len(numbered) + 1)]
    for row in labels:
        assert row["label"].isdigit() and 1 <= int(row["label"]) <= 9  # test labels known too
        info = soundfile.info(small / "wav" / row["file_name"])
        assert (info.channels, info.samplerate, info.subtype, info.format) == (1, 16000, "PCM_16", "WAV")
        assert 2.0 <= info.frames / info.samplerate <= 5.0
    audio, _ = soundfile.read(small / "wav" / labels[0]["file_name"])
    assert 0.01 < np.sqrt(np.mean(audio ** 2)) < 0.5  # speech at a sane level, not silence or clipping


def test_partitions_are_speaker_disjoint(small):
    rows = _rows(small / "lab" / "speakers.csv")
    assert list(rows[0]) == ["file_name", "speaker", "partition"]
    by_speaker: dict[str, set[str]] = {}
    for row in rows:
        assert row["file_name"].startswith(row["partition"] + "_")
        by_speaker.setdefault(row["speaker"], set()).add(row["partition"])
    assert len(by_speaker) >= 24
    assert all(len(parts) == 1 for parts in by_speaker.values())
    assert {p for parts in by_speaker.values() for p in parts} == {"train", "devel", "test"}
    assert {r["file_name"] for r in rows} == {r["file_name"] for r in _rows(small / "lab" / "labels.csv")}


def test_same_seed_same_bytes_whatever_jobs_other_seed_differs(small, tmp_path):
    again = build_demo_corpus(tmp_path / "again", seed=0, jobs=2, **SMALL)
    assert _files(again) == _files(small)
    other = _files(build_demo_corpus(tmp_path / "other", seed=1, jobs=1, **SMALL))
    mine = _files(small)
    assert other.keys() == mine.keys()
    assert all(other[f] != mine[f] for f in mine if f.startswith("wav/"))
    assert other["lab/labels.csv"] != mine["lab/labels.csv"]


def test_sleepier_clips_are_slower_and_softer(medium):
    from scipy.stats import spearmanr

    labels, durations, levels = [], [], []
    for row in _rows(medium / "lab" / "labels.csv"):
        audio, rate = soundfile.read(medium / "wav" / row["file_name"])
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        rms = np.sqrt(np.mean(frames ** 2, axis=1))
        labels.append(int(row["label"]))
        durations.append(len(audio) / rate)
        levels.append(20 * np.log10(np.percentile(rms, 90)))
    assert np.std(labels) > 1.0  # the labels span the scale
    assert spearmanr(labels, durations).statistic > 0.2  # slower articulation, more and longer pauses
    assert spearmanr(labels, levels).statistic < -0.1  # softer


def test_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists; remove it or choose another folder"):
        build_demo_corpus(out, n_clips=3, n_speakers=3, jobs=1)
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_an_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(democorpus, "_write_tables", fail)
    with pytest.raises(KeyboardInterrupt):
        build_demo_corpus(tmp_path / "corpus", n_clips=3, n_speakers=3, jobs=1)
    assert list(tmp_path.iterdir()) == []
