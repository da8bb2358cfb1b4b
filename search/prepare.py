"""The prepare stage of a search: the space with its command-line overrides, the run folder, the corpus, and
every check that can be made before Ray starts (versions, folders, labels, audio headers)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import pandas as pd

from auttention import storage
from auttention.config import build, load_yaml, to_dict
from auttention.corpus import BadAudioPolicy, read_corpus
from auttention.democorpus import build_demo_corpus
from auttention.errors import UserError
from auttention.extraction import Screened, screen
from auttention.io import write_yaml
from auttention.record import renamed_metric

from . import tracking
from .checks import check_labels
from .compat import check_versions
from .runfolder import RunFolder
from .sources import DELIVERIES
from .space import Space, load_space

log = logging.getLogger(__name__)


CACHE_ENV = "AUTTENTION_CACHE"  # read by the CLI (and the benches): this machine's cache folder


def home_cache(given: str | os.PathLike | None = None) -> Path:
    """This machine's cache (spectrograms, the demo corpus, run-folder mirrors): `given` (the CLI passes
    $AUTTENTION_CACHE), else ~/.cache/auttention-search."""
    return Path(given) if given else Path.home() / ".cache" / "auttention-search"


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


def demo_corpus(cache: Path, seed: int) -> Path:
    """The built-in demo corpus, generated once into the cache and reused."""
    folder = cache / "demo-corpus" / f"seed{seed}"
    if not (folder / "lab" / "labels.csv").is_file():
        log.info(f"demo corpus: synthesising into {folder} (once) ...")
        t0 = time.perf_counter()
        build_demo_corpus(folder, seed=seed)
        log.info(f"demo corpus: done in {time.perf_counter() - t0:.0f} s")
    return folder


@dataclasses.dataclass
class Prepared:
    """A search ready to start: its space (as recorded, on --resume), run folder, cache and screened corpus."""

    space: Space
    space_path: str  # the YAML the space was read from (run/space.yaml on --resume)
    run: RunFolder
    cache: storage.Location  # where the spectrograms are cached (a local folder or object storage)
    corpus: pd.DataFrame  # the clips that passed the audio screening
    skipped: dict[str, str]  # clips the bad-audio policy skipped: file name -> reason
    n_clips: int  # clips before the screening
    policy: BadAudioPolicy
    screened: Screened  # the same screening as the extraction takes it (with the corpus' fingerprint)
    tracking: str | None = None  # the MLflow tracking URI the search logs to (search.tracking), checked


def prepare(
    space_path: str,
    *,
    data: str | None,
    runs: str,
    cache: str | None,
    local_cache: str | None = None,
    name: str | None,
    num_samples: int | None,
    time_budget: str | None,
    resume: bool,
    delivery: str,
    policy: BadAudioPolicy | None,
    mlflow: str | None = None,
) -> Prepared:
    """The prepare stage: every check that needs no Ray, in the order a user would fix them (see run_search)."""
    check_versions()  # the private Ray/Optuna internals search/compat.py uses: checked once, before any work
    tracking_uri = tracking.check(mlflow)  # mlflow installed, the server answering: before anything starts
    space_path = str(Path(space_path).resolve())  # Ray may change the driver's working directory (jobs)
    space = override(load_space(space_path), name, num_samples, time_budget)
    mine = Path(local_cache) if local_cache else home_cache()
    local = mine if cache is None or storage.is_remote(cache) else Path(cache)
    cache_loc = storage.location(str(cache) if cache else str(local), "--cache")
    run = RunFolder(runs, space.experiment.name, local)
    run.check()
    if delivery not in DELIVERIES:
        raise UserError(f"--delivery {delivery}: choose one of {', '.join(DELIVERIES)}")
    storage.check(cache_loc, "--cache")  # a bucket: the spectrograms; the demo corpus and run mirrors stay local
    storage.check_writable(local, "--cache" if not cache_loc.remote else "the local cache ($AUTTENTION_CACHE)")
    if resume and not run.has_search():
        raise UserError(f"{run}: no search to resume here; run without --resume to start it")
    if not resume and run.has_search():
        raise UserError(f"{run}: a search of this name exists; pass --resume to continue it, or choose another --name")
    run.start(resume)  # object storage: the local mirror (space.yaml, the Optuna study on --resume)
    if resume and (run.local / "space.yaml").is_file():
        space, space_path = resumed_space(space, space_path, run, num_samples, time_budget)
    policy = policy or BadAudioPolicy()
    corpus = read_corpus(data if data else demo_corpus(local, 0))
    check_labels(corpus, space)
    n_clips = len(corpus)
    screened = screen(corpus, policy)  # headers: fail fast, before Ray starts
    corpus, skipped = screened.clips, screened.skipped
    log.info(
        f"corpus: {len(corpus)} clips ({', '.join(f'{p} {n}' for p, n in corpus['partition'].value_counts().items())})"
    )
    return Prepared(space, space_path, run, cache_loc, corpus, skipped, n_clips, policy, screened, tracking_uri)


def resumed_space(
    space: Space, space_path: str, run: RunFolder, num_samples: int | None, time_budget: str | None
) -> tuple[Space, str]:
    """The space a resumed search goes on with: the one it started with (run/space.yaml: the restored searcher
    samples it, so the trials must too), with a --time-budget for the rest of the search; --num-samples other
    than the recorded one, and a search an earlier version started, are refused in one line."""
    path = run.local / "space.yaml"
    raw = load_yaml(path) or {}
    metric = str((raw.get("experiment") or {}).get("metric") or "")
    if renamed_metric(metric):
        raise UserError(
            f"{run}: this search was started by an earlier version of auttention-search (its metric "
            f"is {metric}, now {renamed_metric(metric)}); it cannot be resumed by this version: start a "
            f"new --name (`auttention-search report {run}` still reads it)"
        )
    recorded = load_space(path)
    if recorded.fixed != space.fixed or recorded.params != space.params:
        log.warning(
            f"warning: {space_path} differs from the space this search started with; resuming with {run}/space.yaml"
        )
    if num_samples is not None and num_samples != recorded.experiment.num_samples:
        raise UserError(
            f"--num-samples {num_samples}: a resumed search goes on with the trials it was started with "
            f"({recorded.experiment.num_samples}); resume without it, or start a new --name for more"
        )
    if time_budget is not None:  # the budget of this run: for the rest of the search
        recorded = override(recorded, None, None, time_budget)
    return recorded, str(path)


def record_space(prepared: Prepared) -> None:
    """Write the space the trials sample to run/space.yaml (what --resume and the report read), with the
    experiment section as overridden on the command line."""
    record = load_yaml(prepared.space_path) or {}
    record["experiment"] = to_dict(prepared.space.experiment)
    write_yaml(prepared.run.local / "space.yaml", record)
    prepared.run.push("space.yaml")
