"""`auttention-search run`: corpus -> cached spectrograms (Ray tasks) -> Tune trials -> export."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from auttention.errors import UserError

from .resources import check_resources
from .space import Space, load_space

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
# Tune warns when syncing the experiment state takes seconds; trial checkpoints make that normal here
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")
# Tune's boxed tables: our ProgressLog prints one line per scored epoch instead
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def default_cache() -> Path:
    """The spectrogram and demo-corpus cache: $AUTTENTION_CACHE or ~/.cache/auttention-search."""
    return Path(os.environ.get("AUTTENTION_CACHE") or Path.home() / ".cache" / "auttention-search")


def override(space: Space, name: str | None, num_samples: int | None, time_budget: str | None) -> Space:
    """The space with command-line overrides of the experiment section, validated like the YAML."""
    from auttention.config import build, to_dict

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
    from auttention.democorpus import build_demo_corpus

    folder = cache / "demo-corpus" / f"seed{seed}"
    if not (folder / "lab" / "labels.csv").is_file():
        echo(f"demo corpus: synthesising into {folder} (once) ...")
        t0 = time.perf_counter()
        build_demo_corpus(folder, seed=seed)
        echo(f"demo corpus: done in {time.perf_counter() - t0:.0f} s")
    return folder


def check_writable(folder: Path, flag: str) -> None:
    """Fail before any work, creating nothing, when `folder` could not be written or its disk is
    nearly full (below $AUTTENTION_MIN_FREE_MB, default 200 MiB)."""
    import tempfile

    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{folder}: cannot write here ({exc.strerror}); choose another {flag}") from None
    need = int(os.environ.get("AUTTENTION_MIN_FREE_MB", "200"))
    free = shutil.disk_usage(existing).free // 2**20
    if free < need:
        raise UserError(f"{folder}: only {free} MiB free on this disk (a search needs {need}); free space or "
                        f"choose another {flag}")


def use_token_auth() -> bool:
    """Send the Ray token to clusters when one is at hand ($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token, which `ray start` and a local ray.init() create): Ray's own clients only do
    when RAY_AUTH_MODE=token is set, so a user on the cluster's machine would have to copy it by hand."""
    if os.environ.get("RAY_AUTH_MODE"):
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not (os.environ.get("RAY_AUTH_TOKEN") or path.is_file()):
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    import sys

    if "ray._raylet" in sys.modules:  # Ray read its settings at import: make it read them again
        from ray._raylet import Config

        Config.initialize("")
    return True


def start_ray(address: str | None, dashboard: bool, verbose: bool = False) -> tuple[str | None, bool]:
    """Connect to a cluster or start Ray here (token authentication on, dashboard on 127.0.0.1).

    The cluster is `address`, else $RAY_ADDRESS (set inside a Ray job); without either Ray starts
    here, never joining a cluster that happens to run on this machine (`--address auto` does that).
    Returns (dashboard URL, whether Ray was started here and must be shut down).
    """
    import ray

    # Ray 2.60 turns token authentication on for a local ray.init() (creating ~/.ray/auth_token) and
    # uses the token when connecting to a cluster; we only refuse to run with it switched off silently.
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        logging.getLogger(__name__).warning("RAY_AUTH_MODE=disabled: anyone who can reach this Ray cluster "
                                            "can run code on it; unset it to keep token authentication on")
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        use_token_auth()
    # a submitted job's driver inherits the job's runtime env (which `submit` gives these variables)
    runtime_env = None if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") else {"env_vars": dict(QUIET_ENV)}
    try:
        if target:
            context = ray.init(address=target, runtime_env=runtime_env, logging_level=logging.WARNING,
                               log_to_driver=verbose)
        else:
            context = ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                               runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=verbose)
    except ConnectionError as exc:
        raise UserError(f"--address {target}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); "
                        f"is it running (`ray status`), and is its token in ~/.ray/auth_token or "
                        f"$RAY_AUTH_TOKEN?") from None
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    return getattr(context, "dashboard_url", None) or None, not target


