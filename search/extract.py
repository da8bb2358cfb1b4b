"""Spectrograms with Ray tasks: read, decode and extract in parallel, write Parquet; cached per
(corpus, spectrogram settings) so a setting is extracted once and reused by every trial and run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from auttention import spectrogram as spectro
from auttention.config import SpectrogramConfig, to_dict
from auttention.io import atomic_dir, write_json


def corpus_fingerprint(corpus: pd.DataFrame) -> str:
    """A short hash of the corpus: names, partitions, labels, and each file's size and mtime."""
    digest = hashlib.sha256()
    for name, path, part, label in corpus[["file_name", "path", "partition", "label"]].itertuples(index=False):
        stat = os.stat(path)
        digest.update(f"{name}\0{part}\0{label!r}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cache_folder(cache: str | os.PathLike, corpus_hash: str, cfg: SpectrogramConfig) -> Path:
    """Where the spectrograms of this corpus with these settings live."""
    return Path(cache) / "spectrograms" / corpus_hash / cfg.hash()


def _batch(batch: pd.DataFrame, settings: dict[str, Any], frames: int):
    # a clip with bad audio becomes a row with its reason in `error`: the driver applies the policy
    return spectro.spectrogram_table(batch, SpectrogramConfig(**settings), frames)


MIN_CHUNK, MAX_CHUNK = 16, 256  # clips per task: enough to amortise a task, few enough to balance and bound memory


def ray_extract(corpus: pd.DataFrame, cfg: SpectrogramConfig, out: str | os.PathLike,
                parallelism: int | None = None, on_bad_audio: str = "fail",
                warn: Callable[[str], None] = print, skipped: dict[str, str] | None = None) -> Path:
    """Extract with Ray tasks (at most `parallelism` at once, default every CPU of the cluster) into
    the folder `out`, atomically.

    The corpus is cut into chunks (a few per task slot, 16-256 clips each); each chunk is one Ray task
    (one CPU, on any node) that returns an Arrow table, and the driver writes each table as a Parquet
    part as soon as it arrives, so the cache lives where the driver runs and worker nodes need no
    shared disk (trials get the spectrograms from the object store, not the cache).

    Plain tasks rather than Ray Data's map_batches: on a small cluster Ray Data's streaming executor
    ran these CPU-bound tasks barely in parallel (bench/extract.py on 2 CPUs: parallel efficiency
    0.51 with Ray Data, 0.87 with tasks; docs/PERFORMANCE.md).

    Clips that fail to decode are handled per `on_bad_audio` (corpus.apply_bad_audio_policy): 'fail'
    writes nothing; 'skip' warns and records them, with `skipped` (clips the caller already left
    out), in settings.json.
    """
    import ray

    from auttention.corpus import apply_bad_audio_policy

    frames = spectro.common_frames(corpus, cfg)
    rows = corpus[["file_name", "path", "partition", "label"]].reset_index(drop=True)
    slots = max(1, parallelism or int(ray.cluster_resources().get("CPU", 1)))
    chunk = int(np.clip(np.ceil(len(rows) / (4 * slots)), MIN_CHUNK, MAX_CHUNK))
    chunks = [rows.iloc[i:i + chunk] for i in range(0, len(rows), chunk)]
    n_parts = len(chunks)  # one Parquet part per chunk, written as its task returns
    task = ray.remote(num_cpus=1, max_retries=3)(_batch)
    settings = to_dict(cfg)
    in_flight: list = []
    failed: dict[str, str] = {}
    try:
        with atomic_dir(out) as tmp:
            (tmp / spectro.PARQUET).mkdir()
            for i in range(n_parts):
                while len(in_flight) < slots and chunks:
                    in_flight.append(task.remote(chunks.pop(0), settings, frames))
                done, in_flight = ray.wait(in_flight, num_returns=1)
                table = ray.get(done[0])
                failed.update(spectro.bad_clips(table))
                spectro.write_part(table, tmp / spectro.PARQUET / f"part-{i:05d}.parquet")
            apply_bad_audio_policy(corpus, failed, on_bad_audio, warn)  # 'fail' raises: atomic_dir keeps nothing
            write_json(tmp / spectro.SETTINGS, spectro.settings(cfg, frames, {**(skipped or {}), **failed}))
    finally:
        for ref in in_flight:  # interrupted (Ctrl-C, an error): stop what is still running
            ray.cancel(ref)
    return Path(out)


def skipped_clips(folder: str | os.PathLike) -> dict[str, str]:
    """{file_name: reason} of the clips a finished spectrogram folder left out for bad audio."""
    return json.loads((Path(folder) / spectro.SETTINGS).read_text()).get("skipped") or {}


def ensure_spectrograms(corpus: pd.DataFrame, settings: list[dict[str, Any]], cache: str | os.PathLike,
                        log=print, parallelism: int | None = None, on_bad_audio: str = "fail",
                        skipped: dict[str, str] | None = None) -> dict[str, Path]:
    """Every setting's spectrogram folder, extracting those not in the cache yet: {settings hash: folder}.

    Bad audio per `on_bad_audio` ('fail' or 'skip', warnings through `log`). The clips' headers are
    checked here unless the caller did so already (corpus.screen_audio): then `skipped` is what it left out.
    A cached folder that left clips out fails under 'fail' too.
    """
    from auttention.config import build
    from auttention.corpus import apply_bad_audio_policy, screen_audio

    warned: set[str] = set()

    def warn(line: str) -> None:  # every setting decodes the same bad clip: say it once
        if line not in warned:
            warned.add(line)
            log(line)

    if skipped is None:
        corpus, skipped = screen_audio(corpus, on_bad_audio, warn)
    corpus_hash = corpus_fingerprint(corpus)
    folders = {}
    for values in settings:
        cfg = build(SpectrogramConfig, values, "spectrogram")
        folder = cache_folder(cache, corpus_hash, cfg)
        if spectro.is_complete(folder):
            log(f"spectrograms: cached {folder}")
            apply_bad_audio_policy(corpus, skipped_clips(folder), on_bad_audio, warn)
        else:
            log(f"spectrograms: extracting {len(corpus)} clips with Ray tasks -> {folder}")
            started = time.perf_counter()
            ray_extract(corpus, cfg, folder, parallelism, on_bad_audio=on_bad_audio, warn=warn, skipped=skipped)
            log(f"spectrograms: done in {time.perf_counter() - started:.1f} s")
        folders[cfg.hash()] = folder
    return folders

