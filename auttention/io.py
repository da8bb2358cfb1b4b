"""Atomic file writes (every output appears whole or not at all), and the check every table read gets: its
numbers finite."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            # Move the old folder aside first so a crash never leaves neither.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj: Any) -> str:
    """JSON as this project writes it: sorted keys, indented, numpy values as plain numbers."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    write_text(path, json_text(obj))


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; None when it is missing or unreadable (a record that cannot be trusted)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Write YAML atomically (safe dumper, keys in insertion order)."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV atomically, without the index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def refuse_non_finite(path: str | os.PathLike, frame, columns: Sequence[str], csv: bool = True) -> None:
    """One line naming the file, the row (a CSV's line, counting the header as line 1) and the column of the
    first value in `columns` that is not a finite number; nothing when all are."""
    if not len(columns) or not len(frame):
        return
    table = frame[list(columns)]
    if not all(pd.api.types.is_numeric_dtype(dtype) for dtype in table.dtypes):  # text where a number belongs
        table = table.apply(lambda column: pd.to_numeric(column, errors="coerce"))
    values = table.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    row, col = (int(i[0]) for i in np.nonzero(bad))
    where = f"line {row + 2}" if csv else f"row {row + 1}"
    name = f" ({frame['file_name'].iloc[row]})" if "file_name" in frame.columns else ""
    value = frame[columns[col]].iloc[row]
    shown = "empty or nan" if pd.isna(value) else repr(value) if isinstance(value, str) else str(value)
    raise UserError(
        f"{Path(path)}, {where}{name}: {columns[col]} is {shown}, not a finite number; fix or remove that row"
    )


def _json_default(value: Any) -> Any:

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
