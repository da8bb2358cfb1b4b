"""The `auttention-search` command line: the pipeline's steps one by one, the whole pipeline, the search.

Flags carry the same names as the YAML keys (`--n-fft` is spectrogram.n_fft). Precedence:
defaults < --config YAML < flags. A user's mistake ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from auttention import TF_LOG_LEVEL, import_tensorflow_quietly, storage
from auttention.baseline import evaluate_baseline
from auttention.config import (
    MODEL_CONFIGS,
    SPECTROGRAM_PRESETS,
    AttentionConfig,
    ScoringConfig,
    Seq2seqConfig,
    SpectrogramConfig,
    TrainingConfig,
    build,
    field_types,
    load_pipeline_config,
    load_yaml,
)
from auttention.corpus import ON_BAD_AUDIO, BadAudioPolicy, check_label_range, read_corpus, read_labels
from auttention.democorpus import build_demo_corpus
from auttention.errors import UserError
from auttention.extraction import extract_corpus
from auttention.features import fuse_folders
from auttention.formatting import format_rho_ci, table, versus_line
from auttention.log import setup as setup_logging
from auttention.record import FUNCTIONALS, FUSION
from search.prepare import CACHE_ENV, home_cache
from search.runfolder import run_folder_of
from search.sources import AUTO, DELIVERIES, OBJECT_STORE_SHARE

log = logging.getLogger("search.cli")  # by name: run as `python -m search.cli`, __name__ is __main__


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_options(cls: type, exclude: tuple[str, ...] = ()) -> Callable:
    """Add one flag per field of config class `cls` (named like the YAML key) to a click command."""

    def decorate(func: Callable) -> Callable:
        types = field_types(cls)
        for f in reversed(dataclasses.fields(cls)):
            if f.name in exclude or not f.init:  # not init: fixed by the class (a network's name), no flag
                continue
            doc = f.metadata.get("doc") or ""
            choices = f.metadata.get("choices")
            if types[f.name] is bool:
                func = click.option(
                    f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}",
                    f.name,
                    default=None,
                    help=doc or f"{cls.__name__}.{f.name}",
                )(func)
            else:
                hint = "|".join(choices) if choices else ("a,b,..." if types[f.name] is list else "VALUE")
                func = click.option(
                    _flag(f.name),
                    f.name,
                    default=None,
                    metavar=hint,
                    help=f"{doc} (default {f.default if f.default is not dataclasses.MISSING else '...'})".strip(),
                )(func)
        return func

    return decorate


def _parse_flag(value: Any) -> Any:
    """A flag's text as a YAML scalar (numbers, null, true/false) or a comma list."""
    if not isinstance(value, str):
        return value
    if "," in value:
        return [yaml.safe_load(v) for v in value.split(",")]
    return yaml.safe_load(value)


def make_config(cls: type, section: str, config_path: str | None, flags: dict[str, Any]) -> Any:
    """A config from the --config YAML's section, overridden by the flags that were given."""
    data: dict[str, Any] = {}
    if config_path:
        loaded = load_yaml(config_path) or {}
        if not isinstance(loaded, dict):
            raise UserError(f"{config_path}: the top level must be a mapping of sections")
        data = dict(loaded.get(section) or {})
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in flags.items():
        if key in names and value is not None:
            data[key] = _parse_flag(value)
    if cls is SpectrogramConfig and flags.get("preset"):
        data["preset"] = flags["preset"]
    return build(cls, data, section)


