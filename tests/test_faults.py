"""Faults on local Ray: a trial worker killed mid-training, a trial out of memory, resources no node
has, an unwritable or full run disk. (Driver kill + --resume and diverging trials: test_search.py;
a node lost from a cluster: test_node_loss.py.)"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_SPACE

EXE = str(Path(sys.executable).parent / "auttention-search")


def _space(root: Path, name: str, **sections) -> Path:
    space = copy.deepcopy(TINY_SPACE)
    space["experiment"]["name"] = name
    for section, values in sections.items():
        space.setdefault(section, {}).update(values)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _trial_pids(session: int) -> list[int]:
    """Processes running a trial (Ray titles them ray::AuttentionTrial...) of the search started in
    `session` (its Ray workers inherit it): never another Ray's trials on this machine."""
    out = subprocess.run(["ps", "-eo", "pid=,sess=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [int(r[0]) for r in rows if len(r) == 3 and int(r[1]) == session and r[2].startswith("ray::AuttentionTrial")]


@pytest.mark.timeout(1200)  # bounds a search that never reaches epoch 2 (the loop below would wait on it)
def test_worker_killed_mid_training_resumes_from_its_checkpoint(tiny):
    root, corpus, _ = tiny
    space = _space(root, "killed", experiment={"num_samples": 2, "max_concurrent": 2, "confirm_top": 0},
                   seq2seq={"units": 32}, attention={"units": 32, "attention": "luong"},
                   scheduler={"type": "none", "max_epochs": 8, "grace_period": 1})
    cmd = [EXE, "run", str(space), "--data", str(corpus), "--runs", str(root / "runs"), "--cache",
           str(root / "cache"), "--no-dashboard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[str] = []
    try:
        victim = None
        for line in proc.stdout:
            seen.append(line)
            # the driver has taken this trial's epoch-2 checkpoint: kill the trial workers mid-training
            if " epoch 2/8:" in line:
                victim = root / "runs" / "killed" / "tune" / f"trial_{line.split()[0]}"
                for pid in _trial_pids(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                break
        assert victim is not None, "".join(seen[-30:])
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    trials = pd.read_csv(root / "runs" / "killed" / "trials.csv")
    assert (trials["status"] == "completed").all() and (trials["epochs"] == 8).all(), trials
    rows = _results(victim)
    epochs = [r["epoch"] for r in rows]
    # the retry went on from a checkpoint: its first epoch after the restore is past the first (from
    # scratch it would be epoch 1 again); it finished all 8
    restored = [r["epoch"] for r in rows if r["iterations_since_restore"] == 1 and r["epoch"] > 1]
    assert restored and epochs[-1] == 8, [(r["epoch"], r["iterations_since_restore"]) for r in rows]
    assert (root / "runs" / "killed" / "best" / "predictions.test.csv").is_file()


def test_out_of_memory_trial_is_an_error_and_the_rest_go_on(tiny):
    from search.runner import run_search

    root, corpus, _ = tiny
    space = _space(root, "oom", experiment={"num_samples": 2, "max_concurrent": 2, "confirm_top": 0},
                   resources={"cpu": 1, "memory_gb": 0.25},
                   attention={"units": {"choice": [8, 2048]}, "attention": "luong"},
                   scheduler={"type": "none", "max_epochs": 2, "grace_period": 1},
                   searcher={"type": "tpe", "n_startup_trials": 2,
                             "points_to_evaluate": [{"attention": {"units": 2048}, "seq2seq": {"units": 4}},
                                                    {"attention": {"units": 8}, "seq2seq": {"units": 4}}]})
    run_dir = run_search(str(space), data=str(corpus), runs=str(root / "runs"), cache=str(root / "cache"),
                         dashboard=False)
    trials = pd.read_csv(run_dir / "trials.csv")
    big = trials[trials["config.attention.units"] == 2048].iloc[0]
    small = trials[trials["config.attention.units"] == 8].iloc[0]
    assert big["status"] == "errored" and "out of memory" in big["error"] and "memory_gb=0.25" in big["error"]
    assert small["status"] == "completed"
    assert not (run_dir / "tune" / f"trial_{small['trial_id']}" / "error.txt").exists()  # never failed
    assert json.loads((run_dir / "best" / "metrics.json").read_text())["trial_id"] == small["trial_id"]
    # the failure is final: no retry trained the big model again
    assert (run_dir / "tune" / f"trial_{big['trial_id']}" / "final-error.txt").is_file()


def _run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.timeout(600)  # fails fast rather than waiting forever for a node: bounded here, not timed
def test_resources_no_node_has_fail_fast(tiny, tmp_path):
    root, corpus, _ = tiny
    space = _space(tmp_path, "greedy", resources={"cpu": 512})
    done = _run_cli(["run", str(space), "--data", str(corpus), "--runs", str(tmp_path / "runs"), "--cache",
                     str(root / "cache"), "--no-dashboard"])
    assert done.returncode == 2
    assert "error: resources: a trial asks for 512 CPU" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "greedy").exists()


def test_unwritable_or_full_run_disk_fails_before_work(tiny, tmp_path):
    root, corpus, space = tiny
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = _run_cli(["run", str(space), "--data", str(corpus), "--runs", str(blocker / "runs")])
    assert done.returncode == 2 and "cannot write here" in done.stderr and "choose another --runs" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    env = dict(os.environ, AUTTENTION_MIN_FREE_MB=str(10**12))  # more than any disk has
    done = _run_cli(["run", str(space), "--data", str(corpus), "--runs", str(tmp_path / "runs")], env=env)
    assert done.returncode == 2 and "MiB free on this disk" in done.stderr
    assert not (tmp_path / "runs").exists()
