"""Search efficiency at equal compute budget: best fusion devel rho over wall time for three strategies.

    .venv/bin/python bench/search.py [--budget 5m] [--data DIR] [--runs DIR] [--only a b c]

Each strategy is a real search through the product (search.runner.run_search) on the demo corpus
(or --data), from a space derived from spaces/demo.yaml and written to a temporary folder:

(a) tpe-asha     spaces/demo.yaml as is: Optuna TPE + ASHA, 2 trials at a time;
(b) random-fifo  the same space with searcher.type random and scheduler.type none (every trial runs
                 all its epochs);
(c) tpe-serial   (a) with experiment.max_concurrent 1 (one trial at a time).

All three get the same time budget (experiment.time_budget; no new trial starts after it) and
enough num_samples that the budget, not the trial count, ends them; the same seed, and the space's
points_to_evaluate (the hand-picked start) unless --no-start-point. The spectrogram cache is
warmed before the first search so that no strategy pays for extraction.

From each run's Tune results (runs/NAME/tune/trial_*/result.json) the best-so-far curve of the
fusion devel rho over time since the search started is built; also trials completed / stopped,
the time to reach the best, the CPU busy fraction of our process tree (driver + Ray workers,
sampled with psutil) and of the whole machine, and per trial the share of its wall time that is
not spent in epochs (Tune's time_total_s vs the sum of the epoch_seconds the trial reports: process
and TensorFlow start-up, reading the spectrograms, checkpoints, Tune's bookkeeping).

Ray's workers (the trials) run at niceness 0 (--ray-niceness; Ray's default of 15 lets any other
program on a shared machine starve them). Prints tables and writes bench/results/search.json
(curves included). Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, CpuSampler, corpus_folder, loadavg, ray_niceness, table, write_result  # noqa: E402

STRATEGIES = {
    "a": ("tpe-asha", "TPE + ASHA, 2 at a time (spaces/demo.yaml)", {}),
    "b": ("random-fifo", "random search, no early stopping, 2 at a time",
          {"searcher": {"type": "random"}, "scheduler": {"type": "none"}}),
    "c": ("tpe-serial", "TPE + ASHA, one trial at a time", {"experiment": {"max_concurrent": 1}}),
}


def derived_space(base: dict, changes: dict, budget: str, num_samples: int, start_point: bool) -> dict:
    """The base space with `changes` merged into its sections, the budget and trial count set."""
    space = copy.deepcopy(base)
    for section, values in changes.items():
        space.setdefault(section, {}).update(values)
    space["experiment"]["time_budget"] = budget
    space["experiment"]["num_samples"] = num_samples
    if not start_point:
        space.get("searcher", {}).pop("points_to_evaluate", None)
    if space.get("scheduler", {}).get("type") == "none":
        space["scheduler"] = {"type": "none", "max_epochs": space["scheduler"].get("max_epochs", 10)}
    return space


def read_results(run_dir: Path) -> list[dict]:
    """Every result Tune recorded for every trial of a run (result.json lines), with the trial id."""
    out = []
    for path in sorted((run_dir / "tune").glob("trial_*/result.json")):
        for line in path.read_text().splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue
            result["trial"] = path.parent.name
            out.append(result)
    return out


def curve(results: list[dict], t0: float, metric: str = "fusion_score") -> list[tuple[float, float]]:
    """Best-so-far metric at each time (s since t0) it improved, from results with a unix timestamp."""
    points, best = [], -math.inf
    for r in sorted(results, key=lambda r: r["timestamp"]):
        value = r.get(metric)
        if value is None or not math.isfinite(value):
            continue
        if value > best:
            best = value
            points.append((round(r["timestamp"] - t0, 1), round(best, 4)))
    return points


def best_at(points: list[tuple[float, float]], t: float) -> float:
    """The best-so-far value at time t (NaN before the first result)."""
    value = math.nan
    for when, best in points:
        if when > t:
            break
        value = best
    return value


def time_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """When the curve first reached `target` (None: never)."""
    for when, best in points:
        if best >= target - 1e-12:
            return when
    return None


def trial_overheads(results: list[dict]) -> list[dict]:
    """Per trial: Tune's wall time, the sum of epoch_seconds, and the share spent outside epochs."""
    by_trial: dict[str, list[dict]] = {}
    for r in results:
        by_trial.setdefault(r["trial"], []).append(r)
    out = []
    for trial, rs in sorted(by_trial.items()):
        last = max(rs, key=lambda r: r.get("time_total_s", 0))
        total = float(last.get("time_total_s", 0.0))
        epochs = sum(float(r.get("epoch_seconds", 0.0)) for r in rs)
        first_iter = float(min(rs, key=lambda r: r.get("training_iteration", 0)).get("time_this_iter_s", 0.0))
        first_epoch = float(min(rs, key=lambda r: r.get("training_iteration", 0)).get("epoch_seconds", 0.0))
        out.append({"trial": trial, "epochs": int(last.get("epoch", 0)), "max_epochs": int(last.get("max_epochs", 0)),
                    "time_total_s": total, "sum_epoch_seconds": epochs,
                    "overhead_share": (total - epochs) / total if total > 0 else math.nan,
                    "start_up_seconds": first_iter - first_epoch})
    return out


