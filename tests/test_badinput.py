"""Bad input: every case ends in one clear line (file or key, what is wrong, what to do), a non-zero
exit where the run cannot go on, no traceback and no half-written output; `--on-bad-audio skip`
leaves bad clips out, one warning line each, with labels still keyed by file name.

docs/RELIABILITY.md lists every case with the message a user sees and the test that checks it.
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner
from conftest import TINY_SPACE, captured_log, write_tone_corpus

from auttention import spectrogram as spectro
from auttention.audio import BadAudio
from auttention.config import SpectrogramConfig
from auttention.corpus import BadAudioPolicy, fingerprint, read_corpus
from auttention.extraction import ProcessPool, extract
from search.cli import main

SPEC = ["--n-fft", "256", "--hop-length", "128", "--n-mels", "16", "--frames", "20", "--jobs", "1"]


def cli(*args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the command line, in process; an escaping exception fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def one_error_line(code: int, out: str, err: str, *expected: str) -> str:
    """Assert exit 2 and exactly one line on stderr, `error: ...`, containing every `expected`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(e in lines[0] for e in expected), (expected, lines[0])
    assert "Traceback" not in out + err
    return lines[0]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """9 short tone clips (3 per partition) in ComParE layout."""
    return write_tone_corpus(tmp_path / "c", n_per_part=3, seconds=0.3)


def labels_of(root: Path) -> dict[str, float]:
    table = pd.read_csv(root / "lab" / "labels.csv")
    return dict(zip(table["file_name"], table["label"].astype(float)))


# ---------------------------------------------------------------- audio

def _wav_bytes(tmp: Path, audio: np.ndarray, **kw) -> bytes:
    sf.write(tmp, audio, 16000, **kw)
    return tmp.read_bytes()


