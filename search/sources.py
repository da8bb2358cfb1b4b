"""How trials get a spectrogram setting: once per node, never once per trial, and never through the
driver's memory.

- `object-store`: one Ray task reads the Parquet cache and returns the spectrograms; the object lives in
  the object store of the node that read it (the driver holds only its reference), Ray copies it once
  to each node whose trials ask for it, and every trial on a node maps that one copy (zero-copy NumPy).
- `node-copy`: for corpora too big for the object store. The first trial on a node copies the cache into
  one uncompressed Arrow file in the node's temporary folder (under a file lock: the other trials of the
  node wait for it); every trial memory-maps that file, so the node's page cache holds one copy.

`auto` (the default) takes the object store when every setting's spectrograms together fit in
OBJECT_STORE_SHARE of the smallest node's object store, the node copy otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from auttention import spectrogram as spectro
from auttention.corpus import joined_columns
from auttention.errors import UserError
from auttention.io import atomic_path
from auttention.storage import Location

log = logging.getLogger(__name__)

AUTO, OBJECT_STORE, NODE_COPY = "auto", "object-store", "node-copy"
DELIVERIES = (AUTO, OBJECT_STORE, NODE_COPY)
OBJECT_STORE_SHARE = 0.3  # of the smallest node's object store: room left for Tune's and the trials' objects
NODE_COPIES = "AUTTENTION_NODE_COPIES"  # where node copies go (default: the temporary folder)
_META = b"auttention-spectrograms"


@dataclass(frozen=True)
class Source:
    """One spectrogram setting as the trials get it: `folder` (the Parquet cache), the corpus' labels
    (file_name, label, speaker where known; joined where used, see Spectrograms.with_labels) and, for the object-store
    delivery, `ref`, the reference of the spectrograms read once into the object store."""

    folder: Location
    labels: pd.DataFrame
    ref: Any = None

    @property
    def delivery(self) -> str:
        return OBJECT_STORE if self.ref is not None else NODE_COPY

    def get(self) -> spectro.Spectrograms:
        """The spectrograms, labelled, as views of this node's one copy."""
        if self.ref is not None:
            import ray

            return ray.get(self.ref)
        return node_copy(self.folder).with_labels(self.labels)


def _labelled(folder: Location, labels: pd.DataFrame) -> spectro.Spectrograms:
    return spectro.read(folder).with_labels(labels)


def size_bytes(folder: Location) -> int:
    """The spectrograms' size in memory (rows x frames x bands x 4 bytes), from the Parquet footers alone."""

    meta = spectro.made_from(folder) or {}
    rows = pads.dataset((folder / spectro.PARQUET).path, filesystem=folder.fs, format="parquet").count_rows()
    return int(rows) * int(meta.get("frames", 0)) * int(meta.get("n_mels", 0)) * 4


def _trial_nodes() -> list[dict]:
    import ray

    return [
        n
        for n in ray.nodes()
        if n.get("Alive") and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)
    ]


def _visible_on_every_node(folder: Location, nodes: list[dict]) -> bool:
    """Whether every node reads the finished cache folder (object storage, or a shared file system)."""
    if folder.remote or len(nodes) <= 1:
        return True
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(spectro.is_complete)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(folder)
        for n in nodes
    ]
    return all(ray.get(refs))


def spectrogram_sources(folders: dict[str, Location], corpus: pd.DataFrame, delivery: str = AUTO) -> dict[str, Source]:
    """{settings hash: Source} for the cache folders of ensure_spectrograms, by `delivery` (one of
    DELIVERIES, checked by the caller before any work; see the module's docstring). Call with Ray started."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    labels = corpus[joined_columns(corpus)].reset_index(drop=True)
    sizes = {h: size_bytes(f) for h, f in folders.items()}
    nodes = _trial_nodes()
    room = min((n["Resources"].get("object_store_memory", 0) for n in nodes), default=0)
    total = sum(sizes.values())
    if delivery == AUTO:
        delivery = OBJECT_STORE if total <= OBJECT_STORE_SHARE * room else NODE_COPY
    sources = {}
    if delivery == NODE_COPY:
        for h, folder in folders.items():
            if not _visible_on_every_node(folder, nodes):
                raise UserError(
                    f"--cache {folder}: the trials' nodes cannot read this folder, and the "
                    f"spectrograms ({total / 2**30:.1f} GiB) go to them as node copies of the cache; "
                    f"give --cache on object storage (s3://...) or a shared folder"
                )
            sources[h] = Source(folder, labels)
        log.info(
            f"spectrograms: to the trials as one memory-mapped copy of the cache per node ({total / 2**20:,.0f} MiB)"
        )
        return sources
    read = ray.remote(num_cpus=0, max_retries=3)(_labelled)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    for h, folder in folders.items():
        # a local cache is read on the driver's node (other nodes may not see it); a bucket anywhere
        task = read if folder.remote else read.options(scheduling_strategy=here)
        sources[h] = Source(folder, labels, task.remote(folder, labels))
    ray.wait([s.ref for s in sources.values()], num_returns=len(sources), fetch_local=False)
    log.info(
        f"spectrograms: to the trials through Ray's object store, once per node ({total / 2**20:,.0f} MiB; "
        f"{room / 2**20:,.0f} MiB per node)"
    )
    return sources


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_copies_folder() -> Path:
    """Where this node keeps its node copies: $AUTTENTION_NODE_COPIES, else the temporary folder."""
    return Path(os.environ.get(NODE_COPIES) or Path(tempfile.gettempdir()) / "auttention-search" / "node-copies")


def node_copy(folder: Location) -> spectro.Spectrograms:
    """The spectrograms of the cache `folder` from this node's copy, made by the first caller on the node
    (the others wait on its lock) and memory-mapped by every caller. The copy is named by the hash of the
    folder's settings.json (its corpus fingerprint, settings and skipped clips): never another folder's."""

    meta = spectro.made_from(folder)
    if meta is None:
        raise UserError(f"{folder}: no finished spectrograms here; run the search again to extract them")
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
    root = node_copies_folder()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.arrow"
    if not path.is_file():
        with _locked(root / f"{key}.lock"):
            if not path.is_file():
                _write_copy(folder, path)
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    return spectro.from_table(json.loads(table.schema.metadata[_META]), table)


def _write_copy(folder: Location, path: Path) -> None:

    meta, table = spectro.read_table(folder)
    table = table.replace_schema_metadata({_META: json.dumps(meta).encode()})
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)  # one chunk per column (read_table): one batch, mapped without copies
