"""A search's run folder on local disk or on object storage (s3://, gs://).

Locally, `--runs DIR` is used as is. On object storage the run folder lives in the bucket, and the
driver works in a local mirror (under the cache, one per run URI):
- Ray Tune writes the experiment and every trial's results and checkpoints straight to the bucket
  (`RunConfig(storage_path=..., storage_filesystem=...)`), from whichever node runs the trial;
- the Optuna study is a SQLite file in the mirror while the search runs (SQLite needs a local disk),
  copied into the bucket as the search goes (at most every STUDY_SYNC_S) and at the end;
- after the search, the trials' results (not their model weights, except the checkpoints being
  exported) come down into the mirror; trials.csv, best/ and the report are written there and go up;
- `--resume` and `report` fetch the run folder into the mirror first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auttention import storage
from auttention.errors import UserError
from auttention.record import CHECKPOINT_REPORT

TUNE = "tune"  # Tune's experiment folder inside a run folder
STUDY = "optuna.db"
STUDY_SYNC_S = 30.0
CHECKPOINT_KEEP = (CHECKPOINT_REPORT,)  # of a remote checkpoint, what the mirror holds (enough to rank it)


def _is_checkpoint_weight(name: str) -> bool:
    """A file of a trial checkpoint other than its metrics (the models: fetched only when exported)."""
    parts = name.split("/")
    return any(p.startswith("checkpoint_") for p in parts[:-1]) and parts[-1] not in CHECKPOINT_KEEP


class RunFolder:
    """`runs`/`name`: `location` (where it lives), `local` (where the driver reads and writes it)."""

    def __init__(self, runs: str | os.PathLike, name: str, cache: Path) -> None:
        """cache: the local cache folder that holds the mirrors of run folders on object storage."""
        self.root = storage.location(str(runs), "--runs")
        self.location = self.root / name
        if self.remote:
            key = hashlib.sha256(self.location.uri.encode()).hexdigest()[:16]
            self.local = Path(cache) / "runs" / key / name
        else:
            self.local = self.location.local
        self._pushed = 0.0

    @property
    def remote(self) -> bool:
        return self.location.remote

    def __str__(self) -> str:
        return str(self.location)

    @property
    def tune(self) -> storage.Location:
        return self.location / TUNE

    def storage(self) -> tuple[str, object | None]:
        """(storage_path, storage_filesystem) for Tune's RunConfig: the run folder in its filesystem."""
        if self.remote:
            return self.location.path, self.location.fs
        return str(self.local.resolve()), None

    def has_search(self) -> bool:
        """Whether a search was started here (Tune's experiment folder exists)."""
        return self.tune.is_dir() if self.remote else (self.local / TUNE).is_dir()

    def can_restore(self) -> bool:
        from ray import tune

        path, fs = self.storage()
        return tune.Tuner.can_restore(f"{path}/{TUNE}" if fs else str(Path(path) / TUNE), storage_filesystem=fs)

    def check(self) -> None:
        """Before any work: the run folder can be written (a missing bucket, refused credentials or an
        unreachable endpoint: one line)."""
        if self.remote:
            storage.check(self.root, "--runs")  # in the folder of run folders: nothing of this run yet
            storage.check_writable(self.local, "--cache (the run folder's local mirror)")
        else:
            storage.check_writable(self.local, "--runs")

    def start(self, resume: bool) -> None:
        """Prepare the mirror: a new search starts from an empty one; --resume fetches what the mirror lacks
        of the run folder but Tune's experiment, which Tune restores itself (a mirror left by this machine
        keeps its own study: it is at least as recent as the bucket's copy)."""
        if not self.remote:
            return
        if not resume:
            shutil.rmtree(self.local, ignore_errors=True)
            return
        self.pull(results=False, missing_only=True)

    def pull(self, results: bool = True, missing_only: bool = False) -> None:
        """Fetch the run folder into the mirror: everything but the trials' model weights (and, with
        results=False, without Tune's experiment at all)."""
        if not self.remote:
            return
        skip = () if results else (TUNE,)
        self.local.mkdir(parents=True, exist_ok=True)
        for name in self.location.files():
            if (
                any(name == s or name.startswith(s + "/") for s in skip)
                or _is_checkpoint_weight(name)
                or Path(name).name.startswith(".auttention-probe-")
            ):
                continue
            target = self.local / name
            if missing_only and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((self.location / name).read_bytes())

    def push(self, *names: str) -> None:
        """Copy the mirror's `names` (files or folders; default all but Tune's experiment) into the bucket."""
        if not self.remote:
            return
        names = names or tuple(p.name for p in self.local.iterdir() if p.name != TUNE)
        for name in names:
            source = self.local / name
            if source.is_dir():
                (self.location / name).upload(source)
            elif source.is_file():
                (self.location / name).write_bytes(_snapshot(source) if name == STUDY else source.read_bytes())

    def push_study(self, force: bool = False) -> None:
        """Copy the Optuna study into the bucket (at most every STUDY_SYNC_S unless forced)."""
        if not self.remote or not (self.local / STUDY).is_file():
            return
        now = time.monotonic()
        if force or now - self._pushed >= STUDY_SYNC_S:
            self._pushed = now
            self.push(STUDY)

    def remote_path(self, local: str | os.PathLike) -> str:
        """The run folder's copy of a path of the mirror (the path itself for a local run folder)."""
        if not self.remote:
            return str(local)
        rel = Path(local).resolve().relative_to(self.local.resolve()).as_posix()
        return (self.location / rel).uri

    def trial_folder(self, result) -> Path:
        """The mirror's folder of a Tune result's trial."""
        return self.local / TUNE / Path(str(result.path)).name if self.remote else Path(result.path)


def copy_sqlite(db: Path, copy: Path) -> None:
    """A consistent copy of a SQLite file that a search may be writing (the file is only read)."""

    src, dst = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _snapshot(db: Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="auttention-study-") as tmp:
        copy_sqlite(db, Path(tmp) / STUDY)
        return (Path(tmp) / STUDY).read_bytes()


@contextmanager
def local_checkpoint(checkpoint: str) -> Iterator[str]:
    """A checkpoint folder on this node's disk: itself if local, else fetched from object storage into a
    temporary folder that is removed afterwards."""
    if not storage.is_remote(checkpoint):
        yield checkpoint
        return
    tmp = tempfile.mkdtemp(prefix="auttention-checkpoint-")
    try:
        storage.location(checkpoint, "checkpoint").download(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_folder_of(path: str | os.PathLike, cache: Path) -> RunFolder:
    """The RunFolder of a run folder's path or URI (runs/NAME, s3://bucket/runs/NAME)."""
    text = str(path).rstrip("/")
    parent, _, name = text.rpartition("/") if storage.is_remote(text) else (str(Path(text).parent), "", Path(text).name)
    if not name:
        raise UserError(f"{path}: give a run folder (runs/NAME or s3://bucket/runs/NAME)")
    return RunFolder(parent, name, cache)