def _truncated_wav(path: Path) -> None:
    data = _wav_bytes(path, np.full(4800, 0.1, np.float32), subtype="PCM_16")
    path.write_bytes(data[: len(data) // 2])


def _truncated_flac(path: Path) -> None:
    rng = np.random.default_rng(0)
    data = _wav_bytes(path.with_suffix(".flac"), 0.3 * rng.standard_normal(16000).astype(np.float32), format="FLAC")
    path.with_suffix(".flac").unlink()
    path.write_bytes(data[: len(data) // 10])  # within the first block; libsndfile reads by content, not name


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _zero_samples(path: Path) -> None:
    sf.write(path, np.zeros(0, np.float32), 16000)


def _text(path: Path) -> None:
    path.write_text("file_name,label\nthis is a CSV, not audio\n" * 20)


def _m4a(path: Path) -> None:
    # the start of an MP4/M4A (AAC) file: a container libsndfile does not read
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isomiso2" + bytes(2000))


def _unknown_codec(path: Path) -> None:
    data = bytearray(_wav_bytes(path, np.full(1600, 0.1, np.float32), subtype="PCM_16"))
    at = data.find(b"fmt ") + 8
    data[at:at + 2] = (0x1234).to_bytes(2, "little")  # a WAVE format tag nobody decodes
    path.write_bytes(bytes(data))


def _nan_samples(path: Path) -> None:
    audio = np.full(4800, 0.1, np.float32)
    audio[1600], audio[3000] = np.nan, np.inf
    sf.write(path, audio, 16000, subtype="FLOAT")


# (writer, what the reason says); the first five are found by the header check, the last two by decoding
BAD_AUDIO = {
    "truncated-wav": (_truncated_wav, "truncated (the header announces 9600 bytes of audio, the file holds"),
    "zero-bytes": (_zero_bytes, "the file is empty (0 bytes)"),
    "zero-samples": (_zero_samples, "the audio is empty (0 samples)"),
    "not-audio": (_text, "cannot decode audio (format not recognised; convert it to WAV, FLAC or OGG)"),
    "unsupported-container": (_m4a, "cannot decode audio (format not recognised; convert it to WAV, FLAC or OGG)"),
    "unsupported-codec": (_unknown_codec, "cannot decode audio (Error in WAV/W64/RF64 file. Malformed 'fmt ' chunk"),
    "truncated-flac": (_truncated_flac, "cannot decode audio (flac decoder lost sync; the file is damaged, truncated"),
    "nan-samples": (_nan_samples, "the audio contains NaN or infinite samples (first at 0.100 s)"),
}


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_fails_in_one_line_and_writes_nothing(corpus, tmp_path, case):
    write, reason = BAD_AUDIO[case]
    bad = corpus / "wav" / "devel_0002.wav"
    write(bad)
    out = tmp_path / "spec"
    line = one_error_line(*cli("extract", "--data", corpus, "--out", out, *SPEC), f"error: {bad}: {reason}",
                          "; fix or remove the file, or pass --on-bad-audio skip to leave it out")
    assert "more bad clip" not in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".spec")]


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_is_skipped_with_one_warning(corpus, tmp_path, case):
    write, reason = BAD_AUDIO[case]
    bad = corpus / "wav" / "train_0002.wav"
    write(bad)
    out = tmp_path / "spec"
    code, stdout, stderr = cli("extract", "--data", corpus, "--out", out, *SPEC, "--on-bad-audio", "skip")
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: skipping {bad}: {reason}"), stderr
    assert "(skipped 1 of 9 clips with bad audio)" in stdout
    spec = spectro.read(out)
    assert len(spec.file_name) == 8 and "train_0002.wav" not in set(spec.file_name)
    assert list(spec.skipped) == ["train_0002.wav"] and spec.skipped["train_0002.wav"].startswith(reason)
    assert spec.corpus == fingerprint(read_corpus(corpus))  # the corpus as given, bad clip included
    # no label moved: every remaining clip carries its own label
    truth = labels_of(corpus)
    assert all(truth[name] == label for name, label in zip(spec.file_name, spec.label))
    assert np.isfinite(spec.x).all()


def test_fail_counts_the_other_bad_clips(corpus, tmp_path):
    _text(corpus / "wav" / "devel_0001.wav")
    _zero_bytes(corpus / "wav" / "test_0003.wav")
    one_error_line(*cli("extract", "--data", corpus, "--out", tmp_path / "spec", *SPEC),
                   f"{corpus / 'wav' / 'devel_0001.wav'}: cannot decode audio",
                   "(and 1 more bad clip(s): test_0003.wav)")


@pytest.mark.parametrize("where", ["header", "decoding"])
def test_skip_that_empties_a_partition_is_an_error(corpus, tmp_path, where):
    for i in (1, 2, 3):
        (_text if where == "header" else _nan_samples)(corpus / "wav" / f"devel_000{i}.wav")
    code, out, err = cli("extract", "--data", corpus, "--out", tmp_path / "spec", *SPEC, "--on-bad-audio", "skip")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith("error: ") and len(lines) == 4  # 3 warnings, then the error
    assert "every devel clip has bad audio (3 skipped;" in lines[-1]
    assert "the devel partition cannot be empty, fix the files" in lines[-1]
    assert not (tmp_path / "spec").exists()


def test_silent_and_tiny_clips_are_finite(corpus, tmp_path):
    """Digital silence maps to the floor (-1), not NaN/-inf; a clip shorter than one window is zero-padded."""
    sf.write(corpus / "wav" / "train_0001.wav", np.zeros(4800, np.int16), 16000, subtype="PCM_16")
    sf.write(corpus / "wav" / "test_0001.wav", np.full(100, 0.2, np.float32), 16000)  # 100 samples < n_fft 256
    out = tmp_path / "spec"
    code, stdout, stderr = cli("extract", "--data", corpus, "--out", out, *SPEC[:-2], "--frames", "train_min",
                               "--jobs", "2")
    assert code == 0 and not stderr.strip(), stderr
    spec = spectro.read(out)
    assert np.isfinite(spec.x).all() and spec.x.min() >= -1 and spec.x.max() <= 1
    rows = dict(zip(spec.file_name, spec.x))
    assert (rows["train_0001.wav"] == -1).all()
    tiny = rows["test_0001.wav"]
    assert tiny[0].max() == pytest.approx(1.0) and (tiny[4:] == -1).all()  # 1 + 256 // 128 = 3 frames, then padding


def _long_file(path: Path, minutes: int, sr: int) -> tuple[int, int]:
    """Quiet noise with a loud 1 kHz tone for 2 s around the middle, written a minute at a time."""
    n, burst = minutes * 60 * sr, (minutes * 60 * sr // 2 - sr, minutes * 60 * sr // 2 + sr)
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        for start in range(0, n, 60 * sr):
            idx = np.arange(start, min(start + 60 * sr, n))
            chunk = 0.01 * rng.standard_normal(len(idx))
            inside = (idx >= burst[0]) & (idx < burst[1])
            chunk[inside] += 0.5 * np.sin(2 * np.pi * 1000 * idx[inside] / sr)
            f.write(chunk.astype(np.float32))
    return n, burst[0]


def test_twenty_minute_clip_in_bounded_memory(tmp_path):
    """A 20-minute clip (19.2 M samples: 154 MB as float64, 77 MB as float32) is streamed: the peak
    allocation stays under 20 MB, and the kept (centre) frames equal those of the whole clip."""
    sr, hop = 16000, 256
    path = tmp_path / "long.wav"
    n, _ = _long_file(path, 20, sr)
    cfg = SpectrogramConfig(n_fft=512, hop_length=hop, n_mels=40, frames="train_min", crop="center")
    spectro.clip_spectrogram(str(path), cfg, 5)  # warm up: imports and the mel basis are not the clip's
    tracemalloc.start()
    try:
        rows, lengths, count = spectro.clip_spectrogram(str(path), cfg, 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    spec = rows[0]
    assert rows.shape == (1, 100, 40) and lengths[0] == 100
    assert count == spectro.n_frames(n, cfg) == 75001
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    # reference: the whole-clip computation on an hop-aligned excerpt holding the kept frames and the
    # loud burst (so the same maximum); its frames away from the excerpt's edges are the clip's frames
    start = (count - 100) // 2
    first = start - 200
    excerpt, _ = sf.read(path, start=first * hop, stop=(start + 300) * hop, dtype="float32")
    ref = spectro.mel_spectrogram(excerpt, cfg)[200:300]
    np.testing.assert_allclose(spec, ref, atol=1e-5)
    assert spec.max() == pytest.approx(1.0)


# ---------------------------------------------------------------- labels

def _append(root: Path, line: str) -> None:
    labels = root / "lab" / "labels.csv"
    labels.write_text(labels.read_text() + line + "\n")


def _drop_rows(root: Path, prefix: str) -> None:
    labels = root / "lab" / "labels.csv"
    labels.write_text("".join(l for l in labels.read_text().splitlines(True) if not l.startswith(prefix)))


@pytest.mark.parametrize("edit, expected", [
    (lambda r: _append(r, "train_0099.wav,3"), ["labels.csv, line 11: audio file", "train_0099.wav not found; "
                                                 "add it or remove its row"]),
    (lambda r: _append(r, "train_0001.wav,4"), ["labels.csv, line 11: file name 'train_0001.wav' is listed more "
                                                 "than once (also on line 2); keep one row per clip"]),
    (lambda r: _append(r, "train_0004.wav,sleepy"), ["labels.csv, line 11: label 'sleepy' is not a number "
                                                      "(use '?' for unknown)"]),
    (lambda r: _append(r, "train_0004.wav,inf"), ["line 11: label 'inf' is not finite (use '?' for unknown)"]),
    (lambda r: _append(r, "train_0004.wav,?"), ["labels.csv: train clip train_0004.wav has no label (1 such); "
                                                 "train and devel clips need numeric labels"]),
    (lambda r: _append(r, "valid_0001.wav,3"), ["line 11: file name 'valid_0001.wav' does not start with train_, "
                                                 "devel_ or test_, so its partition is unknown"]),
    (lambda r: _drop_rows(r, "devel_"), ["labels.csv: the devel partition is empty; the SVR needs labelled "
                                          "train and devel clips"]),
    (lambda r: _append(r, "../train_0001.wav,3"), ["line 11: file name '../train_0001.wav' points outside the "
                                                    "corpus folder; use a path relative to"]),
    (lambda r: _append(r, "/etc/hostname,3"), ["line 11: file name '/etc/hostname' points outside the corpus"]),
], ids=["missing-wav", "duplicate", "non-numeric", "non-finite", "unknown-train-label",
        "unknown-partition", "empty-partition", "dotdot", "absolute"])
def test_bad_labels_are_one_line(corpus, tmp_path, edit, expected):
    for name in ("train_0004.wav", "valid_0001.wav"):
        shutil.copy(corpus / "wav" / "train_0001.wav", corpus / "wav" / name)
    edit(corpus)
    one_error_line(*cli("extract", "--data", corpus, "--out", tmp_path / "spec", *SPEC), *expected)
    assert not (tmp_path / "spec").exists()


def test_symlink_out_of_the_corpus(corpus, tmp_path):
    outside = tmp_path / "elsewhere.wav"
    shutil.copy(corpus / "wav" / "train_0001.wav", outside)
    (corpus / "wav" / "train_0004.wav").symlink_to(outside)
    _append(corpus, "train_0004.wav,3")
    one_error_line(*cli("extract", "--data", corpus, "--out", tmp_path / "spec", *SPEC),
                   "line 11: 'train_0004.wav' resolves outside the corpus folder (a symlink out?); copy the file into")


@pytest.mark.parametrize("pair", [False, True], ids=["to-itself", "two-links"])
def test_symlink_loop_in_the_corpus(corpus, tmp_path, pair):
    wav = corpus / "wav" / "train_0002.wav"
    wav.unlink()
    if pair:  # two links pointing at each other
        other = corpus / "wav" / "loop.wav"
        other.symlink_to(wav.name)
        wav.symlink_to(other.name)
    else:
        wav.symlink_to(wav.name)
    one_error_line(*cli("extract", "--data", corpus, "--out", tmp_path / "spec", *SPEC),
                   "labels.csv, line 3: ", f"{wav}: a symlink loop; replace it with the audio file or remove it")
    assert not (tmp_path / "spec").exists()


def test_manifest_rows(corpus, tmp_path):
    truth = labels_of(corpus)
    rows = [f"wav/{n},{truth[n]:g},{n.split('_')[0]}" for n in sorted(truth)]
    manifest = corpus / "manifest.csv"
    manifest.write_text("\n".join(["file,label,partition", *rows, "./wav/train_0001.wav,5,test"]) + "\n")
    one_error_line(*cli("extract", "--data", manifest, "--out", tmp_path / "spec", *SPEC),
                   "manifest.csv, line 11: audio file", "train_0001.wav' is listed more than once (also on line 8)")
    manifest.write_text("\n".join(["file,label,partition", *rows, "wav/train_0001.wav,5,valid"]) + "\n")
    one_error_line(*cli("extract", "--data", manifest, "--out", tmp_path / "spec", *SPEC),
                   "manifest.csv, line 11: partition 'valid' must be one of train, devel, test")


def test_wav_without_label_row_is_left_out_with_a_warning(corpus, tmp_path):
    for name in ("train_0099.wav", "test_0042.wav"):
        shutil.copy(corpus / "wav" / "train_0001.wav", corpus / "wav" / name)
    code, out, err = cli("extract", "--data", corpus, "--out", tmp_path / "spec", *SPEC)
    assert code == 0
    assert err.strip() == (f"warning: {corpus / 'wav'}: 2 file(s) have no row in {corpus / 'lab' / 'labels.csv'} "
                           f"and are left out: test_0042.wav, train_0099.wav")
    assert len(spectro.read(tmp_path / "spec").file_name) == 9


def test_label_outside_the_scoring_range(corpus):
    """Predictions are clipped to scoring.label_min..label_max: a label outside it is refused up front."""
    labels = corpus / "lab" / "labels.csv"
    table = pd.read_csv(labels)
    table.loc[table.file_name == "train_0002.wav", "label"] = 12
    table.to_csv(labels, index=False)
    one_error_line(*cli("baseline", "--data", corpus),
                   "labels.csv: train_0002.wav has label 12, outside scoring.label_min..label_max = 1..9 "
                   "(1 such label(s)); predictions are clipped to that range, so set scoring.label_min and label_max")
    config = corpus / "scoring.yaml"
    config.write_text(yaml.safe_dump({"scoring": {"label_min": 0, "label_max": 20}}))
    code, out, err = cli("baseline", "--data", corpus, "--config", config, "--jobs", "1")
    assert code == 0 and "devel rho=" in out, err



def test_speaker_folds_without_speakers_is_one_line_before_any_work(corpus, tmp_path):
    """scoring.validation speaker_folds needs each clip's speaker: without lab/speakers.csv, `pipeline` and
    `run` refuse in one line before extracting or starting Ray, and leave no output behind."""
    config = tmp_path / "folds.yaml"
    config.write_text(yaml.safe_dump({"scoring": {"validation": "speaker_folds", "folds": 2}}))
    out = tmp_path / "out"
    one_error_line(*cli("pipeline", "--data", corpus, "--config", config, "--out", out),
                   "scoring.validation: speaker_folds needs every clip's speaker (lab/speakers.csv")
    assert not out.exists()
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump({**TINY_SPACE, "scoring": {**TINY_SPACE.get("scoring", {}),
                                                               "validation": "speaker_folds", "folds": 2}}))
    code, stdout, err = cli("run", space, "--data", corpus, "--runs", tmp_path / "runs", "--cache",
                            tmp_path / "cache", "--no-dashboard")
    one_error_line(code, stdout, err, "speaker_folds needs every clip's speaker")
    assert "ray" not in stdout.lower()


def test_run_refuses_devel_labels_all_equal(corpus, tmp_path):
    """A search ranks trials by their devel Spearman's rho, undefined when every devel label is equal: refused
    before Ray starts; `baseline` still runs and says 'undefined'."""
    labels = corpus / "lab" / "labels.csv"
    table = pd.read_csv(labels)
    table.loc[table.file_name.str.startswith("devel_"), "label"] = 5
    table.to_csv(labels, index=False)
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    code, out, err = cli("run", space, "--data", corpus, "--runs", tmp_path / "runs", "--cache", tmp_path / "cache",
                         "--no-dashboard")
    one_error_line(code, out, err, "labels.csv: every devel label is 5: Spearman's rho is undefined, nothing to rank")
    assert "ray" not in out.lower()
    assert not list((tmp_path / "cache").rglob("*.parquet"))
    code, out, err = cli("baseline", "--data", corpus, "--jobs", "1")
    assert code == 0 and "devel rho=undefined" in out, err

# ---------------------------------------------------------------- policy on the other commands

def test_baseline_obeys_the_policy(corpus):
    _nan_samples(corpus / "wav" / "test_0002.wav")
    one_error_line(*cli("baseline", "--data", corpus, "--jobs", "1"),
                   f"{corpus / 'wav' / 'test_0002.wav'}: the audio contains NaN or infinite samples")
    code, out, err = cli("baseline", "--data", corpus, "--jobs", "1", "--on-bad-audio", "skip")
    assert code == 0 and "devel rho=" in out
    assert err.splitlines() == [f"warning: skipping {corpus / 'wav' / 'test_0002.wav'}: the audio contains NaN or "
                                f"infinite samples (first at 0.100 s)",
                                "functionals: skipped 1 of 9 clips with bad audio"]


def test_pipeline_reuse_obeys_the_policy(corpus, tmp_path):
    """Spectrograms extracted with skip are not reused silently by a run that asks to fail."""
    from auttention import pipeline as pipe
    from auttention.config import pipeline_config

    _nan_samples(corpus / "wav" / "devel_0003.wav")
    cfg = pipeline_config({"spectrogram": {"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 20}})
    out = tmp_path / "p"
    table = read_corpus(corpus)
    with pytest.raises(BadAudio, match="devel_0003.wav: the audio contains NaN"):
        pipe.run(table, cfg, out, jobs=1, policy=BadAudioPolicy("fail"))
    assert not out.exists()  # nothing written, not even the config or an empty folder
    extract(table, cfg.spectrogram, out / "spectrograms", ProcessPool(1), BadAudioPolicy("skip"))
    with pytest.raises(BadAudio, match="devel_0003.wav: the audio contains NaN"):
        pipe.run(table, cfg, out, jobs=1, policy=BadAudioPolicy("fail"))
    assert not (out / "config.yaml").exists()


def test_ray_extraction_obeys_the_policy(tmp_path):
    """The Ray path: decode errors in Ray tasks are skipped (recorded in the cache) or fail cleanly."""
    import ray

    from search.extract import ensure_spectrograms

    root = write_tone_corpus(tmp_path / "c", n_per_part=3, seconds=0.3)
    _nan_samples(root / "wav" / "train_0003.wav")
    table = read_corpus(root)
    settings = [{"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 20}]
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        with pytest.raises(BadAudio, match="train_0003.wav: the audio contains NaN"):
            ensure_spectrograms(table, settings, tmp_path / "cache",
                                policy=BadAudioPolicy("fail"))
        assert not list((tmp_path / "cache").rglob("settings.json"))
        with captured_log() as lines:
            folders = ensure_spectrograms(table, settings, tmp_path / "cache", policy=BadAudioPolicy("skip"))
        spec = spectro.read(next(iter(folders.values())))
        assert "train_0003.wav" not in set(spec.file_name) and len(spec.file_name) == 8
        assert list(spec.skipped) == ["train_0003.wav"] and spec.corpus == fingerprint(table)
        assert any(line.startswith(f"warning: skipping {root / 'wav' / 'train_0003.wav'}: the audio contains NaN")
                   for line in lines)
        truth = labels_of(root)
        assert all(truth[n] == y for n, y in zip(spec.file_name, spec.label))
        # the cached folder is reused, and a run that asks to fail still fails on the recorded clip
        with pytest.raises(BadAudio, match="train_0003.wav"):
            ensure_spectrograms(table, settings, tmp_path / "cache",
                                policy=BadAudioPolicy("fail"))
    finally:
        ray.shutdown()


def test_run_stops_on_bad_audio_before_starting_ray(tmp_path):
    root = write_tone_corpus(tmp_path / "c", n_per_part=3, seconds=0.3)
    _zero_bytes(root / "wav" / "devel_0001.wav")
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    code, out, err = cli("run", space, "--data", root, "--runs", tmp_path / "runs", "--cache", tmp_path / "cache",
                         "--no-dashboard")
    one_error_line(code, out, err, f"{root / 'wav' / 'devel_0001.wav'}: the file is empty (0 bytes)")
    assert "ray" not in out.lower()
    assert not list((tmp_path / "cache").rglob("*.parquet"))


# ---------------------------------------------------------------- YAML and flags

@pytest.mark.parametrize("args, expected", [
    (["extract", "--data", ".", "--out", "x", "--n-ftt", "512"],
     "error: No such option '--n-ftt'. Did you mean '--n-fft'? (see `main extract --help`)"),
    (["extract", "--data", ".", "--out", "x", "--on-bad-audio", "ignore"],
     "error: Invalid value for '--on-bad-audio': 'ignore' is not one of 'fail', 'skip'."),
    (["extract", "--data", ".", "--out", "x", "--jobs", "0"], "error: Invalid value for '--jobs': 0 is not in the range x>=1."),
    (["baseline", "--data", ".", "--sample-rate", "0"], "error: Invalid value for '--sample-rate'"),
    (["extract", "--out", "x"], "error: Missing option '--data'."),
    (["frobnicate"], "error: No such command 'frobnicate'."),
], ids=["unknown-flag", "bad-choice", "jobs-0", "sample-rate-0", "missing-flag", "unknown-command"])
def test_bad_flags_are_one_line(args, expected):
    one_error_line(*cli(*args), expected)


@pytest.mark.parametrize("space, flags, expected", [
    ("experiment: {name: x\n", [], "tiny.yaml: invalid YAML at line"),
    (yaml.safe_dump({**TINY_SPACE, "resources": {"gpu": 1.5}}), [], "tiny.yaml: resources.gpu must be <= 1"),
    (yaml.safe_dump(TINY_SPACE), ["--time-budget", "0"],
     "command line: experiment.time_budget must be a positive duration, got '0'; omit it for no budget"),
    (yaml.safe_dump(TINY_SPACE), ["--num-samples", "0"], "command line: experiment.num_samples must be >= 1"),
], ids=["yaml-syntax", "gpu-1.5", "time-budget-0", "num-samples-0"])
def test_run_refuses_bad_space_and_flags_in_one_line(tmp_path, space, flags, expected):
    path = tmp_path / "tiny.yaml"
    path.write_text(space)
    one_error_line(*cli("run", path, "--runs", tmp_path / "runs", "--cache", tmp_path / "cache", *flags), expected)
    assert not (tmp_path / "runs").exists()


def test_labels_saved_by_a_spreadsheet_through_the_cli(corpus):
    """labels.csv as Excel's "Unicode text" (UTF-16 with a byte-order mark, tab-separated) is read as it is;
    UTF-16 without a byte-order mark is one line saying how to save it."""
    labels = corpus / "lab" / "labels.csv"
    text = labels.read_text()
    labels.write_bytes(b"\xff\xfe" + text.replace(",", "\t").replace("\n", "\r\n").encode("utf-16-le"))
    code, out, err = cli("baseline", "--data", corpus, "--jobs", "1")
    assert code == 0 and "devel rho=" in out, err
    labels.write_bytes(text.encode("utf-16-le"))
    one_error_line(*cli("baseline", "--data", corpus, "--jobs", "1"), f"{labels}", "UTF-16 without a byte-order mark",
                   "CSV UTF-8")


# ---------------------------------------------------------------- numbers in the CSVs a command reads

def test_non_finite_prediction_is_one_line(corpus, tmp_path):
    """`score` with a prediction nan, inf or empty: one line naming the file, the line and the clip."""
    labels = corpus / "lab" / "labels.csv"
    names = [name for name in labels_of(corpus) if name.startswith("devel_")]
    for bad in ("nan", "inf", "", "-Infinity"):
        preds = tmp_path / "predictions.csv"
        preds.write_text(f"file_name,prediction\n{names[0]},3\n{names[1]},{bad}\n{names[2]},5\n")
        one_error_line(*cli("score", "--predictions", preds, "--labels", labels),
                       f"{preds}, line 3 ({names[1]}): prediction is ", "not a finite number; fix or remove that row")


def test_non_finite_feature_is_one_line(corpus, tmp_path):
    """`evaluate` on a feature CSV with an infinite value: one line naming the file, line, clip and column;
    no predictions written."""
    from auttention.features import feature_frame

    labels = labels_of(corpus)
    names = sorted(labels)
    frame = feature_frame(names, [name.split("_")[0] for name in names], [labels[n] for n in names],
                          np.arange(2 * len(names), dtype=float).reshape(-1, 2), "x")
    frame.loc[4, "x_0001"] = np.inf
    features = tmp_path / "features.csv"
    frame.to_csv(features, index=False)
    out = tmp_path / "out" / "predictions.csv"
    one_error_line(*cli("evaluate", "--features", features, "--out", out),
                   f"{features}, line 6 ({names[4]}): x_0001 is inf, not a finite number")
    assert not out.exists()


def test_unreachable_tracking_server_is_one_line_before_ray(tmp_path):
    """`run --mlflow` at an address nothing listens on: one line, before Ray starts or a run folder is made."""
    from conftest import free_port

    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    uri = f"http://127.0.0.1:{free_port()}"
    code, out, err = cli("run", space, "--runs", tmp_path / "runs", "--cache", tmp_path / "cache", "--mlflow", uri)
    one_error_line(code, out, err, f"--mlflow {uri}: no MLflow tracking server answers there", "correct the address")
    assert "ray" not in out.lower() and not (tmp_path / "runs").exists()
