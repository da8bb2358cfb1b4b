"""A worker node of a real local cluster (cluster/local.sh) dies mid-search: its trials are
rescheduled on the node left and continue from their checkpoints; the search completes.
The slowest test (about 2-3 minutes); marked `slow`, and .ci/run runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY_SPACE
from test_cluster import LOCAL, _free_port, _get, _token

pytestmark = pytest.mark.slow


def _node_pids(temp_dir: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", temp_dir], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_node_removed_mid_search_trials_rescheduled(tiny, tmp_path):
    from search import jobs

    root, corpus, _ = tiny
    temp_dir = f"/tmp/aut-loss-{os.getpid()}"
    env = dict(os.environ, RAY_PORT=str(_free_port()), DASHBOARD_PORT=str(_free_port()), WORKERS="1",
               HEAD_CPUS="1", WORKER_CPUS="1", RAY=str(Path(sys.executable).parent / "ray"), RAY_TEMP_DIR=temp_dir)
    env.pop("RAY_ADDRESS", None)
    address = f"http://127.0.0.1:{env['DASHBOARD_PORT']}"
    up = subprocess.run(["bash", str(LOCAL), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        space = dict(TINY_SPACE, experiment={**TINY_SPACE["experiment"], "name": "loss", "num_samples": 2},
                     seq2seq={**TINY_SPACE["seq2seq"], "units": 32},
                     scheduler={"type": "none", "max_epochs": 8, "grace_period": 1})
        path = tmp_path / "loss.yaml"
        path.write_text(yaml.safe_dump(space))
        job_id, _ = jobs.submit(str(path), address=address, data=str(corpus), runs=str(tmp_path / "runs"),
                                cache=str(tmp_path / "cache"))
        _, body = _get(address + "/nodes?view=summary", _token())
        worker = [n["raylet"]["nodeId"] for n in json.loads(body)["data"]["summary"]
                  if not n["raylet"].get("isHeadNode")][0]
        # wait until a trial on the worker node has saved a checkpoint, then kill that node outright
        tune_dir, killed, deadline = tmp_path / "runs" / "loss" / "tune", False, time.monotonic() + 400
        while not killed and time.monotonic() < deadline:
            time.sleep(0.5)
            for trial in tune_dir.glob("trial_*"):
                checkpoints = sorted(trial.glob("checkpoint_*"))
                metrics = checkpoints[-1] / "metrics.json" if checkpoints else None
                if metrics and metrics.is_file() and json.loads(metrics.read_text())["node_id"] == worker:
                    for pid in _node_pids(f"{temp_dir}/node1"):
                        os.kill(pid, signal.SIGKILL)
                    killed = True
                    break
        assert killed, jobs.logs(job_id, address)[-3000:]
        while jobs.status(job_id, address) in ("PENDING", "RUNNING") and time.monotonic() < deadline + 600:
            time.sleep(3)
        log = jobs.logs(job_id, address)
        assert jobs.status(job_id, address) == "SUCCEEDED", log[-3000:]
        trials = pd.read_csv(tmp_path / "runs" / "loss" / "trials.csv")
        assert (trials["status"] == "completed").all() and (trials["epochs"] == 8).all(), trials
        moved = trials[trials["node_ids"].str.split().str.len() == 2]
        assert len(moved) >= 1, trials[["trial_id", "node_ids"]]  # it went on, elsewhere
        assert (tmp_path / "runs" / "loss" / "best" / "predictions.test.csv").is_file()
    finally:
        subprocess.run(["bash", str(LOCAL), "down"], env=env, capture_output=True, text=True, timeout=120)
