"""`auttention-search run`: corpus -> cached spectrograms (Ray Data) -> Tune trials -> export.

The orchestration only: the up-front checks are in checks.py, the Ray session in raysession.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

from auttention import storage
from auttention.config import build, load_yaml, to_dict
from auttention.corpus import BadAudioPolicy, read_corpus
from auttention.democorpus import build_demo_corpus
from auttention.errors import UserError
from auttention.io import write_csv, write_yaml

from .checks import check_labels, check_shared_runs, check_writable
from .export import export_best, summary, trials_table
from .extract import ensure_spectrograms, skipped_clips
from .raysession import start_ray
from .report import write_report
from .resources import check_resources
from .runfolder import RunFolder
from .sources import DELIVERIES, spectrogram_sources
from .space import Space, load_space
from .trial import make_trainable


def default_cache() -> Path:
    """The spectrogram and demo-corpus cache: $AUTTENTION_CACHE or ~/.cache/auttention-search."""
    return Path(os.environ.get("AUTTENTION_CACHE") or Path.home() / ".cache" / "auttention-search")


def override(space: Space, name: str | None, num_samples: int | None, time_budget: str | None) -> Space:
    """The space with command-line overrides of the experiment section, validated like the YAML."""
    values = to_dict(space.experiment)
    for key, value in (("name", name), ("num_samples", num_samples), ("time_budget", time_budget)):
        if value is not None:
            values[key] = value
    try:
        experiment = build(type(space.experiment), values, "experiment")
    except UserError as exc:
        raise UserError(f"command line: {exc}") from None
    return dataclasses.replace(space, experiment=experiment)


def demo_corpus(cache: Path, seed: int, echo: Callable[[str], None]) -> Path:
    """The built-in demo corpus, generated once into the cache and reused."""
    folder = cache / "demo-corpus" / f"seed{seed}"
    if not (folder / "lab" / "labels.csv").is_file():
        echo(f"demo corpus: synthesising into {folder} (once) ...")
        t0 = time.perf_counter()
        build_demo_corpus(folder, seed=seed)
        echo(f"demo corpus: done in {time.perf_counter() - t0:.0f} s")
    return folder


def run_search(space_path: str, *, data: str | None = None, address: str | None = None, name: str | None = None,
               runs: str = "runs", cache: str | None = None, num_samples: int | None = None,
               time_budget: str | None = None, resume: bool = False, dashboard: bool = True,
               verbose: bool = False, echo: Callable[[str], None] = print,
               policy: BadAudioPolicy | None = None, delivery: str = "auto") -> Path:
    """Run (or resume) a search; returns the run folder. policy: bad audio 'fail' (the default) or 'skip'
    (see corpus.BadAudioPolicy; default warnings through `echo`). delivery: how trials get the
    spectrograms (search.sources: auto, object-store or node-copy)."""
    space_path = str(Path(space_path).resolve())  # Ray may change the driver's working directory (jobs)
    space = override(load_space(space_path), name, num_samples, time_budget)
    exp = space.experiment
    local_cache = default_cache() if cache is None or storage.is_remote(cache) else Path(cache)
    cache_loc = storage.location(str(cache) if cache else str(local_cache), "--cache")
    run = RunFolder(runs, exp.name, local_cache)
    run.check()
    if delivery not in DELIVERIES:
        raise UserError(f"--delivery {delivery}: choose one of {', '.join(DELIVERIES)}")
    storage.check(cache_loc, "--cache")  # a bucket: the spectrograms; the demo corpus and run mirrors stay local
    check_writable(local_cache, "--cache" if not cache_loc.remote else "the local cache ($AUTTENTION_CACHE)")
    if resume and not run.has_search():
        raise UserError(f"{run}: no search to resume here; run without --resume to start it")
    if not resume and run.has_search():
        raise UserError(f"{run}: a search of this name exists; pass --resume to continue it, "
                        f"or choose another --name")
    run.start(resume)  # object storage: the local mirror (space.yaml, the Optuna study on --resume)
    run_dir = run.local
    if resume and (run_dir / "space.yaml").is_file():
        # the searcher restored from the run folder samples the recorded space: the trials must too
        recorded = load_space(run_dir / "space.yaml")
        if recorded.fixed != space.fixed or recorded.params != space.params:
            echo(f"search: {space_path} differs from the space this search started with; "
                 f"resuming with {run}/space.yaml")
        space, space_path = recorded, str(run_dir / "space.yaml")
        exp = space.experiment
    policy = policy or BadAudioPolicy(warn=echo)
    corpus = read_corpus(data if data else demo_corpus(local_cache, 0, echo), warn=echo)
    check_labels(corpus, space)
    n_clips = len(corpus)
    corpus, skipped = policy.screen(corpus)  # headers: fail fast, before Ray starts
    echo(f"corpus: {len(corpus)} clips ({', '.join(f'{p} {n}' for p, n in corpus['partition'].value_counts().items())})")

    dash, started_here = start_ray(address, dashboard, verbose)
    # here, not at the top: Ray and Tune take seconds to import (selection and tuning import Tune), and
    # jobs.py imports this module for `override` alone
    import ray
    from ray import tune

    from .selection import choose, confirm, evaluate_checkpoint, rank_trials
    from .tuning import make_tuner, settle_study

    try:
        check_resources(space)
        check_shared_runs(run)
        if dash:
            echo(f"ray: dashboard at http://{dash}")
        folders = ensure_spectrograms(corpus, space.spectrogram_settings(), cache_loc, echo, policy=policy,
                                      skipped=skipped, verbose=verbose)
        skipped = {**skipped, **{k: v for f in folders.values() for k, v in skipped_clips(f).items()}}
        # labels joined by file name where used: the cache holds spectrograms, and a relabelled corpus reuses them
        sources = spectrogram_sources(folders, corpus, delivery, echo)
        trainable = make_trainable(space, sources)
        write_yaml(run_dir / "space.yaml", _space_record(space_path, space))
        run.push("space.yaml")
        if resume:
            if not run.can_restore():
                raise UserError(f"{run}/tune: the experiment state cannot be restored; start a new --name")
            echo(f"search: resuming {exp.name}")
            path, filesystem = run.storage()
            tuner = tune.Tuner.restore(f"{path}/tune", trainable=trainable, resume_errored=False,
                                       storage_filesystem=filesystem)
        else:
            tuner = make_tuner(space, trainable, run, echo)
        echo(f"search: {exp.num_samples} trials, {exp.max_concurrent} at a time, "
             f"{space.resources.cpu:g} CPU / {space.resources.gpu:g} GPU each; metric {exp.metric}; "
             f"run folder {run}")
        t0 = time.perf_counter()
        results = tuner.fit()
        counts, lost = settle_study(run_dir, exp.name)
        run.push_study(force=True)
        echo("optuna: " + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
             + (f" ({lost} lost when the driver stopped: asked after its last snapshot)" if lost else ""))
        run.pull()  # a run folder on object storage: the trials' results (not their models) into the mirror
        evaluations = None
        ranked = rank_trials(results, exp.metric, exp.select, space.scheduler.max_epochs)
        confirmed = confirm(ranked, space, sources, echo) if ranked else []
        best = choose(confirmed)
        table = trials_table(results, exp.metric, confirmed, folder_of=run.trial_folder)
        write_csv(run_dir / "trials.csv", table)
        if best:
            cfg = space.trial_config(best.result.config)
            task = ray.remote(evaluate_checkpoint).options(num_cpus=space.resources.cpu, num_gpus=space.resources.gpu)
            evaluations, frames, epoch = ray.get(task.remote(best.checkpoint, sources[cfg.spectrogram.hash()], cfg, space.resources))
            export_best(run_dir, cfg, epoch, evaluations, frames, best, confirmed, exp)
        report = write_report(run_dir)
        run.push()
        echo("")
        combined = None
        if best and (run_dir / "best" / "metrics.json").is_file():
            combined = json.loads((run_dir / "best" / "metrics.json").read_text()).get("ensemble")
        echo(summary(table, exp.metric, evaluations, ensemble=combined))
        if skipped:
            names = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
            echo(f"skipped {len(skipped)} of {n_clips} clips with bad audio (--on-bad-audio skip): {names}")
        echo(f"\nsearch: {time.perf_counter() - t0:.0f} s; trials.csv and best/ in {run}")
        echo(f"report: {run.remote_path(report)}")
        if not best:
            raise UserError(f"no trial finished an epoch; see the errors in {run}/trials.csv")
    finally:
        if started_here:
            ray.shutdown()
    return run_dir


def _space_record(path: str, space: Space) -> dict:
    record = load_yaml(path) or {}
    record["experiment"] = to_dict(space.experiment)
    return record