def check_labels(corpus, space: Space) -> None:
    """Known labels must lie in the scoring's [label_min, label_max] (predictions are clipped to it)."""
    from auttention.config import ScoringConfig, build
    from auttention.corpus import check_label_range

    if any(p.section == "scoring" and p.key in ("label_min", "label_max") for p in space.params):
        return  # a searched range: each trial's own
    fixed = {k: v for k, v in space.fixed.get("scoring", {}).items() if k in ("label_min", "label_max")}
    scoring = build(ScoringConfig, fixed, "scoring")
    check_label_range(corpus, scoring.label_min, scoring.label_max)


def _sees(path: str) -> bool:
    return Path(path).is_file()


def check_shared_runs(run_dir: Path) -> None:
    """On a multi-node cluster, fail fast unless every node sees the run folder: trials write their
    checkpoints there, and a node that does not share it would fail every trial it runs."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    if len(nodes) < 2:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = (run_dir / ".shared-check").resolve()
    marker.write_text("every node must see this file\n")
    try:
        probe = ray.remote(num_cpus=0)(_sees)
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(marker)) for n in nodes], timeout=120)
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise UserError(f"--runs {run_dir.parent}: not visible from node(s) {', '.join(blind)}; trials save "
                        f"checkpoints there, so put --runs on storage every node mounts (NFS, EFS, a shared "
                        f"volume)")


def pick_best(results, metric: str):
    """(result, checkpoint folder) of the trial with the best checkpoint; None if no trial scored."""
    from .tuning import best_checkpoint

    best = None
    for result in results:
        found = best_checkpoint(result.path, metric) if result.path else None
        if found and (best is None or found[1][metric] > best[2]):
            best = (result, found[0], found[1][metric])
    return best[:2] if best else None


def _evaluate_checkpoint(checkpoint: str, spec, cfg):
    """Features of all partitions from a trial checkpoint's two models; their evaluations."""
    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    from auttention.pipeline import evaluate_trainers
    from auttention.training import Trainer

    att = Trainer.load(Path(checkpoint) / "attention")
    s2s = Trainer.load(Path(checkpoint) / "seq2seq")
    frames, evaluations = evaluate_trainers(att, s2s, spec, cfg.scoring)
    return evaluations, frames, s2s.epoch


