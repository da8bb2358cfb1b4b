"""The Ray Data executor of the one extraction (auttention.extraction.extract): the corpus manifest as a
dataset, decode + spectrogram in `map_batches`, Parquet parts written by the workers to the cache (a
local folder or object storage); cached per (corpus, spectrogram settings) so a setting is extracted once
and reused by every trial and run (`ensure_spectrograms`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from auttention import spectrogram as spectro
from auttention import storage
from auttention.config import SpectrogramConfig, build, to_dict
from auttention.corpus import BadAudioPolicy
from auttention.extraction import Screened, extract, screen
from auttention.storage import Location

from .compat import RAY_DATA_DATASET_LOGGER, RAY_DATA_NO_CPU_WARNING, RAY_DATA_PROGRESS_LOGGER


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


# Ray Data's warning that "the Ray cluster currently does not have any available CPUs" (ray 2.60.0,
# Dataset._execute, logger ray.data.dataset): write_parquet runs the job, then _execute once more on its
# materialized (finished) output, and checks ray.available_resources() there. That view of the cluster
# lags the raylets' resource reports: right after a short extraction's tasks end it still counts their
# CPUs as taken (measured on 2 CPUs: none available at that check, both free again within 20 ms, with
# nothing of ours in between: no task, actor or placement group holds them). So the line appears after
# any extraction short enough (the second setting of every demo search), and never means a hang here:
# extractions run before any trial takes a CPU. A cluster with no CPU at all gets our own line instead
# (RayData.__call__).
def _not_stale_cpu_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(RAY_DATA_NO_CPU_WARNING)


@contextlib.contextmanager
def ray_data_settings(verbose: bool = False):
    """Ray Data's DataContext for this CPU-bound extraction, restored afterwards: without the per-operator
    resource reservation (on a small cluster it holds back part of the CPUs for the write operator, and
    the map then runs barely in parallel: docs/PERFORMANCE.md), quiet unless `verbose` (no progress bars,
    no plan printed at the start), and without Ray Data's false alarm about CPUs (see _not_stale_cpu_warning)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    changes = {
        "op_resource_reservation_enabled": False,
        "enable_progress_bars": verbose,
        "print_on_execution_start": verbose,
    }
    before = {k: getattr(ctx, k) for k in changes}
    # Ray Data's own lines (its plan, a warning that progress bars are off) only with `verbose`
    logs = {name: logging.getLogger(name) for name in ("ray.data", RAY_DATA_PROGRESS_LOGGER)}
    levels = {name: log.level for name, log in logs.items()}
    dataset_log = logging.getLogger(RAY_DATA_DATASET_LOGGER)
    dataset_log.addFilter(_not_stale_cpu_warning)
    try:
        for key, value in changes.items():
            setattr(ctx, key, value)
        if not verbose:
            logs["ray.data"].setLevel(logging.WARNING)
            logs[RAY_DATA_PROGRESS_LOGGER].setLevel(logging.ERROR)
        yield ctx
    finally:
        for key, value in before.items():
            setattr(ctx, key, value)
        for name, log in logs.items():
            log.setLevel(levels[name])
        dataset_log.removeFilter(_not_stale_cpu_warning)


def _parquet_target(folder: Location) -> tuple[str, Any]:
    """(path, filesystem) for write_parquet: a local folder on a cluster of several nodes is written as
    local://, which Ray Data writes from the driver's node (the parts still decode anywhere);
    object storage by whichever worker made the part."""
    import ray

    if folder.remote:
        return folder.path, folder.fs
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return (f"local://{folder.path}" if len(nodes) > 1 else folder.path), None


@dataclass(frozen=True)
class RayData:
    """The Ray Data executor of extraction.extract: every CPU of the cluster, parts written by the workers.

    The manifest is cut into blocks (BLOCKS_PER_CPU per CPU, 16-256 clips each); `map_batches` decodes each
    block and computes its spectrograms (spectrogram.spectrogram_table; one CPU per task, on any node) and
    `write_parquet` writes each as a Parquet part into `parts`. Ray Data fuses the two into one task per
    block (so no concurrency cap on the map: a capped map is not fused, and its writes then compete for
    the CPUs), which writes its part from the worker: the driver holds the manifest and never the
    spectrograms, so its memory does not grow with the corpus. Call with Ray started.
    """

    verbose: bool = False  # Ray Data's progress bars and plan
    name = "with Ray Data"

    def __call__(self, clips: pd.DataFrame, cfg: SpectrogramConfig, frames: int, parts: Location) -> None:
        import ray

        rows = clips[["file_name", "path", "partition", "label"]].reset_index(drop=True)
        cpus = ray.cluster_resources().get("CPU", 0)
        if not cpus:  # the one case where Ray Data's CPU warning, silenced, meant something
            logging.getLogger(__name__).warning(
                "warning: the Ray cluster has no CPU; the spectrograms are extracted once a node with CPUs joins it"
            )
        slots = max(1, int(cpus))
        chunk = int(np.clip(np.ceil(len(rows) / (BLOCKS_PER_CPU * slots)), MIN_CHUNK, MAX_CHUNK))
        with ray_data_settings(self.verbose):
            blocks = ray.data.from_pandas([rows.iloc[i : i + chunk] for i in range(0, len(rows), chunk)])
            made = blocks.map_batches(
                functools.partial(_batch, settings=to_dict(cfg), frames=frames),
                batch_size=None,
                batch_format="pandas",
                num_cpus=1,
            )
            path, filesystem = _parquet_target(parts)
            # a write pinned to the driver's node (local://) takes no CPU there: a cluster's head often has none
            pinned: dict[str, Any] = {"ray_remote_args": {"num_cpus": 0}} if path.startswith("local://") else {}
            made.write_parquet(path, filesystem=filesystem, **spectro.PARQUET_OPTIONS, **pinned)


def skipped_clips(folder: str | os.PathLike | Location) -> dict[str, str]:
    """{file_name: reason} of the clips a finished spectrogram folder left out for bad audio."""
    return (spectro.made_from(folder) or {}).get("skipped") or {}


def ensure_spectrograms(
    corpus: pd.DataFrame | Screened,
    settings: list[dict[str, Any]],
    cache: str | os.PathLike | Location,
    policy: BadAudioPolicy | None = None,
    verbose: bool = False,
) -> dict[str, Location]:
    """Every setting's spectrogram folder in `cache` (a local folder or object storage: a URI or a
    storage.Location), extracted with Ray Data where not there yet (extraction.extract): {settings hash: folder}.

    corpus : a corpus, screened here per `policy` ('fail' or 'skip'; default 'fail'; warnings are logged), or one
        the caller screened already (extraction.screen, e.g. before Ray started)
    """
    screened = corpus if isinstance(corpus, Screened) else screen(corpus, policy)
    executor = RayData(verbose)
    folders = {}
    for values in settings:
        cfg = build(SpectrogramConfig, values, "spectrogram")
        folders[cfg.hash()] = extract(screened, cfg, cache_folder(cache, screened.fingerprint, cfg), executor)
    return folders