def run_strategy(key: str, space: dict, runs: Path, budget: str, data: str | None, echo_prefix: str) -> dict:
    """Run one search through the product; collect its curve and statistics."""
    from auttention.io import write_yaml
    from search.runner import run_search

    name, _, _ = STRATEGIES[key]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_name = f"bench-{name}-{stamp}"
    space_path = runs / f"{run_name}.yaml"
    write_yaml(space_path, space)
    log: list[tuple[float, str]] = []
    marks: dict[str, float] = {}

    class Echo(logging.Handler):  # the product's log lines (auttention/log.py), timed as they come
        def emit(self, record: logging.LogRecord) -> None:
            echo(record.getMessage())

    def echo(line: str) -> None:
        now = time.time()
        log.append((now, line))
        if line.startswith("search: ") and "trials," in line and "at a time" in line:
            marks.setdefault("search_start", now)  # printed just before tuner.fit()
        if line.strip():
            print(f"{echo_prefix} {line.strip()}", flush=True)

    load_before = loadavg()
    t_call = time.time()
    handler, product = Echo(), logging.getLogger("search")
    product.addHandler(handler)
    product.setLevel(logging.INFO)
    try:
        with CpuSampler(interval=1.0) as cpu:
            run_dir = run_search(str(space_path), data=data, name=run_name, runs=str(runs), dashboard=False)
    finally:
        product.removeHandler(handler)
    t_end = time.time()
    results = read_results(run_dir)
    t0 = marks.get("search_start", t_call)
    last_result = max((r["timestamp"] for r in results), default=t0)
    points = curve(results, t0)
    overheads = trial_overheads(results)
    statuses = _statuses(run_dir)
    total_trial_s = sum(o["time_total_s"] for o in overheads)
    concurrency = int(space["experiment"].get("max_concurrent", 1))
    trials_wall = last_result - t0
    return {
        "strategy": name, "run_dir": str(run_dir), "space": space, "budget": budget,
        "load_before": load_before, "load_after": loadavg(),
        "call_seconds": t_end - t_call, "setup_seconds": t0 - t_call, "trials_wall_seconds": trials_wall,
        "trials": sum(statuses.values()) if statuses else len(overheads), "trials_with_results": len(overheads),
        "statuses": statuses,
        "final_best": points[-1][1] if points else math.nan,
        "time_to_best": points[-1][0] if points else math.nan,
        "curve": points,
        "cpu_busy_tree": cpu.tree_busy, "cpu_busy_machine": cpu.machine_busy, "cpu_seconds_tree": cpu.tree_cpu_seconds,
        "cpu_sampled_seconds": cpu.wall,
        "overhead_share_median": _median([o["overhead_share"] for o in overheads]),
        "overhead_share_total": (total_trial_s - sum(o["sum_epoch_seconds"] for o in overheads)) / total_trial_s
        if total_trial_s else math.nan,
        "trial_start_up_seconds_median": _median([o["start_up_seconds"] for o in overheads]),
        "slot_utilisation": total_trial_s / (trials_wall * concurrency) if trials_wall > 0 else math.nan,
        "per_trial": overheads,
    }


def _statuses(run_dir: Path) -> dict[str, int]:
    import pandas as pd

    path = run_dir / "trials.csv"
    if not path.is_file():
        return {}
    return {str(k): int(v) for k, v in pd.read_csv(path)["status"].value_counts().items()}


def _median(values: list[float]) -> float:
    import statistics

    values = [v for v in values if v == v]
    return statistics.median(values) if values else math.nan


