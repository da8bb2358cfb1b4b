"""Searches as Ray Jobs on a running cluster: submit, list, logs, stop (Ray's JobSubmissionClient).

A submitted job ships this package's two source folders and the search-space YAML (never data,
runs, .git or a virtualenv) and runs `python -m search run space.yaml ...` on the head node, which
connects to the cluster through $RAY_ADDRESS. The corpus, the run folder and the cache are paths
as the cluster sees them.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import overload

from auttention.errors import UserError

from .prepare import override
from .raysession import QUIET_ENV, use_token_auth
from .space import load_space

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TOOL = "auttention-search"  # job metadata marks our jobs among others on a shared cluster
PACKAGES = ("auttention", "search")
SPACE_FILE = "space.yaml"


def dashboard_address(address: str | None) -> str:
    """The dashboard/Jobs API address: --address (the CLI reads $RAY_API_SERVER_ADDRESS into it), else
    127.0.0.1:8265."""
    address = address or DEFAULT_ADDRESS
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def client(address: str | None):
    """A JobSubmissionClient for the cluster; one clear line when it cannot be reached or refuses us."""
    use_token_auth()
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError (a refused token), ValueError (a URL)
        raise UserError(f"--address {url}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "401" in text or "403" in text or "uthenticat" in text or "token" in text.lower():
        return (
            "the cluster refused our token; on the cluster's head run `ray get-auth-token` and set "
            "RAY_AUTH_TOKEN to it here (or copy it to ~/.ray/auth_token)"
        )
    if "Failed to connect" in text or "Connection" in text or "refused" in text:
        return "no Ray dashboard answers there; start a cluster (cluster/local.sh up) or check the address"
    return text.splitlines()[0] if text else type(exc).__name__


def _call(address: str | None, what: Callable):
    try:
        return what()
    except UserError:
        raise
    except RuntimeError as exc:
        raise UserError(f"--address {dashboard_address(address)}: {_reason(exc)}") from None


def stage(space_path: str) -> Path:
    """A temporary working_dir with the package sources and the space (removed by the caller)."""
    root = Path(__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix="auttention-job-"))
    for package in PACKAGES:
        shutil.copytree(root / package, folder / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copyfile(space_path, folder / SPACE_FILE)
    return folder


def entrypoint(
    name: str,
    runs: str,
    data: str | None,
    cache: str | None,
    num_samples: int | None,
    time_budget: str | None,
    resume: bool,
    on_bad_audio: str,
    delivery: str = "auto",
) -> str:
    """The command the job runs on the head node (inside the shipped working_dir)."""

    args = [
        "python",
        "-m",
        "search",
        "run",
        SPACE_FILE,
        "--name",
        name,
        "--runs",
        runs,
        "--on-bad-audio",
        on_bad_audio,
        "--delivery",
        delivery,
    ]
    for flag, value in (
        ("--data", data),
        ("--cache", cache),
        ("--num-samples", num_samples),
        ("--time-budget", time_budget),
    ):
        if value is not None:
            args += [flag, str(value)]
    if resume:
        args.append("--resume")
    return " ".join(shlex.quote(a) for a in args)


@overload
def _cluster_path(path: str) -> str: ...
@overload
def _cluster_path(path: str | None) -> str | None: ...
def _cluster_path(path: str | None) -> str | None:
    """A path for the job: absolute (the job runs in a temporary working_dir), from here."""
    return path if path is None or "://" in path else str(Path(path).expanduser().resolve())


def submit(
    space_path: str,
    *,
    address: str | None = None,
    data: str | None = None,
    name: str | None = None,
    runs: str = "runs",
    cache: str | None = None,
    num_samples: int | None = None,
    time_budget: str | None = None,
    resume: bool = False,
    on_bad_audio: str = "fail",
    delivery: str = "auto",
) -> tuple[str, str]:
    """Submit a search as a Ray job; returns (job id, dashboard URL of the job)."""
    space = override(load_space(space_path), name, num_samples, time_budget)  # a bad space fails here, not there
    name = space.experiment.name
    jobs = client(address)
    folder = stage(space_path)
    job_id = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        command = entrypoint(
            name,
            _cluster_path(runs),
            _cluster_path(data),
            _cluster_path(cache),
            num_samples,
            time_budget,
            resume,
            on_bad_audio,
            delivery,
        )
        runtime_env = {"working_dir": str(folder), "env_vars": dict(QUIET_ENV)}
        metadata = {"tool": TOOL, "experiment": name, "space": Path(space_path).name}
        deadline = time.monotonic() + 120
        while True:
            try:
                job_id = jobs.submit_job(
                    entrypoint=command,
                    submission_id=job_id,
                    runtime_env=runtime_env,
                    entrypoint_num_cpus=0,
                    metadata=metadata,
                )
                break
            except RuntimeError as exc:
                # a cluster that has just started has no job agent yet: Ray asks us to try again
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise UserError(f"--address {dashboard_address(address)}: {_reason(exc)}") from None
                time.sleep(2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return job_id, f"{dashboard_address(address)}/#/jobs/{job_id}"


def list_jobs(address: str | None = None, everything: bool = False) -> list[dict]:
    """Jobs on the cluster (ours unless `everything`), newest first."""
    jobs = client(address)
    rows = []
    for job in _call(address, jobs.list_jobs):
        metadata = job.metadata or {}
        if not everything and metadata.get("tool") != TOOL:
            continue
        rows.append(
            {
                "job": job.submission_id or job.job_id,
                "status": str(job.status.value),
                "experiment": metadata.get("experiment", ""),
                "start_time": job.start_time or 0,
                "end_time": job.end_time,
                "message": (job.message or "").splitlines()[0] if job.message else "",
            }
        )
    return sorted(rows, key=lambda r: r["start_time"], reverse=True)


def _known(jobs, address: str | None, job_id: str):
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise UserError(
                f"job {job_id!r}: no such job on {dashboard_address(address)}; `auttention-search jobs` lists them"
            ) from None
        raise UserError(f"--address {dashboard_address(address)}: {_reason(exc)}") from None


def logs(job_id: str, address: str | None = None) -> str:
    """Everything the job has printed so far."""
    jobs = client(address)
    _known(jobs, address, job_id)
    return _call(address, lambda: jobs.get_job_logs(job_id))


def follow(job_id: str, address: str | None = None) -> Iterator[str]:
    """The job's output as it comes, until the job ends."""

    jobs = client(address)
    _known(jobs, address, job_id)
    stream = jobs.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def status(job_id: str, address: str | None = None) -> str:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    jobs = client(address)
    return str(_known(jobs, address, job_id).status.value)


def stop(job_id: str, address: str | None = None, wait_s: float = 60) -> str:
    """Stop the job (Ray sends SIGTERM, then SIGKILL) and wait for it to end; its final status."""
    jobs = client(address)
    _known(jobs, address, job_id)
    _call(address, lambda: jobs.stop_job(job_id))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = str(jobs.get_job_status(job_id).value)
        if state in ("STOPPED", "SUCCEEDED", "FAILED"):
            return state
        time.sleep(1)
    return str(jobs.get_job_status(job_id).value)