def run_search(space_path: str, *, data: str | None = None, address: str | None = None, name: str | None = None,
               runs: str = "runs", cache: str | None = None, num_samples: int | None = None,
               time_budget: str | None = None, resume: bool = False, dashboard: bool = True,
               verbose: bool = False, echo: Callable[[str], None] = print, on_bad_audio: str = "fail") -> Path:
    """Run (or resume) a search; returns the run folder. on_bad_audio: 'fail' or 'skip' (see corpus.py)."""
    from auttention.corpus import read_corpus, screen_audio
    from auttention.io import write_csv, write_yaml

    space_path = str(Path(space_path).resolve())  # Ray may change the driver's working directory (jobs)
    space = override(load_space(space_path), name, num_samples, time_budget)
    exp = space.experiment
    run_dir = Path(runs) / exp.name
    exp_dir = run_dir / "tune"
    if resume and not exp_dir.is_dir():
        raise UserError(f"{run_dir}: no search to resume here; run without --resume to start it")
    if resume and (run_dir / "space.yaml").is_file():
        # the searcher restored from the run folder samples the recorded space: the trials must too
        recorded = load_space(run_dir / "space.yaml")
        if recorded.fixed != space.fixed or recorded.params != space.params:
            echo(f"search: {space_path} differs from the space this search started with; "
                 f"resuming with {run_dir / 'space.yaml'}")
        space, space_path = recorded, str(run_dir / "space.yaml")
        exp = space.experiment
    if not resume and exp_dir.exists():
        raise UserError(f"{run_dir}: a search of this name exists; pass --resume to continue it, "
                        f"or choose another --name")
    check_writable(run_dir, "--runs")
    cache_dir = Path(cache) if cache else default_cache()
    check_writable(cache_dir, "--cache")
    corpus = read_corpus(data if data else demo_corpus(cache_dir, 0, echo), warn=echo)
    check_labels(corpus, space)
    n_clips = len(corpus)
    corpus, skipped = screen_audio(corpus, on_bad_audio, echo)  # headers: fail fast, before Ray starts
    echo(f"corpus: {len(corpus)} clips ({', '.join(f'{p} {n}' for p, n in corpus['partition'].value_counts().items())})")

    dash, started_here = start_ray(address, dashboard, verbose)
    import ray
    from ray import tune

    from auttention import spectrogram as spectro

    from .export import export_best, summary, trials_table
    from .report import write_report
    from .extract import ensure_spectrograms, skipped_clips
    from .trial import make_trainable
    from .tuning import make_tuner

    try:
        check_resources(space)
        check_shared_runs(run_dir)
        if dash:
            echo(f"ray: dashboard at http://{dash}")
        folders = ensure_spectrograms(corpus, space.spectrogram_settings(), cache_dir, echo,
                                      on_bad_audio=on_bad_audio, skipped=skipped)
        skipped = {**skipped, **{k: v for f in folders.values() for k, v in skipped_clips(f).items()}}
        refs = {h: ray.put(spectro.read(folder)) for h, folder in folders.items()}
        trainable = make_trainable(space, refs)
        write_yaml(run_dir / "space.yaml", _space_record(space_path, space))
        if resume:
            if not tune.Tuner.can_restore(str(exp_dir.resolve())):
                raise UserError(f"{exp_dir}: the experiment state cannot be restored; start a new --name")
            echo(f"search: resuming {exp.name}")
            tuner = tune.Tuner.restore(str(exp_dir.resolve()), trainable=trainable, resume_errored=False)
        else:
            tuner = make_tuner(space, trainable, run_dir, echo)
        echo(f"search: {exp.num_samples} trials, {exp.max_concurrent} at a time, "
             f"{space.resources.cpu:g} CPU / {space.resources.gpu:g} GPU each; metric {exp.metric}; "
             f"run folder {run_dir}")
        t0 = time.perf_counter()
        results = tuner.fit()
        table = trials_table(results, exp.metric)
        write_csv(run_dir / "trials.csv", table)
        evaluations = None
        best = pick_best(results, exp.metric)
        if best:
            result, checkpoint = best
            cfg = space.trial_config(result.config)
            task = ray.remote(_evaluate_checkpoint).options(num_cpus=space.resources.cpu,
                                                             num_gpus=space.resources.gpu)
            evaluations, frames, epoch = ray.get(task.remote(str(checkpoint), refs[cfg.spectrogram.hash()], cfg))
            export_best(run_dir, cfg, epoch, evaluations, frames, result.metrics.get("trial_id", Path(result.path).name))
        report = write_report(run_dir)
        echo("")
        echo(summary(table, exp.metric, evaluations))
        if skipped:
            names = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
            echo(f"skipped {len(skipped)} of {n_clips} clips with bad audio (--on-bad-audio skip): {names}")
        echo(f"\nsearch: {time.perf_counter() - t0:.0f} s; trials.csv and best/ in {run_dir}")
        echo(f"report: {report}")
        if not best:
            raise UserError(f"no trial finished an epoch; see the errors in {run_dir / 'trials.csv'}")
    finally:
        if started_here:
            ray.shutdown()
    return run_dir


def _space_record(path: str, space: Space) -> dict:
    from auttention.config import load_yaml, to_dict

    record = load_yaml(path) or {}
    record["experiment"] = to_dict(space.experiment)
    return record