def user_errors(func: Callable) -> Callable:
    """Turn a UserError into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            log.error(f"error: {exc}")
            sys.exit(2)
        except KeyboardInterrupt:
            log.error("interrupted")
            sys.exit(130)

    return wrapper


on_bad_audio_option = click.option(
    "--on-bad-audio",
    type=click.Choice(ON_BAD_AUDIO),
    default="fail",
    show_default=True,
    help="a clip that cannot be decoded, is empty or holds NaN/Inf samples: stop before any output (fail), "
    "or leave it out with one warning line (skip)",
)
jobs_option = click.option("--jobs", type=click.IntRange(min=1), default=None, help="processes (default: all CPUs)")


class OneLineErrors(click.Group):
    """click's usage errors (unknown flag, bad flag value) as one line and exit status 2, like UserError."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kwargs: Any,
    ) -> Any:
        setup_logging()  # the one log path: results and progress to stdout, warnings and errors to stderr
        # TensorFlow's C++ log lines are not for users, in this process or any it starts
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `auttention-search`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            where = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else ""
            hint = f" (see `{where} --help`)" if where else ""
            log.error(f"error: {exc.format_message()}{hint}")
            sys.exit(exc.exit_code)
        except click.Abort:
            log.error("interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="auttention-search")
def main() -> None:
    """Find the recurrent autoencoder configuration that best predicts a continuous speech label."""


@main.command("demo-corpus")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--clips", "n_clips", default=600, show_default=True, help="number of clips")
@click.option("--speakers", "n_speakers", default=30, show_default=True, help="number of speakers (>= 24)")
@click.option("--seed", default=0, show_default=True, help="random seed (same seed, same corpus)")
@click.option("--jobs", type=int, default=None, help="processes (default: all CPUs)")
@user_errors
def demo_corpus(out: str, n_clips: int, n_speakers: int, seed: int, jobs: int | None) -> None:
    """Synthesise the German demo corpus (eSpeak NG) in ComParE layout into OUT."""

    path = build_demo_corpus(out, n_clips=n_clips, n_speakers=n_speakers, seed=seed, jobs=jobs)
    log.info(f"demo corpus: {path}")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="corpus folder (wav/, lab/labels.csv) or manifest CSV")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="output folder: a local path, s3://bucket/prefix or gs://bucket/prefix (reused when made from "
    "this corpus with these settings)",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with a spectrogram section")
@click.option("--preset", type=click.Choice(list(SPECTROGRAM_PRESETS)), help="start from published settings")
@jobs_option
@on_bad_audio_option
@config_options(SpectrogramConfig)
@user_errors
def extract(data: str, out: str, config_path: str | None, jobs: int | None, on_bad_audio: str, **flags: Any) -> None:
    """Compute the corpus' mel spectrograms (Parquet)."""

    cfg = make_config(SpectrogramConfig, "spectrogram", config_path, flags)
    where = storage.location(out, "--out")
    storage.check(where, "--out")  # a bucket: a missing one or refused credentials in one line, before any work
    spec = extract_corpus(data, cfg, where, jobs=jobs, policy=BadAudioPolicy(on_bad_audio))
    n_clips = spec.clips + len(spec.skipped)  # file names are unique in a corpus
    skipped = f" (skipped {len(spec.skipped)} of {n_clips} clips with bad audio)" if spec.skipped else ""
    log.info(
        f"spectrograms: {len(spec.x)} clips x {spec.x.shape[1]} frames x {spec.x.shape[2]} bands -> {out}{skipped}"
    )


@main.command()
@click.option("--network", required=True, type=click.Choice(list(MODEL_CONFIGS)))
@click.option("--spectrograms", required=True, type=click.Path(file_okay=False), help="folder written by extract")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="model folder (resumes if present)")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML with seq2seq/attention and training sections"
)
@config_options(Seq2seqConfig)
@config_options(AttentionConfig, exclude=tuple(f.name for f in dataclasses.fields(Seq2seqConfig)))
@config_options(TrainingConfig)
@user_errors
def train(network: str, spectrograms: str, out: str, config_path: str | None, **flags: Any) -> None:
    """Train a seq2seq or attention autoencoder on the spectrograms."""
    import_tensorflow_quietly()
    cls = MODEL_CONFIGS[network]
    own = {f.name for f in dataclasses.fields(cls)}
    bad = [
        f.name
        for other in MODEL_CONFIGS.values()
        for f in dataclasses.fields(other)
        if f.name not in own and flags.get(f.name) is not None
    ]
    if bad:
        raise UserError(f"{_flag(bad[0])} does not apply to --network {network}")
    model_cfg = make_config(cls, network, config_path, flags)
    train_cfg = make_config(TrainingConfig, "training", config_path, flags)
    from auttention.pipeline import train_from_folder  # TensorFlow and scikit-learn: seconds, for this command only

    train_from_folder(spectrograms, model_cfg, train_cfg, out)
    log.info(f"model: {out}")


