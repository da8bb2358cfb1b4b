import numpy as np
import pytest

from auttention import spectrogram as spectro
from auttention.config import SpectrogramConfig
from auttention.corpus import read_corpus
from auttention.extraction import ProcessPool, extract

CFG = SpectrogramConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, frames=20)


def test_values_and_shape():
    t = np.arange(16000) / 16000
    spec = spectro.mel_spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32), CFG)
    assert spec.shape == (1 + 16000 // 256, 40)
    assert spec.max() == pytest.approx(1.0) and spec.min() >= -1.0
    # a 1 kHz tone: the loudest band is the one containing 1 kHz
    import librosa
    centres = librosa.mel_frequencies(n_mels=42, fmin=0, fmax=8000)[1:-1]
    assert abs(centres[spec.mean(axis=0).argmax()] - 1000) < 150


def test_power_not_complex_and_db_re_max():
    """Doubling the amplitude changes nothing (dB re max); the mel filterbank sees |X|^2."""
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(8000).astype(np.float32)
    a = spectro.mel_spectrogram(audio, CFG)
    b = spectro.mel_spectrogram(2 * audio, CFG)
    np.testing.assert_allclose(a, b, atol=1e-5)
    import librosa
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=512, hop_length=256,
                                                              n_mels=40, window="hamming", pad_mode="constant"),
                              ref=np.max, top_db=None)
    ref = np.maximum(ref, -80.0)
    np.testing.assert_allclose(a, (2 * (ref + 80) / 80 - 1).T, atol=1e-4)


def test_silence_and_tiny_clips_are_finite():
    silent = spectro.mel_spectrogram(np.zeros(4000, np.float32), CFG)
    assert np.all(silent == -1.0)
    tiny = spectro.mel_spectrogram(np.ones(10, np.float32) * 0.1, CFG)
    assert np.isfinite(tiny).all() and tiny.shape[1] == 40


def test_clip_below():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(8000) * np.linspace(0, 1, 8000) ** 4).astype(np.float32)
    cfg = SpectrogramConfig(n_fft=512, hop_length=256, n_mels=40, clip_below=-40.0)
    spec = spectro.mel_spectrogram(audio, cfg)
    assert spec.min() == -1.0 and (spec == -1.0).mean() > 0.05


def test_fix_length():
    spec = np.arange(10, dtype=np.float32)[:, None].repeat(3, axis=1)
    assert spectro.fix_length(spec, 4, "start")[:, 0].tolist() == [0, 1, 2, 3]
    assert spectro.fix_length(spec, 4, "center")[:, 0].tolist() == [3, 4, 5, 6]
    padded = spectro.fix_length(spec, 12, "start")
    assert padded.shape == (12, 3) and padded[-1, 0] == -1.0


