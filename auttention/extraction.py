"""One extraction: a corpus' spectrograms with one setting, into one folder (local or object storage).

`extract` owns everything but the computing: the corpus fingerprint, the screening of bad audio per
`BadAudioPolicy`, the reuse of a finished folder made from the same corpus with the same settings (one
line saying so, or one line saying why it is made again), the atomic folder and its completion marker
(settings.json, written last; see spectrogram.py for the folder's layout). Its one variable is the
executor, which turns blocks of manifest rows into Parquet parts of the temporary folder with the one
worker function, spectrogram.spectrogram_table:

- `ProcessPool` (here): in this process (jobs=1) or a local process pool; `pipeline` and `extract`;
- `search.extract.RayData`: Ray Data across the cluster; `run` (this package never imports Ray).

The fingerprint is that of the corpus as given, before screening: one corpus, one fingerprint, whatever
the policy and whichever clips a header check or a decode rejects (those are recorded in settings.json's
`skipped`, so the folder still says exactly what it holds). It depends on the file names, partitions and
audio files alone (corpus.fingerprint), so whether a folder can be reused is known without reading an
audio header, and it equals `corpus.fingerprint(read_corpus(data))` in every artefact's provenance.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import pyarrow.parquet as pq

from . import spectrogram as spectro
from . import storage
from .config import SpectrogramConfig, to_dict
from .corpus import BadAudioPolicy, fingerprint, read_corpus
from .io import json_text
from .storage import Location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screened:
    """A corpus ready to extract, screened once for every setting: `clips` (bad headers left out under
    'skip'), `skipped` ({file_name: reason} of those), the `fingerprint` of the corpus as given, and the
    `policy`, which says each warning line once (every setting decodes the same bad clip)."""

    clips: pd.DataFrame
    skipped: dict[str, str]
    fingerprint: str
    policy: BadAudioPolicy


def screen(corpus: pd.DataFrame, policy: BadAudioPolicy | None = None) -> Screened:
    """The header check of every clip, then the policy (BadAudioPolicy.screen): 'fail' raises BadAudio
    here, before any work; the fingerprint is taken first, of the corpus as given (see the module)."""
    policy = (policy or BadAudioPolicy()).warning_once()
    corpus_id = fingerprint(corpus)
    clips, skipped = policy.screen(corpus)
    return Screened(clips, skipped, corpus_id, policy)


class Executor(Protocol):
    """Turns every clip of a manifest into Parquet parts (spectrogram.spectrogram_table, one part per
    block of rows; a clip with bad audio becomes a row with its reason in `error`) in the folder `parts`."""

    @property
    def name(self) -> str:
        """How the log line says it: "in 2 processes", "with Ray Data"."""

    def __call__(self, clips: pd.DataFrame, cfg: SpectrogramConfig, frames: int, parts: Location) -> None: ...


def _write_block(task: tuple[pd.DataFrame, SpectrogramConfig, int, Location]) -> None:
    """One block of clips -> one Parquet part (run in a pool's process, which writes it: the driver never
    holds the spectrograms)."""
    rows, cfg, frames, part = task
    spectro.write_part(spectro.spectrogram_table(rows, cfg, frames), part)


@dataclass(frozen=True)
class ProcessPool:
    """The local executor: `jobs` processes (default: every CPU), or this process alone with jobs=1."""

    jobs: int | None = None

    @property
    def name(self) -> str:
        jobs = self.jobs or os.cpu_count() or 1
        return "in this process" if jobs == 1 else f"in {jobs} processes"

    def __call__(self, clips: pd.DataFrame, cfg: SpectrogramConfig, frames: int, parts: Location) -> None:
        jobs = self.jobs or os.cpu_count() or 1
        # about 4 blocks per process (balance), at most 64 clips each (bounded memory per process)
        chunk = max(1, min(64, len(clips) // (jobs * 4) or 1))
        rows = clips[["file_name", "path", "partition", "label"]]
        tasks = [
            (rows.iloc[i : i + chunk], cfg, frames, parts / f"part-{i // chunk:05d}.parquet")
            for i in range(0, len(rows), chunk)
        ]
        if jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                _write_block(task)
            return
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
            list(pool.map(_write_block, tasks))


def differs(folder: str | os.PathLike | Location, corpus_id: str, cfg: SpectrogramConfig) -> str | None:
    """What makes a spectrogram folder unusable for this corpus and these settings (None: usable)."""
    meta = spectro.made_from(folder)
    if meta is None:
        return "no finished spectrograms"
    if meta.get("corpus") != corpus_id:
        return "made from another corpus (or the audio files changed)"
    if meta.get("settings") != to_dict(cfg):
        return "made with other spectrogram settings"
    return None


def extract(
    corpus: pd.DataFrame | Screened,
    cfg: SpectrogramConfig,
    out: str | os.PathLike | Location,
    executor: Executor | None = None,
    policy: BadAudioPolicy | None = None,
) -> Location:
    """The spectrogram folder `out` (a path, an s3:// / gs:// URI or a Location) of `corpus` with `cfg`:
    reused when finished and made from this corpus with these settings, else extracted by `executor`
    (default: a ProcessPool on every CPU) and written atomically, settings.json last.

    corpus : the corpus (screened here per `policy`, default 'fail' with warnings on stderr) or a
        `Screened` one (several settings, or a caller that screened before starting its cluster)
    Bad audio: 'fail' raises BadAudio and leaves no folder; 'skip' leaves the clips out, one warning line
    each, and records them in settings.json; a reused folder that left clips out replays them through the
    policy (so 'fail' fails on it too). Progress lines are logged.
    """

    out = storage.as_location(out, "--out")
    screened = corpus if isinstance(corpus, Screened) else None
    policy = screened.policy if screened else (policy or BadAudioPolicy())
    corpus_id = screened.fingerprint if screened else fingerprint(corpus)
    if spectro.is_complete(out):
        why = differs(out, corpus_id, cfg)
        if why is None:
            log.info(f"spectrograms: reusing {out}")
            # clips it left out are bad still: the policy applies to them now as well
            policy.apply(screened.clips if screened else corpus, (spectro.made_from(out) or {}).get("skipped") or {})
            return out
        log.info(f"spectrograms: {out} was {why}; extracting them again")
    screened = screened or screen(corpus, policy)
    clips, policy = screened.clips, screened.policy
    executor = executor or ProcessPool()
    frames = spectro.common_frames(clips, cfg, policy.warn)
    log.info(f"spectrograms: extracting {len(clips)} clips {executor.name} -> {out}")
    started = time.perf_counter()
    with storage.atomic_folder(out) as tmp:
        parts = tmp / spectro.PARQUET
        parts.mkdir()
        executor(clips, cfg, frames, parts)
        # the bad-audio verdicts: two small columns read back, not the spectrograms
        failed = spectro.bad_clips(pq.read_table(parts.path, filesystem=parts.fs, columns=["file_name", "error"]))
        policy.apply(clips, failed)  # 'fail' raises: atomic_folder keeps nothing
        (tmp / spectro.SETTINGS).write_text(
            json_text(spectro.settings(cfg, frames, corpus_id, {**screened.skipped, **failed}))
        )
    log.info(f"spectrograms: done in {time.perf_counter() - started:.1f} s")
    return out


def extract_corpus(
    data: str | os.PathLike,
    cfg: SpectrogramConfig,
    out: str | os.PathLike | Location,
    jobs: int | None = None,
    policy: BadAudioPolicy | None = None,
) -> spectro.Spectrograms:
    """The `extract` step: the corpus at `data` (a ComParE folder or a manifest CSV) read, its spectrograms
    extracted into `out` by a ProcessPool of `jobs` (see `extract`) and read back."""

    policy = policy or BadAudioPolicy()
    corpus = read_corpus(data)
    return spectro.read(extract(corpus, cfg, out, ProcessPool(jobs), policy))
