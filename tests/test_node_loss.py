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
from conftest import TINY_SPACE, free_port
from test_cluster import LOCAL, _get, _token

pytestmark = pytest.mark.slow
MAX_EPOCHS = 30  # many short epochs, so that the node dies mid-training even when an epoch takes 0.1 s


def _node_pids(temp_dir: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", temp_dir], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_node_removed_mid_search_trials_rescheduled(tiny, tmp_path):
    from search import jobs

    root, corpus, _ = tiny
    temp_dir = f"/tmp/aut-loss-{os.getpid()}"
    env = dict(os.environ, RAY_PORT=str(free_port()), DASHBOARD_PORT=str(free_port()), WORKERS="1",
               HEAD_CPUS="1", WORKER_CPUS="1", RAY=str(Path(sys.executable).parent / "ray"), RAY_TEMP_DIR=temp_dir)
    env.pop("RAY_ADDRESS", None)
    address = f"http://127.0.0.1:{env['DASHBOARD_PORT']}"
    up = subprocess.run(["bash", str(LOCAL), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        space = dict(TINY_SPACE, experiment={**TINY_SPACE["experiment"], "name": "loss", "num_samples": 2, "confirm_top": 0},
                     seq2seq={**TINY_SPACE["seq2seq"], "units": 32},
                     scheduler={"type": "none", "max_epochs": MAX_EPOCHS, "grace_period": 1})
        path = tmp_path / "loss.yaml"
        path.write_text(yaml.safe_dump(space))
        job_id, _ = jobs.submit(str(path), address=address, data=str(corpus), runs=str(tmp_path / "runs"),
                                cache=str(tmp_path / "cache"))
        _, body = _get(address + "/nodes?view=summary", _token())
        worker = [n["raylet"]["nodeId"] for n in json.loads(body)["data"]["summary"]
                  if not n["raylet"].get("isHeadNode")][0]
        # wait until a trial on the worker node has saved a checkpoint early in its training, then kill that
        # node outright: the trial is certain to be mid-training, so it has to go on elsewhere to finish
        tune_dir, victim, deadline = tmp_path / "runs" / "loss" / "tune", None, time.monotonic() + 400
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            for trial in tune_dir.glob("trial_*"):
                checkpoints = sorted(trial.glob("checkpoint_*"))
                metrics = checkpoints[-1] / "metrics.json" if checkpoints else None
                if not (metrics and metrics.is_file()):
                    continue
                saved = json.loads(metrics.read_text())
                if saved["node_id"] == worker and saved["epoch"] <= MAX_EPOCHS // 4:
                    for pid in _node_pids(f"{temp_dir}/node1"):
                        os.kill(pid, signal.SIGKILL)
                    victim = (trial.name, saved["epoch"])
                    break
        assert victim, jobs.logs(job_id, address)[-3000:]
        while jobs.status(job_id, address) in ("PENDING", "RUNNING") and time.monotonic() < deadline + 600:
            time.sleep(3)
        log = jobs.logs(job_id, address)
        assert jobs.status(job_id, address) == "SUCCEEDED", log[-3000:]
        trials = pd.read_csv(tmp_path / "runs" / "loss" / "trials.csv", dtype={"trial_id": str})
        shown = trials[["trial_id", "status", "epochs", "node_ids"]].to_string()
        assert (trials["status"] == "completed").all() and (trials["epochs"] == MAX_EPOCHS).all(), shown
        killed = trials[[victim[0].endswith(t) for t in trials["trial_id"]]]
        assert len(killed) == 1, (victim, shown)
        # it went on, elsewhere: its epochs came from both nodes
        assert len(killed["node_ids"].iloc[0].split()) == 2, (victim, shown, log[-3000:])
        assert (tmp_path / "runs" / "loss" / "best" / "predictions.test.csv").is_file()
    finally:
        subprocess.run(["bash", str(LOCAL), "down"], env=env, capture_output=True, text=True, timeout=120)
