"""`auttention-search run`: corpus -> cached spectrograms (Ray Data) -> Tune trials -> export.

The sequence of stages, each returning what the next needs: prepare (prepare.py: space, run folder,
corpus, the checks before Ray), extract (here: the spectrograms and how trials get them), tune and settle
(tuning.py), select and confirm (selection.py), export (export.py: trials.csv, best/), report (here:
report.py's pages and the summary). The Ray session is raysession.py's.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from auttention.baseline import FUNCTIONALS, functionals, functionals_folder
from auttention.config import ScoringConfig, build
from auttention.corpus import BadAudioPolicy
from auttention.errors import UserError
from auttention.evaluation import evaluate
from auttention.formatting import format_evaluation

from . import tracking
from .budget import Budget, duration
from .checks import check_shared_runs
from .export import Exported, Reference, export, summary
from .extract import ensure_spectrograms, skipped_clips
from .prepare import Prepared, prepare, record_space
from .raysession import start_ray
from .report import write_report
from .resources import check_resources
from .selection import select_and_confirm
from .sources import spectrogram_sources
from .trial import make_trainable

log = logging.getLogger(__name__)


def run_search(
    space_path: str,
    *,
    data: str | None = None,
    address: str | None = None,
    name: str | None = None,
    runs: str = "runs",
    cache: str | None = None,
    local_cache: str | None = None,
    num_samples: int | None = None,
    time_budget: str | None = None,
    resume: bool = False,
    dashboard: bool = True,
    verbose: bool = False,
    policy: BadAudioPolicy | None = None,
    delivery: str = "auto",
    mlflow: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """Run (or resume) a search; returns the run folder. policy: bad audio 'fail' (the default) or 'skip'
    (see corpus.BadAudioPolicy); progress is logged (auttention.log). delivery: how trials get the
    spectrograms (search.sources: auto, object-store or node-copy). local_cache: this machine's cache folder
    (the demo corpus, run-folder mirrors) where `cache` is on object storage (default ~/.cache/auttention-search);
    mlflow: an MLflow tracking URI to log to; clock: what the time budget is counted on."""
    started = Budget(None, clock)  # experiment.time_budget counts from here (search.budget)
    prepared = prepare(
        space_path,
        data=data,
        runs=runs,
        cache=cache,
        local_cache=local_cache,
        name=name,
        num_samples=num_samples,
        time_budget=time_budget,
        resume=resume,
        delivery=delivery,
        policy=policy,
        mlflow=mlflow,
    )
    space, run = prepared.space, prepared.run
    budget = dataclasses.replace(started, total_s=space.experiment.time_budget_s)
    dash, started_here = start_ray(address, dashboard, verbose)
    # here, not at the top: Ray and Tune take seconds to import (tuning imports Tune)
    import ray

    from . import tuning

    try:
        check_resources(space)
        check_shared_runs(run)
        if dash:
            log.info(dashboard_line(dash))
        extracted = extract(prepared, delivery, verbose)
        baseline = reference(prepared, extracted)
        budget.for_trials(space.experiment)  # a budget too small is refused before the run folder
        trainable = make_trainable(space, extracted.sources, baseline.fused(space))
        record_space(prepared)
        results = tuning.fit(space, trainable, run, resume, budget, prepared.tracking)
        settled = tuning.settle(run, space.experiment.name, budget)
        selection = select_and_confirm(results, space, extracted.sources, budget, baseline.fused(space))
        exported = export(run.local, results, selection, space, folder_of=run.trial_folder, reference=baseline)
        tracking.log_export(prepared.tracking, space.experiment.name, exported.folder, exported.metrics)
        report(prepared, exported, extracted.skipped, budget)
        if selection.chosen is None:
            raise UserError(no_epoch(exported.table, settled, budget, run))
    finally:
        if started_here:
            ray.shutdown()
    return run.local


def dashboard_line(address: str) -> str:
    """Where the dashboard is, and how to get the token it asks for (Ray's token authentication is on)."""
    return (
        f"ray: dashboard at http://{address} (it asks for this cluster's token: "
        f"`{Path(sys.executable).parent / 'ray'} get-auth-token` prints it)"
    )


def no_epoch(table: pd.DataFrame, settled: Any, budget: Budget, run: Any) -> str:
    """Why no trial can be exported, in one line: the time budget that ended every trial before its first epoch
    (how long they had, what to give), or the trials' errors."""
    errors = table["error"][table["status"] == "errored"] if len(table) else pd.Series(dtype=str)
    if settled.budget_ended and (len(errors) < len(table) or not len(table)):
        return (
            f"the time budget ended every trial before its first epoch: in the trials' "
            f"{duration(budget.trials_s or 0.0)} of it (experiment.time_budget {duration(budget.total_s or 0.0)}), "
            f"no trial finished one, so a first epoch takes longer than that here; raise --time-budget (or "
            f"experiment.time_budget), or search smaller models"
        )
    example = f" (e.g. {errors.iloc[0]})" if len(errors) else ""
    return f"no trial finished an epoch{example}; see the errors in {run}/trials.csv"


SAMPLE_RATE = 16000  # Hz of the functionals baseline (as the `baseline` command's default)


@dataclasses.dataclass
class Extracted:
    """The extract stage's result: {spectrogram settings hash: search.sources.Source} for the trials, and
    {file_name: reason} of every clip left out for bad audio (at the screening or by an extraction)."""

    sources: dict[str, Any]
    skipped: dict[str, str]


def extract(prepared: Prepared, delivery: str, verbose: bool) -> Extracted:
    """The extract stage: every spectrogram setting of the space in the cache (extracted where missing), and
    how trials get them (`delivery`, search.sources)."""
    space, corpus, cache_loc, skipped = prepared.space, prepared.corpus, prepared.cache, prepared.skipped
    folders = ensure_spectrograms(prepared.screened, space.spectrogram_settings(), cache_loc, verbose=verbose)
    skipped = {**skipped, **{k: v for f in folders.values() for k, v in skipped_clips(f).items()}}
    # labels joined by file name where used: the cache holds spectrograms, and a relabelled corpus reuses them
    return Extracted(spectrogram_sources(folders, corpus, delivery), skipped)


def reference(prepared: Prepared, extracted: Extracted) -> Reference:
    """The reference stage: the functionals baseline of the clips the trials see (cached beside the
    spectrograms, auttention.baseline), scored by the space's SVR and printed before the trials start: the
    bar the search's result is measured against, on the same clips (the export pairs them)."""

    corpus, fingerprint = prepared.corpus, prepared.screened.fingerprint
    kept = corpus[~corpus["file_name"].isin(set(extracted.skipped))]
    frame = functionals(kept, functionals_folder(prepared.cache, fingerprint, SAMPLE_RATE), corpus_id=fingerprint)
    scoring = build(ScoringConfig, prepared.space.fixed.get("scoring", {}), "scoring")
    ev = evaluate(frame, scoring)
    log.info(
        f"baseline: {FUNCTIONALS} + the same SVR: {format_evaluation(ev)} (C {ev.c:g}; the result is compared "
        f"with it at the end)"
    )
    return Reference(frame, scoring, ev)


def report(prepared: Prepared, exported: Exported, skipped: dict[str, str], budget: Budget) -> Path:
    """The report stage: report/index.html written and the run folder pushed; the summary (from what the
    export wrote), the clips skipped and where it all is, printed. Returns index.html's path."""
    run = prepared.run
    page = write_report(run.local)
    run.push()
    log.info("")
    log.info(summary(exported, prepared.space.experiment.metric))
    if skipped:
        names = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
        log.info(f"skipped {len(skipped)} of {prepared.n_clips} clips with bad audio (--on-bad-audio skip): {names}")
    of_budget = f" of the {duration(budget.total_s)} budget" if budget.total_s is not None else ""
    log.info(f"\nsearch: {duration(budget.elapsed())}{of_budget}; trials.csv and best/ in {run}")
    log.info(f"report: {run.remote_path(page)}")
    return page
