"""Spectrograms with Ray tasks: read, decode and extract in parallel, write Parquet; cached per
(corpus, spectrogram settings) so a setting is extracted once and reused by every trial and run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auttention import spectrogram as spectro
from auttention.config import SpectrogramConfig, build, to_dict
from auttention.corpus import BadAudioPolicy, fingerprint
from auttention.io import atomic_dir, write_json


def cache_folder(cache: str | os.PathLike, corpus_hash: str, cfg: SpectrogramConfig) -> Path:
    """Where the spectrograms of this corpus with these settings live."""
    return Path(cache) / "spectrograms" / corpus_hash / cfg.hash()


def _batch(batch: pd.DataFrame, settings: dict[str, Any], frames: int):
    # a clip with bad audio becomes a row with its reason in `error`: the driver applies the policy
    return spectro.spectrogram_table(batch, SpectrogramConfig(**settings), frames)


MIN_CHUNK, MAX_CHUNK = 16, 256  # clips per task: enough to amortise a task, few enough to balance and bound memory


def ray_extract(corpus: pd.DataFrame, cfg: SpectrogramConfig, out: str | os.PathLike,
                parallelism: int | None = None, policy: BadAudioPolicy | None = None,
                skipped: dict[str, str] | None = None) -> Path:
    """Extract with Ray tasks (at most `parallelism` at once, default every CPU of the cluster) into
    the folder `out`, atomically.

    The corpus is cut into chunks (a few per task slot, 16-256 clips each); each chunk is one Ray task
    (one CPU, on any node) that returns an Arrow table, and the driver writes each table as a Parquet
    part as soon as it arrives, so the cache lives where the driver runs and worker nodes need no
    shared disk (trials get the spectrograms from the object store, not the cache).

    Plain tasks rather than Ray Data's map_batches: on a small cluster Ray Data's streaming executor
    ran these CPU-bound tasks barely in parallel (bench/extract.py on 2 CPUs: parallel efficiency
    0.51 with Ray Data, 0.87 with tasks; docs/PERFORMANCE.md).

    Clips that fail to decode are handled per `policy` (corpus.BadAudioPolicy; default 'fail', warnings
    printed): 'fail' writes nothing; 'skip' warns and records them, with `skipped` (clips the caller
    already left out), in settings.json. settings.json records the fingerprint of `corpus` (corpus.fingerprint), which
    also names its cache folder.
    """
    import ray

    policy = policy or BadAudioPolicy(warn=print)
    corpus_id = fingerprint(corpus)
    frames = spectro.common_frames(corpus, cfg, policy.warn)
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
            policy.apply(corpus, failed)  # 'fail' raises: atomic_dir keeps nothing
            write_json(tmp / spectro.SETTINGS, spectro.settings(cfg, frames, corpus_id, {**(skipped or {}), **failed}))
    finally:
        for ref in in_flight:  # interrupted (Ctrl-C, an error): stop what is still running
            ray.cancel(ref)
    return Path(out)


def skipped_clips(folder: str | os.PathLike) -> dict[str, str]:
    """{file_name: reason} of the clips a finished spectrogram folder left out for bad audio."""
    return json.loads((Path(folder) / spectro.SETTINGS).read_text()).get("skipped") or {}


def ensure_spectrograms(corpus: pd.DataFrame, settings: list[dict[str, Any]], cache: str | os.PathLike,
                        log=print, parallelism: int | None = None, policy: BadAudioPolicy | None = None,
                        skipped: dict[str, str] | None = None) -> dict[str, Path]:
    """Every setting's spectrogram folder, extracting those not in the cache yet: {settings hash: folder}.

    Bad audio per `policy` ('fail' or 'skip'; default 'fail', warnings through `log`). The clips' headers
    are checked here unless the caller did so already (BadAudioPolicy.screen): then `skipped` is what it
    left out. A cached folder that left clips out fails under 'fail' too.
    """
    policy = (policy or BadAudioPolicy(warn=log)).warning_once()  # every setting decodes the same bad clip
    if skipped is None:
        corpus, skipped = policy.screen(corpus)
    corpus_hash = fingerprint(corpus)
    folders = {}
    for values in settings:
        cfg = build(SpectrogramConfig, values, "spectrogram")
        folder = cache_folder(cache, corpus_hash, cfg)
        stale = spectro.differs(folder, corpus_hash, cfg) if spectro.is_complete(folder) else None
        if stale:
            log(f"spectrograms: {folder} was {stale}; extracting them again")
        if spectro.is_complete(folder) and not stale:
            log(f"spectrograms: cached {folder}")
            policy.apply(corpus, skipped_clips(folder))
        else:
            log(f"spectrograms: extracting {len(corpus)} clips with Ray tasks -> {folder}")
            started = time.perf_counter()
            ray_extract(corpus, cfg, folder, parallelism, policy=policy, skipped=skipped)
            log(f"spectrograms: done in {time.perf_counter() - started:.1f} s")
        folders[cfg.hash()] = folder
    return folders