@main.command()
@click.option("--model", required=True, type=click.Path(file_okay=False), help="folder written by train")
@click.option("--spectrograms", required=True, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--csv", is_flag=True, help="also write features.csv")
@user_errors
def features(model: str, spectrograms: str, out: str, csv: bool) -> None:
    """Extract every clip's feature vector with a trained autoencoder."""
    import_tensorflow_quietly()
    from auttention.pipeline import model_features  # TensorFlow and scikit-learn: seconds, for this command only

    frame = model_features(model, spectrograms, out, csv=csv)
    log.info(f"features: {len(frame)} clips x {frame.shape[1] - 3} -> {out}")


@main.command()
@click.argument("sets", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--csv", is_flag=True, help="also write features.csv")
@user_errors
def fuse(sets: tuple[str, ...], out: str, csv: bool) -> None:
    """Early fusion: concatenate feature sets, joined on file_name."""
    frame = fuse_folders(sets, out, csv=csv)
    log.info(f"fusion: {len(frame)} clips x {frame.shape[1] - 3} -> {out}")


@main.command()
@click.option("--features", "features_path", required=True, type=click.Path(), help="feature folder")
@click.option("--labels", type=click.Path(dir_okay=False), help="labels.csv (default: labels stored with the features)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="test predictions CSV")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with a scoring section")
@config_options(ScoringConfig)
@user_errors
def evaluate(features_path: str, labels: str | None, out: str, config_path: str | None, **flags: Any) -> None:
    """Linear SVR: C chosen on devel, refit on train+devel, test predictions written."""
    cfg = make_config(ScoringConfig, "scoring", config_path, flags)
    from auttention.evaluation import evaluate_features  # scikit-learn and scipy: a second, for this command only

    ev = evaluate_features(features_path, labels, out, cfg)  # also NAME.devel.csv, NAME.metrics.json beside out
    test = format_rho_ci(ev.test_rho, ev.test_ci, missing="n/a (labels unknown)")
    log.info(
        f"C={ev.c:g}  {chosen_by(ev)}devel rho={format_rho_ci(ev.devel_rho, ev.devel_ci)}  test rho={test}  -> {out}"
        f"  [95% intervals, {ev.resampled} resampled]"
    )


@main.command()
@click.option("--predictions", required=True, type=click.Path(dir_okay=False))
@click.option("--labels", required=True, type=click.Path(dir_okay=False))
@user_errors
def score(predictions: str, labels: str) -> None:
    """Spearman's rho of a predictions CSV against a label file."""
    from auttention.predictions import read_predictions, score_predictions  # scipy: a second, for this command

    rho, n, ci, resampled = score_predictions(read_predictions(predictions), read_labels(labels))
    shown = format_rho_ci(rho, ci)
    said = (
        f"[95% interval, {resampled} resampled]"
        if "[" in shown
        else "(no interval: the predictions or labels are constant in most resamples)"
    )
    log.info(f"Spearman rho = {shown} over {n} clips  {said}")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="corpus folder or manifest CSV")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="pipeline YAML (sections spectrogram, seq2seq, attention, training, scoring)",
)
@click.option("--out", type=click.Path(file_okay=False), help="output folder (default runs/pipeline-<config name>)")
@jobs_option
@on_bad_audio_option
@user_errors
def pipeline(data: str, config_path: str | None, out: str | None, jobs: int | None, on_bad_audio: str) -> None:
    """All steps in one: spectrograms, both autoencoders, features, fusion, scoring; prints the table."""
    import_tensorflow_quietly()
    from auttention import pipeline as pipe  # TensorFlow and scikit-learn: seconds, for this command only
    from auttention.evaluation import versus

    cfg = load_pipeline_config(config_path)
    corpus = read_corpus(data)
    check_label_range(corpus, cfg.scoring.label_min, cfg.scoring.label_max)
    out = out or f"runs/pipeline-{Path(config_path).stem if config_path else 'default'}"
    t0 = time.perf_counter()
    results = pipe.run(corpus, cfg, out, jobs=jobs, policy=BadAudioPolicy(on_bad_audio))
    log.info("")
    log.info(table(results))
    log.info(versus_line(versus(results[FUSION], results[FUNCTIONALS], corpus)))
    log.info(
        f"\n{len(corpus)} clips, {time.perf_counter() - t0:.0f} s; outputs in {out} "
        f"(predictions.test.csv, metrics.json)"
    )