def test_extract_train_min_ignores_test(tone_corpus, tmp_path):
    import soundfile as sf
    # make one test clip very short: the common length must still come from train
    sf.write(tone_corpus / "wav" / "test_0001.wav", np.zeros(800, np.float32), 16000)
    corpus = read_corpus(tone_corpus)
    cfg = SpectrogramConfig(n_fft=512, hop_length=256, n_mels=32, frames="train_min")
    out = extract(corpus, cfg, tmp_path / "spec", ProcessPool(2)).local
    spec = spectro.read(out)
    train_lengths = [1 + int(16000 * 0.6 * (1 + 0.1 * (i % 3))) // 256 for i in range(1, 7)]
    assert spec.x.shape == (18, min(train_lengths), 32)
    # rows: test, devel, train, each by file name (so that select() of any fit_on choice is a view)
    rank = {"test": 0, "devel": 1, "train": 2}
    assert list(spec.file_name) == sorted(corpus.file_name, key=lambda n: (rank[n.split("_")[0]], n))
    for parts in ("train", ("train", "devel"), "devel", "test"):
        assert np.shares_memory(spec.select(parts).x, spec.x)
    assert spec.config == cfg
    assert set(spec.select("train").partition) == {"train"}
    # the stored labels are the corpus labels
    lab = dict(zip(corpus.file_name, corpus.label))
    assert all(lab[f] == y for f, y in zip(spec.file_name, spec.label))
    assert not list(out.parent.glob(".*tmp"))
    # the length known from headers alone matches the decoded audio, at another rate too
    cfg22 = SpectrogramConfig(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=32, frames="train_min")
    for path in corpus.path:
        rows, lengths, total = spectro.clip_spectrogram(path, cfg22, 5)
        assert total == spectro.clip_frames(path, cfg22) and rows.shape == (1, 5, 32) and lengths[0] == 5


def test_train_max_pads_whole_clips_and_chunks_long_ones(tone_corpus, tmp_path):
    """Whole clips by default: rows as long as the longest *training* clip (a longer test clip does not
    decide it), padded with the floor and their real frames recorded; clips past max_seconds become whole
    chunks (the last flush with the clip's end), named in one warning line."""
    import soundfile as sf
    from conftest import captured_log

    rng = np.random.default_rng(0)
    sf.write(tone_corpus / "wav" / "test_0001.wav", 0.1 * rng.standard_normal(16000 * 3).astype(np.float32), 16000)
    corpus = read_corpus(tone_corpus)
    cfg = SpectrogramConfig(n_fft=512, hop_length=256, n_mels=16)
    assert cfg.frames == "train_max"
    spec = spectro.read(extract(corpus, cfg, tmp_path / "spec", ProcessPool(1)))
    train = corpus[corpus.partition == "train"]
    longest = max(spectro.clip_frames(p, cfg) for p in train.path)
    assert spec.x.shape[1] == longest and spec.clips == len(corpus)
    for name, length, row in zip(spec.file_name, spec.length, spec.x):
        path = corpus.set_index("file_name").path[name]
        if name != "test_0001.wav":
            assert length == spectro.clip_frames(path, cfg)
            assert np.all(row[length:] == -1.0)  # padding: the floor, masked by the models
    # a cap below the longest clip: long clips become chunks of the cap's length
    capped = SpectrogramConfig(n_fft=512, hop_length=256, n_mels=16, max_seconds=0.5, chunk_hop_seconds=0.25)
    with captured_log() as lines:
        spec = spectro.read(extract(corpus, capped, tmp_path / "capped", ProcessPool(1)))
    frames = spectro.cap_frames(capped)
    assert spec.x.shape[1] == frames and len(spec.x) > spec.clips == len(corpus)
    chunked = [ln for ln in lines if ln.startswith("warning:") and "cut into chunks" in ln]
    assert len(chunked) == 1  # one warning line names the long clips
    name = "test_0001.wav"
    mine = spec.file_name == name
    total = spectro.clip_frames(corpus.set_index("file_name").path[name], capped)
    starts = spectro.chunk_starts(total, frames, spectro.chunk_hop(capped, frames))
    assert mine.sum() == len(starts) and starts[-1] == total - frames and np.all(spec.length[mine] == frames)
    whole = spectro.mel_spectrogram(spectro_audio(corpus, name, capped), capped)
    for k, start in enumerate(starts):
        assert np.allclose(spec.x[mine][k], whole[start:start + frames], atol=1e-5)


def spectro_audio(corpus, name, cfg):
    from auttention.audio import load_audio

    return load_audio(corpus.set_index("file_name").path[name], cfg.sample_rate)


def test_same_values_whatever_the_thread_count(tmp_path):
    """The cache is bit-identical whether a worker has one BLAS thread or several (the real extraction,
    in a fresh process per thread count)."""
    import os
    import subprocess
    import sys

    from conftest import write_tone_corpus

    tone_corpus = write_tone_corpus(tmp_path / "long", n_per_part=2, seconds=4.0, pitch_noise=30.0)
    code = ("import sys, numpy as np; from auttention.corpus import read_corpus; "
            "from auttention.config import SpectrogramConfig; from auttention import spectrogram as sp; "
            "from auttention.extraction import ProcessPool, extract; "
            "c = read_corpus(sys.argv[1]); cfg = SpectrogramConfig(n_fft=1024, hop_length=256, n_mels=64, frames=200); "
            "np.save(sys.argv[2], sp.read(extract(c, cfg, sys.argv[2] + '.d', ProcessPool(1))).x)")
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", code, str(tone_corpus), str(tmp_path / f"{threads}.npy")],
                       env=env, check=True)
    assert np.array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))
