"""Atomic writes: an interrupted write leaves the old file (or nothing) and no temporary behind;
and a process killed in the middle of writing leaves the previous version whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from auttention.io import atomic_dir, atomic_path, write_csv, write_json


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "trials.csv"
    write_csv(target, pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("a\n1\n")  # half of a new version
            raise RuntimeError("interrupted")
    assert pd.read_csv(target)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]


def test_failed_folder_write_leaves_nothing(tmp_path):
    target = tmp_path / "spectrograms"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "part-00000.parquet").write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "settings.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["settings.json"]


def test_killed_writer_leaves_the_previous_version(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"version": 1})
    code = ("import sys, time\nfrom auttention.io import atomic_path\n"
            f"with atomic_path({str(target)!r}) as tmp:\n"
            "    with open(tmp, 'w') as f:\n        f.write('{\"version\": 2, ')\n        f.flush()\n"
            "        print('writing', flush=True)\n        time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(target.read_text()) == {"version": 1}
    # what a SIGKILL cannot clean up is a hidden temporary beside it, never a half-written target
    assert all(p.name == "metrics.json" or (p.name.startswith(".metrics.json.") and p.suffix == ".tmp")
               for p in tmp_path.iterdir())