@main.command()
@click.option("--data", required=True, type=click.Path(), help="corpus folder or manifest CSV")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with a scoring section")
@click.option("--sample-rate", type=click.IntRange(min=1000), default=16000, show_default=True, help="Hz")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="threads (default: all CPUs)")
@on_bad_audio_option
@user_errors
def baseline(data: str, config_path: str | None, sample_rate: int, jobs: int | None, on_bad_audio: str) -> None:
    """A reference: utterance functionals (MFCC, energy, voicing, spectral shape, timing) + the same SVR (devel and
    test rho)."""

    cfg = make_config(ScoringConfig, "scoring", config_path, {})
    corpus = read_corpus(data)
    check_label_range(corpus, cfg.label_min, cfg.label_max)
    ev = evaluate_baseline(corpus, cfg, sample_rate=sample_rate, jobs=jobs, policy=BadAudioPolicy(on_bad_audio))
    log.info(
        f"functionals + SVR: C={ev.c:g}  {chosen_by(ev)}devel rho={format_rho_ci(ev.devel_rho, ev.devel_ci)}  "
        f"test rho={format_rho_ci(ev.test_rho, ev.test_ci)}  [95% intervals, {ev.resampled} resampled]"
    )


def chosen_by(ev) -> str:
    """The validation score C was chosen by, as `evaluate` and `baseline` print it before devel's ("" under
    scoring.validation devel: the devel rho is that score)."""
    return "" if ev.validation == "devel" else f"{ev.label} rho={format_rho_ci(ev.score, ev.score_ci)}  "


