"""Shared fixtures: tiny real corpora on disk."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_tone_corpus(root: Path, n_per_part: int = 6, sample_rate: int = 16000, seconds: float = 0.6,
                      test_labels_known: bool = True, pitch_noise: float = 0.0) -> Path:
    """A ComParE-layout corpus of harmonic tones whose pitch falls with the label (1..9).

    pitch_noise (Hz, standard deviation) blurs the cue so that scores differ between models.
    """
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    (root / "lab").mkdir()
    rows = ["file_name,label"]
    for part in ("train", "devel", "test"):
        for i in range(1, n_per_part + 1):
            label = int(rng.integers(1, 10))
            n = int(sample_rate * seconds * (1 + 0.1 * (i % 3)))
            t = np.arange(n) / sample_rate
            f0 = 300 - 20 * label + pitch_noise * rng.standard_normal()
            audio = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
            audio = 0.3 * audio / np.abs(audio).max() + 0.01 * rng.standard_normal(n)
            name = f"{part}_{i:04d}.wav"
            sf.write(root / "wav" / name, audio.astype(np.float32), sample_rate, subtype="PCM_16")
            shown = str(label) if (part != "test" or test_labels_known) else "?"
            rows.append(f"{name},{shown}")
    (root / "lab" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tone_corpus(tmp_path: Path) -> Path:
    """A tiny ComParE-layout corpus (18 clips) with known test labels."""
    return write_tone_corpus(tmp_path / "corpus")


TINY_SPACE = {
    "experiment": {"name": "tiny", "num_samples": 4, "max_concurrent": 2, "seed": 0, "confirm_top": 2,
                   "confirm_seeds": 1, "ensemble_top": 2},
    "resources": {"cpu": 1},
    "spectrogram": {"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 24},
    "seq2seq": {"units": {"choice": [4, 8]}, "layers": 1, "dropout": 0.0},
    "attention": {"units": 8, "layers": 1, "attention": {"choice": ["luong", "bahdanau"]}},
    # batch_size 10 divides every partition of the tiny corpus: one traced train step per network, not two
    # (a ragged last batch makes tf.function trace again, seconds per trial); test_training covers ragged batches
    "training": {"batch_size": 10, "learning_rate": {"loguniform": [1e-3, 1e-2]}, "jit_compile": False},
    # the trials that fuse the functionals get them from the driver (search/trial.py), as the confirmation does
    "scoring": {"fuse": {"choice": ["attention+seq2seq", "attention+seq2seq+functionals"]}},
    "scheduler": {"type": "asha", "max_epochs": 3, "grace_period": 1, "reduction_factor": 2},
    "searcher": {"type": "tpe", "n_startup_trials": 2},
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(root, corpus, space file) of a tiny search: 30 tone clips, 4 trials of tiny models, 3 epochs, scored by
    scoring.validation swap."""
    import yaml

    root = tmp_path_factory.mktemp("search")
    corpus = write_tone_corpus(root / "corpus", n_per_part=10, seconds=0.5, pitch_noise=40.0)
    space = root / "tiny.yaml"
    # scored on train->devel and devel->train (scoring.validation swap): the session's search covers a
    # validation other than devel end to end (trials, ASHA, confirmation, ensembles, export, report)
    space.write_text(yaml.safe_dump({**TINY_SPACE, "scoring": {**TINY_SPACE["scoring"], "validation": "swap"}}))
    return root, corpus, space


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    """The lines this project logs (auttention.*, search.*: the one log path, auttention/log.py) while the
    block runs, in order; whatever handlers the loggers have keep theirs."""
    from auttention.log import ROOTS

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    keep, loggers = Keep(), [logging.getLogger(root) for root in ROOTS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(keep)
        logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(keep)
            logger.setLevel(level)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The lines this project logs during the test (see captured_log)."""
    with captured_log() as lines:
        yield lines


@pytest.fixture(scope="session")
def finished(tiny):
    """A finished tiny search on local Ray (run once per test session): (run folder, printed lines)."""
    from search.runner import run_search

    root, corpus, space = tiny
    with captured_log() as lines:
        run_dir = run_search(str(space), data=str(corpus), runs=str(root / "runs"), cache=str(root / "cache"),
                             dashboard=False)
    return run_dir, lines


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_until(cmd: list[str], marker: str, env: dict | None = None) -> list[str]:
    """Start `cmd`, read its output until a line holds `marker`, then kill its whole process group
    (a driver interrupted hard); the lines seen. The caller's pytest timeout bounds a marker that never comes."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return seen


@contextlib.contextmanager
def serving(cmd: list[str], url: str, tries: int = 300, log: Path | None = None,
            env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run a server (`cmd`, with `env` added to the environment) while the block runs: first poll `url` until
    it answers (at most `tries` polls, 0.2 s apart; fails if the server exits or never answers), then stop
    its process group."""
    import signal
    import time
    import urllib.error
    import urllib.request

    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        for _ in range(tries):
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited ({proc.returncode}) before answering {url}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        else:
            raise AssertionError(f"{cmd[0]} did not answer {url} after {tries} tries")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone where the server exited
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()


def chromium_path() -> str:
    """Debian's chromium, installed (as root, through apt) when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and apt-get is unavailable to install it")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-qq"],
                [apt, "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", "chromium", "chromium-driver"]):
        done = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes, not seconds (run in CI all the same; -m 'not slow' skips)")