def warm_cache(space: dict, data: str | None) -> None:
    """Extract every spectrogram setting of the space once, so that no strategy pays for it."""
    import ray

    from auttention.corpus import read_corpus
    from search.extract import ensure_spectrograms
    from search.prepare import CACHE_ENV, home_cache
    from search.raysession import start_ray
    from search.space import load_space

    with tempfile.TemporaryDirectory() as tmp:
        from auttention.io import write_yaml

        write_yaml(Path(tmp) / "space.yaml", space)
        settings = load_space(Path(tmp) / "space.yaml").spectrogram_settings()
    corpus = read_corpus(corpus_folder(data))
    start_ray(None, dashboard=False)
    try:
        ensure_spectrograms(corpus, settings, home_cache(os.environ.get(CACHE_ENV)), lambda line: print(f"[cache] {line}"))
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--budget", default="5m", help="time budget of each search (e.g. 300, 5m, 1h); default 5m")
    parser.add_argument("--data", help="corpus folder or manifest CSV (default: the built-in demo corpus)")
    parser.add_argument("--space", default=str(ROOT / "spaces" / "demo.yaml"), help="the base space")
    parser.add_argument("--runs", help="keep the run folders here (default: a temporary folder, deleted)")
    parser.add_argument("--only", nargs="+", choices=tuple(STRATEGIES), default=list(STRATEGIES),
                        help="strategies to run (a: TPE+ASHA, b: random without stopping, c: one at a time)")
    parser.add_argument("--num-samples", type=int, default=1000, help="trial cap (the budget should end a search)")
    parser.add_argument("--no-start-point", action="store_true", help="drop the space's points_to_evaluate")
    parser.add_argument("--ray-niceness", type=int, default=0,
                        help="niceness of Ray's workers, i.e. of the trials (Ray's own default is 15, which on a "
                             "machine shared with other programs starves them)")
    args = parser.parse_args()
    ray_niceness(args.ray_niceness)

    from auttention import import_tensorflow_quietly
    from auttention.config import load_yaml
    from search.space import parse_duration

    import_tensorflow_quietly()
    budget_s = parse_duration(args.budget, "--budget")
    base = load_yaml(args.space)
    load_start = loadavg()
    print(f"base space {args.space}; budget {args.budget} each; load average {load_start}")
    warm_cache(base, args.data)
    keep = args.runs is not None
    runs = Path(args.runs) if keep else Path(tempfile.mkdtemp(prefix="bench-search-"))
    runs.mkdir(parents=True, exist_ok=True)
    out: dict = {"budget": args.budget, "budget_seconds": budget_s, "base_space": args.space, "load_start": load_start,
                 "start_point": not args.no_start_point, "ray_worker_niceness": args.ray_niceness, "strategies": {}}
    try:
        for key in args.only:
            name, what, changes = STRATEGIES[key]
            space = derived_space(base, changes, args.budget, args.num_samples, not args.no_start_point)
            print(f"\n({key}) {name}: {what}", flush=True)
            out["strategies"][key] = run_strategy(key, space, runs, args.budget, args.data, f"  ({key})")
    finally:
        if not keep:
            shutil.rmtree(runs, ignore_errors=True)
    out["load_end"] = loadavg()
    out["comparisons"] = compare(out["strategies"], budget_s)
    report(out)
    print(f"wrote {write_result('search', out)}")


def compare(s: dict, budget_s: float) -> dict:
    """(a) vs (b): the time (a) needs to reach (b)'s final best, against (b)'s wall time."""
    out = {}
    for key, r in s.items():
        out[f"{key}: best at the budget"] = best_at(r["curve"], budget_s)
    if "a" in s and "b" in s:
        target = s["b"]["final_best"]
        reach = time_to_reach(s["a"]["curve"], target)
        out["b final best"] = target
        out["a time to reach b final best (s)"] = reach
        out["b trials wall (s)"] = s["b"]["trials_wall_seconds"]
        out["a reach / b wall"] = reach / s["b"]["trials_wall_seconds"] if reach is not None else None
        out["target: a reach <= b wall / 3"] = reach is not None and reach <= s["b"]["trials_wall_seconds"] / 3
        out["a reach / b time to its best"] = (reach / s["b"]["time_to_best"]
                                               if reach is not None and s["b"]["time_to_best"] else None)
    return out


def report(out: dict) -> None:
    rows = []
    for key, r in out["strategies"].items():
        st = r["statuses"]
        rows.append((f"({key}) {r['strategy']}", r["trials"], st.get("completed", 0), st.get("stopped", 0),
                     st.get("errored", 0), r["final_best"], r["time_to_best"], r["trials_wall_seconds"],
                     r["cpu_busy_tree"], r["cpu_busy_machine"], r["overhead_share_median"],
                     r["trial_start_up_seconds_median"], r["slot_utilisation"]))
    print()
    print(table(rows, ["strategy", "trials", "done", "stopped", "errors", "best rho", "t best s", "wall s",
                       "CPU ours", "CPU all", "overhead", "start-up s", "slots used"]))
    print("\nbest-so-far fusion devel rho (s since the search started: rho)")
    for key, r in out["strategies"].items():
        print(f"  ({key}) " + ", ".join(f"{t:.0f}: {v:.3f}" for t, v in r["curve"]))
    print()
    for k, v in out["comparisons"].items():
        print(f"  {k}: {v if not isinstance(v, float) else round(v, 3)}")
    print(f"load average: start {out['load_start']}, end {out['load_end']}")


if __name__ == "__main__":
    main()
