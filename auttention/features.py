"""Feature sets: one row per clip (file_name, partition, label, feature columns), and their fusion.

Fusion is early fusion by concatenation, joined on file_name, never on row order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .io import atomic_path, refuse_non_finite, write_csv

KEYS = ["file_name", "partition", "label"]
SPEAKER = "speaker"  # an optional key column: each clip's speaker, where the corpus names them
FILE = "features.parquet"
MADE_FROM = b"auttention.made_from"
SAME_DATA = ("corpus", "spectrogram")  # what every fused set must share


def feature_frame(
    file_name: Sequence[str] | np.ndarray,
    partition: Sequence[str] | np.ndarray,
    label: Sequence[float] | np.ndarray,
    features: np.ndarray,
    name: str,
    speaker: Sequence[str] | np.ndarray | None = None,
) -> pd.DataFrame:
    """A feature set: key columns (and `speaker` where given) plus columns name_0000 ... for the (N, D)
    feature matrix."""
    cols = [f"{name}_{i:04d}" for i in range(features.shape[1])]
    frame = pd.DataFrame(np.asarray(features, dtype=np.float32), columns=cols)
    if speaker is not None:
        frame.insert(0, SPEAKER, list(speaker))
    frame.insert(0, "label", np.asarray(label, dtype=float))
    frame.insert(0, "partition", list(partition))
    frame.insert(0, "file_name", list(file_name))
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns of a set (everything but the keys and the speaker)."""
    return [c for c in frame.columns if c not in KEYS and c != SPEAKER]


def write_features(frame: pd.DataFrame, out: str | os.PathLike, csv: bool = False) -> Path:
    """Write out/features.parquet (and out/features.csv when asked), atomically."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # provenance (corpus fingerprint, settings hashes) in the file's own metadata: it travels with it
    meta = {**(table.schema.metadata or {}), MADE_FROM: json.dumps(frame.attrs.get("made_from") or {}).encode()}
    with atomic_path(out / FILE) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    if csv:
        write_csv(out / "features.csv", frame)
    return out


def read_features(folder: str | os.PathLike) -> pd.DataFrame:
    """Read a feature set written by `write_features` (a folder, or the .parquet/.csv file itself)."""
    path = Path(folder)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise UserError(f"{path}: feature file not found; create it with `auttention-search features`")
    try:
        if path.suffix == ".csv":
            frame, made_from = pd.read_csv(path), {}
        else:
            table = pq.read_table(path)
            made_from = json.loads((table.schema.metadata or {}).get(MADE_FROM, b"{}"))
            frame = table.to_pandas()
    except Exception as exc:  # noqa: BLE001 - pyarrow/pandas raise many types for a damaged file: one line
        raise UserError(f"{path}: cannot read features ({str(exc).splitlines()[0]})") from None
    frame.attrs = {"made_from": made_from}
    missing = [k for k in KEYS if k not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; not a feature set of this tool")
    if frame["file_name"].duplicated().any():
        raise UserError(
            f"{path}: file name {frame['file_name'][frame['file_name'].duplicated()].iloc[0]!r} "
            f"appears twice; re-extract the features"
        )
    refuse_non_finite(path, frame, feature_columns(frame), csv=path.suffix == ".csv")
    return frame


def fuse(tables: Sequence[pd.DataFrame], sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Concatenate feature sets column-wise, joined on file_name; refuse sets over different files."""
    if len(tables) < 2:
        raise UserError("fusion needs at least two feature sets")
    sources = list(sources or [f"set {i + 1}" for i in range(len(tables))])
    made_from = _same_data(tables, sources)
    base = tables[0][KEYS].set_index("file_name")
    names = set(base.index)
    fused = tables[0].set_index("file_name")
    seen = set(feature_columns(tables[0]))
    for table, source in zip(tables[1:], sources[1:]):
        other = set(table["file_name"])
        if other != names:
            only_a, only_b = sorted(names - other), sorted(other - names)
            example = (only_a or only_b)[0]
            raise UserError(
                f"{source} does not cover the same files as {sources[0]} "
                f"({len(only_a)} missing, {len(only_b)} extra, e.g. {example}); "
                f"extract both from the same spectrograms"
            )
        indexed = table.set_index("file_name").loc[base.index]
        if not (indexed["partition"] == base["partition"]).all():
            raise UserError(f"{source} assigns some files to other partitions than {sources[0]}")
        same = (indexed["label"] == base["label"]) | (indexed["label"].isna() & base["label"].isna())
        if not same.all():
            raise UserError(f"{source} has other labels than {sources[0]} for some files")
        cols = feature_columns(table)
        clash = seen.intersection(cols)
        if clash:
            raise UserError(
                f"{source} has feature columns that {sources[0]} also has (e.g. {min(clash)}); "
                f"fuse features of different networks"
            )
        seen.update(cols)
        fused = fused.join(indexed[cols])
    fused = fused.reset_index()
    fused.attrs = {"made_from": made_from}
    return fused


def _same_data(tables: Sequence[pd.DataFrame], sources: Sequence[str]) -> dict:
    """The fused provenance; refuses sets made from another corpus or other spectrograms than the first."""
    records = [f.attrs.get("made_from") or {} for f in tables]
    for record, source in zip(records[1:], sources[1:]):
        for key in SAME_DATA:
            if key in record and key in records[0] and record[key] != records[0][key]:
                raise UserError(
                    f"{source} was made from another {key} than {sources[0]} ({record[key]} vs "
                    f"{records[0][key]}); extract both from the same spectrograms"
                )
    merged: dict = {}
    for record in records:
        merged.update(record)
    return merged


def speakers(frame: pd.DataFrame, partition: str) -> np.ndarray | None:
    """Each clip's speaker of one partition, rows in `matrix`'s order; None where the set has no speakers."""
    if SPEAKER not in frame.columns:
        return None
    part = frame[frame["partition"] == partition].sort_values("file_name", kind="stable")
    return part[SPEAKER].to_numpy(dtype=object)


def matrix(frame: pd.DataFrame, partition: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, file_names) of one partition, rows in file_name order."""
    part = frame[frame["partition"] == partition].sort_values("file_name", kind="stable")
    x = part[feature_columns(frame)].to_numpy(dtype=np.float64)
    return x, part["label"].to_numpy(dtype=float), part["file_name"].to_numpy()


def fuse_folders(sets: Sequence[str], out: str | os.PathLike, csv: bool = False) -> pd.DataFrame:
    """The `fuse` step: the feature folders `sets` fused (joined on file_name) and written to `out`
    (also features.csv if `csv`); returns the fused feature set."""
    frame = fuse([read_features(s) for s in sets], list(sets))
    write_features(frame, out, csv=csv)
    return frame
