"""The cluster path: cluster definitions, and a real two-node Ray cluster on 127.0.0.1
(cluster/local.sh) running a submitted search through the Jobs API, with token authentication."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "cluster" / "local.sh"


# --- the cluster definitions ------------------------------------------------------------------------

def _check_entrypoint(command: str) -> None:
    """The command is `auttention-search run <a space of this repo> ...` with flags `run` accepts."""
    from click.testing import CliRunner

    from search.cli import main
    from search.space import load_space

    args = shlex.split(command)
    assert args[:2] == ["auttention-search", "run"], command
    space = ROOT / "spaces" / Path(args[2]).name
    assert space.is_file(), f"{args[2]} is not a space of this repository"
    load_space(space)  # it validates
    known = {opt for p in main.commands["run"].params for opt in getattr(p, "opts", [])}
    flags = [a for a in args[3:] if a.startswith("--")]
    assert flags and set(flags) <= known, f"unknown flags in {command}: {set(flags) - known}"
    assert CliRunner().invoke(main, ["run", "--help"]).exit_code == 0


def test_cloud_launcher_yaml_is_valid():
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    validate_config(config)  # Ray's own schema for `ray up`
    types = config["available_node_types"]
    head, workers = types[config["head_node_type"]], [t for n, t in types.items() if n != config["head_node_type"]]
    assert "InstanceType" in head["node_config"]
    assert any(w["node_config"]["InstanceType"].startswith(("g", "p")) and w.get("max_workers", 0) > w.get("min_workers", 0)
               for w in workers), "no autoscaling GPU worker type"
    assert any("pip install" in c and "auttention-search" in c for c in config["setup_commands"])
    assert "." in config["file_mounts"].values()  # ships this repository
    assert any(x in config["rsync_exclude"] for x in (".git",)) and ".venv" in config["rsync_exclude"]
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in start
    # no shared file system: every node reaches the bucket through its instance profile
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())
    assert not any("mount" in c for c in config["setup_commands"])


def test_kuberay_rayjob_manifest():
    docs = list(yaml.safe_load_all((ROOT / "cluster" / "kuberay-rayjob.yaml").read_text()))
    job = docs[0]
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    _check_entrypoint(spec["entrypoint"])
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = cluster["workerGroupSpecs"]
    assert head["image"] and workers and all(w["template"]["spec"]["containers"][0]["image"] for w in workers)
    assert any("nvidia.com/gpu" in w["template"]["spec"]["containers"][0]["resources"]["limits"] for w in workers)
    for container in [head] + [w["template"]["spec"]["containers"][0] for w in workers] + \
            spec["submitterPodTemplate"]["spec"]["containers"]:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert any("secretRef" in e for e in container.get("envFrom", [])), "no bucket credentials"
        assert "volumeMounts" not in container  # corpus, cache and runs are in the bucket
    args = shlex.split(spec["entrypoint"])
    for flag in ("--data", "--cache", "--runs"):
        assert args[args.index(flag) + 1].startswith("s3://"), flag
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "/opt/auttention-search" in dockerfile


# --- a real two-node cluster on this machine ---------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """cluster/local.sh up with free ports and its own temp dir; down at the end. Yields its settings."""
    env = dict(os.environ, RAY_PORT=str(free_port()), DASHBOARD_PORT=str(free_port()), WORKERS="1",
               HEAD_CPUS="1", WORKER_CPUS="1", RAY=str(Path(sys.executable).parent / "ray"),
               RAY_TEMP_DIR=f"/tmp/aut-test-{os.getpid()}")
    env.pop("RAY_ADDRESS", None)
    up = subprocess.run(["bash", str(LOCAL), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield {"env": env, "address": f"http://127.0.0.1:{env['DASHBOARD_PORT']}", "root": tmp_path_factory.mktemp("cl")}
    finally:
        down = subprocess.run(["bash", str(LOCAL), "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


def _get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _token() -> str:
    return (Path.home() / ".ray" / "auth_token").read_text().strip()


def test_local_cluster_has_two_nodes_and_status(cluster):
    status = subprocess.run(["bash", str(LOCAL), "status"], env=cluster["env"], capture_output=True, text=True,
                            timeout=120)
    assert status.returncode == 0, status.stderr
    code, body = _get(cluster["address"] + "/nodes?view=summary", _token())
    assert code == 200
    alive = [n for n in json.loads(body)["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]
    assert len(alive) == 2
    again = subprocess.run(["bash", str(LOCAL), "up"], env=cluster["env"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already running" in again.stderr


def test_unauthenticated_clients_are_refused(cluster, tmp_path):
    code, body = _get(cluster["address"] + "/api/jobs/", None)
    assert code == 401, body
    code, _ = _get(cluster["address"] + "/api/jobs/", "not-the-token")
    assert code == 403
    assert _get(cluster["address"] + "/api/jobs/", _token())[0] == 200
    # a driver without the token cannot join the cluster (GCS refuses it)
    env = dict(os.environ, HOME=str(tmp_path), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token")
    env.pop("RAY_ADDRESS", None)
    code = ("import ray\ntry:\n    ray.init(address='127.0.0.1:%s', logging_level='ERROR')\n    print('JOINED')\n"
            "except Exception as exc:\n    print('REFUSED', type(exc).__name__)\n") % cluster["env"]["RAY_PORT"]
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "REFUSED" in done.stdout and "JOINED" not in done.stdout, done.stdout + done.stderr[-2000:]
    # and our CLI says so in one line
    cli = subprocess.run([str(Path(sys.executable).parent / "auttention-search"), "jobs", "--address",
                          cluster["address"]], env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "refused our token" in cli.stderr and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def submitted(cluster, tiny):
    """The tiny search submitted as a Ray job to the two-node cluster, waited for."""
    from search import jobs

    _, corpus, space = tiny
    root = cluster["root"]
    job_id, url = jobs.submit(str(space), address=cluster["address"], data=str(corpus), name="tiny-cluster",
                              runs=str(root / "runs"), cache=str(root / "cache"))
    deadline = time.monotonic() + 900
    while jobs.status(job_id, cluster["address"]) in ("PENDING", "RUNNING") and time.monotonic() < deadline:
        time.sleep(1)
    return job_id, url, root / "runs" / "tiny-cluster"


def test_submitted_search_runs_across_nodes(submitted, cluster, finished):
    from search import jobs

    job_id, url, run_dir = submitted
    log = jobs.logs(job_id, cluster["address"])
    assert jobs.status(job_id, cluster["address"]) == "SUCCEEDED", log[-3000:]
    assert url == f"{cluster['address']}/#/jobs/{job_id}"
    assert "search: 4 trials" in log and "report:" in log and "Traceback" not in log
    trials = pd.read_csv(run_dir / "trials.csv")
    nodes = {n for ids in trials["node_ids"].dropna() for n in ids.split()}
    assert len(trials) == 4 and len(nodes) == 2, trials[["trial_id", "node_ids"]]
    # the same outputs as a local run of the same space (the report's figures depend on how the
    # trials went: e.g. no importance plot when the trials leave too little to rank)
    local_dir, _ = finished
    listing = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "tune" not in p.relative_to(d).parts
                               and p.name != "optuna.db-journal" and not (p.parent.name == "report" and p.suffix == ".png"))
    assert listing(run_dir) == listing(local_dir)


def test_jobs_logs_and_stop_from_the_cli(submitted, cluster, tiny):
    job_id, _, _ = submitted
    exe = str(Path(sys.executable).parent / "auttention-search")
    address = ["--address", cluster["address"]]
    listed = subprocess.run([exe, "jobs", *address], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = subprocess.run([exe, "logs", job_id, *address], capture_output=True, text=True, timeout=120)
    assert logs.returncode == 0 and "completed after" in logs.stdout
    followed = subprocess.run([exe, "logs", job_id, "--follow", *address], capture_output=True, text=True, timeout=120)
    assert followed.returncode == 0 and "search: 4 trials" in followed.stdout
    unknown = subprocess.run([exe, "logs", "no-such-job", *address], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "no such job" in unknown.stderr and "Traceback" not in unknown.stderr
    # a running search is stopped through the Jobs API
    _, corpus, space = tiny
    root = cluster["root"]
    started = subprocess.run([exe, "submit", str(space), *address, "--data", str(corpus), "--name", "to-stop",
                              "--runs", str(root / "runs"), "--cache", str(root / "cache")],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    stopped_id = started.stdout.split("job: ")[1].split()[0]
    assert f"#/jobs/{stopped_id}" in started.stdout
    stopped = subprocess.run([exe, "stop", stopped_id, *address], capture_output=True, text=True, timeout=180)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr


def test_dashboard_api_lists_the_job_and_named_trial_actors(submitted, cluster):
    job_id, _, run_dir = submitted
    code, body = _get(cluster["address"] + "/api/jobs/", _token())
    listed = {j["submission_id"]: j for j in json.loads(body)}
    assert code == 200 and listed[job_id]["metadata"]["experiment"] == "tiny-cluster"
    code, body = _get(cluster["address"] + "/api/v0/actors?limit=1000&detail=1", _token())
    actors = json.loads(body)["data"]["result"]["result"]
    trials = [a for a in actors if a["class_name"] == "AuttentionTrial"]
    ids = set(pd.read_csv(run_dir / "trials.csv")["trial_id"])
    named = {a["repr_name"].split()[0].removeprefix("trial_") for a in trials if a["repr_name"]}
    assert ids <= named, (ids, named)
    assert all("attention.attention=" in a["repr_name"] for a in trials)


class _TokenProxy(http.server.BaseHTTPRequestHandler):
    """Adds the token to every request, as the dashboard's own login (a cookie) would for a browser."""

    target = token = ""

    def do_GET(self) -> None:
        request = urllib.request.Request(self.target + self.path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body, code, kind = response.read(), response.status, response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            body, code, kind = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _dom(chromium: str, url: str, profile: Path) -> str:
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
                           "--virtual-time-budget=20000", "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_dashboard_pages_in_headless_chromium(submitted, cluster, tmp_path):
    from conftest import chromium_path

    chromium = chromium_path()
    job_id, _, run_dir = submitted
    handler = type("Proxy", (_TokenProxy,), {"target": cluster["address"], "token": _token()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        job_page = _dom(chromium, f"{base}/#/jobs/{job_id}", tmp_path / "p1")
        assert job_id in job_page and "SUCCEEDED" in job_page
        actors_page = _dom(chromium, f"{base}/#/actors", tmp_path / "p2")
        ids = pd.read_csv(run_dir / "trials.csv")["trial_id"]
        assert "AuttentionTrial" in actors_page and all(f"trial_{i}" in actors_page for i in ids)
    finally:
        server.shutdown()
