"""Spectrograms with Ray Data: the corpus manifest as a dataset, decode + spectrogram in `map_batches`,
Parquet parts written by the workers to the cache (a local folder or object storage); cached per
(corpus, spectrogram settings) so a setting is extracted once and reused by every trial and run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from auttention import spectrogram as spectro
from auttention import storage
from auttention.config import SpectrogramConfig, build, to_dict
from auttention.corpus import BadAudioPolicy, fingerprint
from auttention.io import json_text
from auttention.storage import Location


def cache_folder(cache: str | os.PathLike | Location, corpus_hash: str, cfg: SpectrogramConfig) -> Location:
    """Where the spectrograms of this corpus with these settings live (`cache`: a path, a URI or a Location)."""
    return storage.as_location(cache, "--cache") / "spectrograms" / corpus_hash / cfg.hash()


def _batch(batch: pd.DataFrame, settings: dict[str, Any], frames: int):
    # a clip with bad audio becomes a row with its reason in `error`: the driver applies the policy
    return spectro.spectrogram_table(batch, SpectrogramConfig(**settings), frames)


MIN_CHUNK, MAX_CHUNK = 16, 256  # clips per block: enough to amortise a task, few enough to balance and bound memory
# blocks per CPU of the cluster (below MAX_CHUNK): two balance the CPUs, and few enough that Ray Data's
# streaming executor, which notices a finished task only at its next poll (every 0.1 s), leaves a CPU
# idle rarely (docs/PERFORMANCE.md, section 1)
BLOCKS_PER_CPU = 2


@contextlib.contextmanager
def ray_data_settings(verbose: bool = False):
    """Ray Data's DataContext for this CPU-bound extraction, restored afterwards: without the per-operator
    resource reservation (on a small cluster it holds back part of the CPUs for the write operator, and
    the map then runs barely in parallel: docs/PERFORMANCE.md), quiet unless `verbose` (no progress bars,
    no plan printed at the start)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    changes = {"op_resource_reservation_enabled": False, "enable_progress_bars": verbose,
               "print_on_execution_start": verbose}
    before = {k: getattr(ctx, k) for k in changes}
    # Ray Data's own lines (its plan, a warning that progress bars are off) only with `verbose`
    logs = {name: logging.getLogger(name) for name in ("ray.data", "ray.data._internal.progress")}
    levels = {name: log.level for name, log in logs.items()}
    try:
        for key, value in changes.items():
            setattr(ctx, key, value)
        if not verbose:
            logs["ray.data"].setLevel(logging.WARNING)
            logs["ray.data._internal.progress"].setLevel(logging.ERROR)
        yield ctx
    finally:
        for key, value in before.items():
            setattr(ctx, key, value)
        for name, log in logs.items():
            log.setLevel(levels[name])


def _parquet_target(folder: Location) -> tuple[str, Any]:
    """(path, filesystem) for write_parquet: a local folder on a cluster of several nodes is written as
    local://, which Ray Data writes from the driver's node (the parts still decode anywhere);
    object storage by whichever worker made the part."""
    import ray

    if folder.remote:
        return folder.path, folder.fs
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return (f"local://{folder.path}" if len(nodes) > 1 else folder.path), None