def search_options(func: Callable) -> Callable:
    """The options `run` and `submit` share (same names, same meaning)."""
    options = [
        click.argument("space", type=click.Path(dir_okay=False)),
        click.option(
            "--data", type=click.Path(), help="corpus folder or manifest CSV (default: the built-in demo corpus)"
        ),
        click.option("--name", help="experiment name (default: experiment.name of the space)"),
        click.option(
            "--runs",
            default="runs",
            show_default=True,
            type=click.Path(file_okay=False),
            help="folder of run folders: a local path (on a cluster: storage every node mounts) or "
            "s3://bucket/prefix, gs://bucket/prefix",
        ),
        click.option(
            "--cache",
            type=click.Path(file_okay=False),
            help="spectrogram cache: a local path (default ~/.cache/auttention-search where the driver "
            "runs) or s3://bucket/prefix, gs://bucket/prefix",
        ),
        click.option("--num-samples", type=int, help="number of trials (overrides experiment.num_samples)"),
        click.option(
            "--time-budget",
            help="the whole search's wall time, trials, confirmation and export, e.g. 6h "
            "(overrides experiment.time_budget)",
        ),
        click.option("--resume", is_flag=True, help="continue an interrupted search of this name"),
        click.option(
            "--delivery",
            type=click.Choice(DELIVERIES),
            default=AUTO,
            show_default=True,
            help="how trials get the spectrograms, once per node: through Ray's object store, or "
            "memory-mapped from a node copy of the cache (auto: the object store when they fit "
            f"in {OBJECT_STORE_SHARE:.0%} of a node's)",
        ),
        on_bad_audio_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@search_options
@click.option(
    "--address",
    envvar="RAY_ADDRESS",
    help="a running Ray cluster, e.g. auto (the one started on this "
    "machine) or 10.0.0.1:6379 (default: $RAY_ADDRESS, else start Ray here)",
)
@click.option(
    "--dashboard/--no-dashboard", default=True, show_default=True, help="start the Ray dashboard (local Ray only)"
)
@click.option("--verbose", is_flag=True, help="show every trial worker's log lines too")
@click.option(
    "--mlflow",
    metavar="URI",
    envvar="MLFLOW_TRACKING_URI",
    help="log each trial's parameters and per-epoch metrics, and the exported "
    "best's metrics and files, to this MLflow tracking server "
    "(default: $MLFLOW_TRACKING_URI; needs the [mlflow] extra)",
)
@user_errors
def run(
    space: str,
    address: str | None,
    dashboard: bool,
    verbose: bool,
    on_bad_audio: str,
    mlflow: str | None,
    **options: Any,
) -> None:
    """Search SPACE (YAML) with Ray Tune + Optuna; export the best configuration's test predictions."""
    from search.runner import run_search

    run_search(
        space,
        address=address,
        dashboard=dashboard,
        verbose=verbose,
        policy=BadAudioPolicy(on_bad_audio),
        mlflow=mlflow,
        local_cache=os.environ.get(CACHE_ENV),
        **options,
    )


ADDRESS = click.option(
    "--address",
    envvar="RAY_API_SERVER_ADDRESS",
    help="the cluster's dashboard, e.g. http://127.0.0.1:8265 "
    "(default: $RAY_API_SERVER_ADDRESS, else http://127.0.0.1:8265)",
)


@main.command()
@search_options
@ADDRESS
@click.option("--wait", is_flag=True, help="follow the job's output until it ends; exit non-zero unless it succeeded")
@user_errors
def submit(space: str, address: str | None, wait: bool, **options: Any) -> None:
    """Run the search of SPACE as a Ray job on a cluster; prints the job id and its dashboard page."""
    from search import jobs

    job_id, url = jobs.submit(space, address=address, **options)
    log.info(f"job: {job_id}")
    log.info(f"dashboard: {url}")
    log.info(f"follow: auttention-search logs {job_id} --follow" + (f" --address {address}" if address else ""))
    if wait:
        for chunk in jobs.follow(job_id, address):
            click.echo(chunk, nl=False)
        state = jobs.status(job_id, address)
        log.info(f"job {job_id}: {state}")
        if state != "SUCCEEDED":
            sys.exit(1)


@main.command("jobs")
@ADDRESS
@click.option("--all", "everything", is_flag=True, help="also jobs that are not searches")
@user_errors
def jobs_(address: str | None, everything: bool) -> None:
    """List the searches submitted to the cluster, newest first, with their status."""

    from search import jobs

    rows = jobs.list_jobs(address, everything)
    if not rows:
        log.info("no jobs")
        return
    log.info(f"{'job':<40} {'status':<10} {'started':<19} experiment")
    for r in rows:
        started = (
            datetime.datetime.fromtimestamp(r["start_time"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
            if r["start_time"]
            else ""
        )
        log.info(f"{r['job']:<40} {r['status']:<10} {started:<19} {r['experiment']}")


@main.command()
@click.argument("job")
@ADDRESS
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@user_errors
def logs(job: str, address: str | None, follow: bool) -> None:
    """Print JOB's output (the search's progress, one line per scored epoch)."""
    from search import jobs

    if follow:
        for chunk in jobs.follow(job, address):
            click.echo(chunk, nl=False)
    else:
        click.echo(jobs.logs(job, address), nl=False)


@main.command()
@click.argument("job")
@ADDRESS
@user_errors
def stop(job: str, address: str | None) -> None:
    """Stop JOB; finished trials keep their results (`submit ... --resume` continues the search)."""
    from search import jobs

    log.info(f"job {job}: {jobs.stop(job, address)}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@user_errors
def report(run_dir: str) -> None:
    """(Re)write RUN_DIR/report/index.html: the search at a glance. RUN_DIR: runs/NAME, or a run folder
    on object storage (s3://bucket/runs/NAME: fetched into a local mirror, the report written back)."""
    from search.report import write_report

    run = run_folder_of(run_dir, home_cache(os.environ.get(CACHE_ENV)))
    if run.remote:
        run.check()
        run.pull()
    page = write_report(run.local)
    run.push("report")
    log.info(f"report: {run.remote_path(page)}")


if __name__ == "__main__":
    main()
