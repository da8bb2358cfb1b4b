"""The one extraction (auttention.extraction.extract) with the process-pool executor: reuse of a finished
folder or one line saying why it is made again, the fingerprint of the corpus as given, the policy on bad
audio (also for a reused folder). The Ray Data executor: tests/test_extract.py."""

from __future__ import annotations

import os

import pytest
from conftest import write_tone_corpus

from auttention import spectrogram as spectro
from auttention.audio import BadAudio
from auttention.config import SpectrogramConfig
from auttention.corpus import BadAudioPolicy, fingerprint, read_corpus
from auttention.extraction import ProcessPool, extract, screen

CFG = SpectrogramConfig(n_fft=256, hop_length=128, n_mels=16, frames=20)


@pytest.fixture
def corpus(tmp_path):
    return read_corpus(write_tone_corpus(tmp_path / "corpus", n_per_part=3, seconds=0.3))


def test_reuse_or_one_line_saying_why_not(corpus, tmp_path, log_lines):
    out = tmp_path / "spec"
    lines = log_lines
    folder = extract(corpus, CFG, out, ProcessPool(1))
    assert lines[0] == f"spectrograms: extracting 9 clips in this process -> {out}"
    assert lines[1].startswith("spectrograms: done in ") and len(lines) == 2
    assert spectro.made_from(folder)["corpus"] == fingerprint(corpus)
    written = sorted(p.name for p in (out / spectro.PARQUET).iterdir())

    lines.clear()
    extract(corpus, CFG, out, ProcessPool(2))  # whichever the executor
    assert lines == [f"spectrograms: reusing {out}"]
    assert sorted(p.name for p in (out / spectro.PARQUET).iterdir()) == written

    lines.clear()
    other = SpectrogramConfig(n_fft=256, hop_length=128, n_mels=16, frames=24)
    assert spectro.read(extract(corpus, other, out, ProcessPool(1))).x.shape[1] == 24
    assert lines[0] == f"spectrograms: {out} was made with other spectrogram settings; extracting them again"

    path = corpus["path"].iloc[0]
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    lines.clear()
    extract(corpus, other, out, ProcessPool(1))
    assert lines[0] == (f"spectrograms: {out} was made from another corpus (or the audio files changed); "
                        f"extracting them again")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".spec")]  # no temporary folder left


def test_fingerprint_of_the_corpus_as_given_and_skipped_clips_replayed(corpus, tmp_path, log_lines):
    """A clip skipped at the header check leaves the fingerprint that of the whole corpus (the one every
    artefact's provenance shows); a reused folder's skipped clips meet the policy again: 'fail' fails."""
    bad = corpus.set_index("file_name").loc["devel_0002.wav", "path"]
    open(bad, "wb").close()  # 0 bytes: found by the header check
    screened = screen(corpus, BadAudioPolicy("skip"))
    warned = list(log_lines)
    assert screened.fingerprint == fingerprint(corpus) and list(screened.skipped) == ["devel_0002.wav"]
    assert len(screened.clips) == 8 and len(warned) == 1
    folder = extract(screened, CFG, tmp_path / "spec", ProcessPool(1))
    meta = spectro.made_from(folder)
    assert meta["corpus"] == fingerprint(corpus) and list(meta["skipped"]) == ["devel_0002.wav"]
    assert "devel_0002.wav" not in set(spectro.read(folder).file_name)

    lines = log_lines
    lines.clear()
    kept = extract(corpus, CFG, tmp_path / "spec", ProcessPool(1), BadAudioPolicy("skip"))
    assert kept == folder and lines[0] == f"spectrograms: reusing {folder}"
    assert lines[1].startswith(f"warning: skipping {bad}: the file is empty") and len(lines) == 2
    with pytest.raises(BadAudio, match="devel_0002.wav: the file is empty"):
        extract(corpus, CFG, tmp_path / "spec", ProcessPool(1), BadAudioPolicy("fail"))