def ray_extract(corpus: pd.DataFrame, cfg: SpectrogramConfig, out: str | os.PathLike | Location,
                policy: BadAudioPolicy | None = None, skipped: dict[str, str] | None = None,
                verbose: bool = False) -> Location:
    """Extract with Ray Data, on every CPU of the cluster, into the folder `out` (a path, a URI or a
    Location), atomically.

    The manifest is cut into blocks (BLOCKS_PER_CPU per CPU, 16-256 clips each); `map_batches` decodes each block
    and computes its spectrograms (one CPU per task, on any node) and `write_parquet` writes each as a
    Parquet part into `out`/parquet. Ray Data fuses the two into one task per block (so no concurrency
    cap on the map: a capped map is not fused, and its writes then compete for the CPUs), which writes
    its part from the worker: the driver holds the manifest and never the spectrograms, so its memory
    does not grow with the corpus.

    Clips that fail to decode are handled per `policy` (corpus.BadAudioPolicy; default 'fail', warnings
    printed) once every part is written, from their `error` column alone: 'fail' deletes what was written;
    'skip' warns and records them, with `skipped` (clips the caller already left out), in settings.json.
    settings.json, which records the fingerprint of `corpus` (corpus.fingerprint, which also names its
    cache folder), is written last: a folder without it is incomplete (storage.atomic_folder).
    """
    import pyarrow.parquet as pq
    import ray

    out = storage.as_location(out, "--cache")
    policy = policy or BadAudioPolicy(warn=print)
    corpus_id = fingerprint(corpus)
    frames = spectro.common_frames(corpus, cfg, policy.warn)
    rows = corpus[["file_name", "path", "partition", "label"]].reset_index(drop=True)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    chunk = int(np.clip(np.ceil(len(rows) / (BLOCKS_PER_CPU * slots)), MIN_CHUNK, MAX_CHUNK))
    with ray_data_settings(verbose), storage.atomic_folder(out) as tmp:
        parts = tmp / spectro.PARQUET
        parts.mkdir()
        blocks = ray.data.from_pandas([rows.iloc[i:i + chunk] for i in range(0, len(rows), chunk)])
        made = blocks.map_batches(_batch, fn_kwargs={"settings": to_dict(cfg), "frames": frames},
                                  batch_size=None, batch_format="pandas", num_cpus=1)
        path, filesystem = _parquet_target(parts)
        # a write pinned to the driver's node (local://) takes no CPU there: a cluster's head often has none
        pinned = {"ray_remote_args": {"num_cpus": 0}} if path.startswith("local://") else {}
        made.write_parquet(path, filesystem=filesystem, compression="none",
                           use_dictionary=["file_name", "partition", "error"], **pinned)
        # the bad-audio verdicts: two small columns read back, not the spectrograms
        failed = spectro.bad_clips(pq.read_table(parts.path, filesystem=parts.fs, columns=["file_name", "error"]))
        policy.apply(corpus, failed)  # 'fail' raises: atomic_folder keeps nothing
        (tmp / spectro.SETTINGS).write_text(json_text(
            spectro.settings(cfg, frames, corpus_id, {**(skipped or {}), **failed})))
    return out


def skipped_clips(folder: str | os.PathLike | Location) -> dict[str, str]:
    """{file_name: reason} of the clips a finished spectrogram folder left out for bad audio."""
    return (spectro.made_from(folder) or {}).get("skipped") or {}


def ensure_spectrograms(corpus: pd.DataFrame, settings: list[dict[str, Any]], cache: str | os.PathLike | Location,
                        log=print, policy: BadAudioPolicy | None = None, skipped: dict[str, str] | None = None,
                        verbose: bool = False) -> dict[str, Location]:
    """Every setting's spectrogram folder, extracting those not in the cache yet: {settings hash: folder}.
    `cache`: a local folder or object storage (a URI or a storage.Location).

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
        complete = spectro.is_complete(folder)
        stale = spectro.differs(folder, corpus_hash, cfg) if complete else None
        if stale:
            log(f"spectrograms: {folder} was {stale}; extracting them again")
        if complete and not stale:
            log(f"spectrograms: cached {folder}")
            policy.apply(corpus, skipped_clips(folder))
        else:
            log(f"spectrograms: extracting {len(corpus)} clips with Ray Data -> {folder}")
            started = time.perf_counter()
            ray_extract(corpus, cfg, folder, policy=policy, skipped=skipped, verbose=verbose)
            log(f"spectrograms: done in {time.perf_counter() - started:.1f} s")
        folders[cfg.hash()] = folder
    return folders
