"""Shared helpers of the benchmarks: machine description, load, timing, tables, JSON results.

Every benchmark records the machine it ran on and the load average before and after, and reports
ratios measured back to back in the same process, so that the load other programs put on a shared
machine affects both sides of a ratio alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# the repository first: bench/search.py must not shadow the `search` package
sys.path.insert(0, str(ROOT))

from auttention import TF_LOG_LEVEL  # noqa: E402  (after the path: the repository's package)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)

PACKAGES = ("tensorflow", "keras", "ray", "optuna", "librosa", "numpy", "scipy", "soxr", "soundfile",
            "pyarrow", "pillow", "psutil")


def import_psutil():
    """psutil: installed, or the copy Ray ships (ray/thirdparty_files), which importing ray puts on sys.path."""
    try:
        import psutil
    except ImportError:
        import psutil
        import ray  # noqa: F401  (adds ray/thirdparty_files, which holds psutil, to sys.path)
    return psutil


def psutil_path() -> str:
    """The folder holding the psutil package this process imports: put it on a bare process' sys.path."""
    return str(Path(import_psutil().__file__).resolve().parents[1])


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Total memory in GiB."""
    try:
        return round(import_psutil().virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def git_commit() -> str:
    """The checkout's commit (with '+dirty' if tracked files differ from it)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "memory_gib": memory_gib(),
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "git_commit": git_commit()}


def corpus_folder(data: str | None) -> Path:
    """The corpus to benchmark on: --data, or the built-in demo corpus (synthesised once into the cache)."""
    if data:
        return Path(data)
    from search.prepare import CACHE_ENV, demo_corpus, home_cache

    return demo_corpus(home_cache(os.environ.get(CACHE_ENV)), 0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def summary(times: Sequence[float]) -> dict[str, float]:
    """Best, median and all of a list of timings (seconds)."""
    return {"best": min(times), "median": statistics.median(times), "all": [round(t, 4) for t in times]}


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    rows = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def markdown_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """The same table in Markdown (for docs/PERFORMANCE.md)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return "" if v is None else str(v)


def write_result(name: str, payload: dict[str, Any], argv: Sequence[str] | None = None) -> Path:
    """Write bench/results/<name>.json (atomically) with the machine, load and command added."""
    from auttention.io import write_json

    argv = list(sys.argv if argv is None else argv)
    record = {"benchmark": name, "command": " ".join([".venv/bin/python", *argv]),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info(), **payload}
    path = RESULTS / f"{name}.json"
    write_json(path, _relative(record))
    return path


def _relative(value: Any) -> Any:
    """The record with paths inside the repository made relative to it (and the home folder as ~)."""
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(v) for v in value]
    if isinstance(value, str):
        return value.replace(f"{ROOT}/", "").replace(str(Path.home()), "~")
    return value


def ray_niceness(value: int) -> None:
    """Set the niceness Ray gives its workers (RAY_worker_niceness; Ray's default is 15) before Ray starts.

    At 15 a worker gets a few percent of a core while any ordinary program wants that core, so on a
    machine shared with other work the Ray figures would measure the other work; the in-process
    figures they are compared with run at 0."""
    os.environ["RAY_worker_niceness"] = str(value)


class CpuSampler:
    """Samples CPU use in a background thread: the whole machine's busy fraction (from /proc/stat) and the
    CPU seconds of this process and all its descendants (Ray's raylet, workers and trial actors).

    A descendant's CPU time is its last sample before it ended, so up to one interval per process is lost.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time since start, busy fraction of all CPUs)
        self._tree: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = self._t1 = time.perf_counter()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    def _sample_tree(self) -> None:
        psutil = import_psutil()
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    self._tree[(proc.pid, proc.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def _run(self) -> None:
        last = self._read()
        while not self._stop.wait(self.interval):
            now = self._read()
            total, idle = now[0] - last[0], now[1] - last[1]
            if total > 0:
                self.samples.append((time.perf_counter() - self._t0, 1.0 - idle / total))
            last = now
            self._sample_tree()

    def __enter__(self) -> "CpuSampler":
        self._sample_tree()
        self._start_cpu = sum(self._tree.values())
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_tree()
        self._t1 = time.perf_counter()

    @property
    def wall(self) -> float:
        """Seconds sampled."""
        return self._t1 - self._t0

    @property
    def machine_busy(self) -> float:
        """Mean busy fraction of all CPUs of the machine (every program, not only ours)."""
        return statistics.fmean(b for _, b in self.samples) if self.samples else float("nan")

    @property
    def tree_cpu_seconds(self) -> float:
        """CPU seconds this process and its descendants used while sampled."""
        return sum(self._tree.values()) - self._start_cpu

    @property
    def tree_busy(self) -> float:
        """Our process tree's CPU seconds over (wall time x CPUs): how busy we kept the machine."""
        return self.tree_cpu_seconds / (self.wall * (os.cpu_count() or 1)) if self.wall > 0 else float("nan")


def select_c(x_train, y_train, x_devel, y_devel, cfg):
    """C chosen on devel (scoring.validation devel, the paper's): the SVR fit on train for the whole grid."""
    import numpy as np

    from auttention.validation import FIT_ONLY, cross_validate

    folds = np.r_[np.full(len(y_train), FIT_ONLY), np.zeros(len(y_devel), int)]
    return cross_validate(np.vstack([x_train, x_devel]), np.concatenate([y_train, y_devel]), folds, cfg)
