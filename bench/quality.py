"""Prediction quality: the MFCC baseline, the pipeline and the search, devel and test rho, over corpora.

For each demo-corpus seed (the built-in generator, unchanged; `--clips` / `--speakers` make larger
corpora with its own size options) and each `--data` corpus, through the real CLI:

- baseline: the functionals baseline as `pipeline` computes it beside its result (the same clips and SVR as
  `auttention-search baseline`);
- pipeline: `auttention-search pipeline --config configs/demo.yaml`;
- search:   `auttention-search run spaces/demo.yaml` (its exported predictions: the chosen configuration's
  seed ensemble; and search-single-model, the chosen trial's own model, from the same run).

With --ablations, each change of the method is also measured on its own, against the same runs:
- pipeline-crop128: configs/demo.yaml with the former fixed `frames: 128` (5.1 s cropped/padded);
- pipeline-clip70: configs/demo.yaml with the former `clip_below: -70`;
- pipeline-fused: configs/demo.yaml with the functionals fused in (`scoring.fuse: attention+seq2seq+functionals`);
- pipeline-feature-F: the pipeline's own two trained models, read out with feature F (no retraining);
- search-best-epoch: the search chosen by its single best epoch, without confirmation seeds (the
  former selection), on the first corpus only (a search is the costly part).

With --functionals-parts, the functionals' spectral-shape and timing entries are measured (no retraining):
- functionals-v1: the functionals without them (their first version: MFCC, energy and voicing);
- fused-functionals / fused-functionals-v1: the pipeline's autoencoder features fused with the functionals,
  with and without them; each with C by devel and by each of --validations (suffix -V).

With --searcher-seeds K ..., the shipped space runs again with experiment.seed and training.seed K
(search-searcher-seedK): the same corpus, other trials drawn and other weights, to show how far one
search's result moves from run to run.

With --audeep, auDeep's recipe (one autoencoder pair per clip_below, fused) is measured:
- pipeline-audeep: configs/demo.yaml's pipeline run at clip_below -40, -60 and -70 besides its own -50,
  the four runs' fusion features side by side (C by devel, and by each of --validations: suffix -V).

With --validations V ..., scoring.validation V (devel, swap, speaker_folds) is measured:
- pipeline-V: the pipeline's own fusion features with C chosen by V (no retraining: only C can change);
- search-V: spaces/demo.yaml with scoring.validation V (every choice of the search made by V's score);
  with --no-plain-search the plain `search` rows (spaces/demo.yaml as shipped: validation swap; it also
  counts as search-V of its own validation V in the table of changes) are left
  out (e.g. when they were measured before: `--tables-from` merges saved files); search-V of the shipped
  space's own validation is not run twice. A search that finished in
  the --work folder before is read, not run again (an interrupted bench goes on where it stopped).

    python bench/quality.py [--seeds 0 1 2] [--data CORPUS ...] [--time-budget 5m] [--ablations [--variants fused]]
    python bench/quality.py --seeds 0 1 2 --validations swap speaker_folds --no-plain-search
    python bench/quality.py --seeds 0 1 2 --no-search --functionals-parts --validations swap
    python bench/quality.py --seeds 0 1 2 --no-search --audeep --validations swap
    python bench/quality.py --tables-from bench/results/quality.json [more.json ...]   # saved runs' tables, merged

Prints the tables, every rho with its 95% bootstrap interval (speakers resampled) and the paired difference
of the pipeline and the search to the functionals baseline on the same clips, and writes
bench/results/quality.json ({"rows": [{"corpus", "method", "devel_rho", "test_rho", "devel_ci", "test_ci",
"vs_functionals", "validation", "score", "score_ci"}, ...], "summary": ...}); with --clips / --speakers,
quality-<N>clips-<M>spk.json instead, so the default-size results stay (with --no-search,
quality-pipelines*.json; with --validations, quality*-validations*.json; with --functionals-parts,
quality*-functionals*.json; with --audeep, quality*-audeep*.json; with --searcher-seeds,
quality*-searcher-seeds*.json). Test rho is shown only; nothing
here chooses by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auttention import TF_LOG_LEVEL  # noqa: E402
from auttention.formatting import format_difference, format_rho_ci  # noqa: E402
from bench.common import ROOT, markdown_table, table, write_result  # noqa: E402

CLI = [sys.executable, "-m", "search"]
FEATURES = ("final", "mean", "mean_std", "final_mean_std")


def cli(*args: str, log: Path) -> str:
    """Run the real command line; its output (also appended to `log`), or an error with its last lines."""
    t0 = time.perf_counter()
    done = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": TF_LOG_LEVEL})
    with open(log, "a") as f:
        f.write(f"$ auttention-search {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise RuntimeError(f"auttention-search {args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    print(f"  {args[0]}: {time.perf_counter() - t0:.0f} s", flush=True)
    return done.stdout


def demo(seed: int, cache: Path, clips: int | None, speakers: int | None) -> Path:
    """The demo corpus of `seed` (at the generator's default size unless asked otherwise)."""
    from auttention.democorpus import build_demo_corpus

    folder = cache / "demo-corpus" / f"seed{seed}{size_tag(clips, speakers)}"
    if not (folder / "lab" / "labels.csv").is_file():
        kwargs = {k: v for k, v in (("n_clips", clips), ("n_speakers", speakers)) if v}
        build_demo_corpus(folder, seed=seed, **kwargs)
    return folder


def pipeline(data: Path, config: Path, out: Path, log: Path) -> dict:
    cli("pipeline", "--data", str(data), "--config", str(config), "--out", str(out), log=log)
    return json.loads((out / "metrics.json").read_text())


def readouts(data: Path, out: Path, config: Path) -> dict[str, dict]:
    """The pipeline's trained models in `out`, read out with every feature choice: {feature: metrics} (the
    corpus `data`'s labels and speakers joined, so the intervals resample speakers as the pipeline's do)."""
    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    from auttention import spectrogram as spectro
    from auttention.config import load_pipeline_config
    from auttention.corpus import read_corpus
    from auttention.engine import FUSION, Engine, provenance
    from auttention.training import Trainer

    tf.get_logger().setLevel("ERROR")  # a model per feature choice: tf.function's retracing notes are expected
    base = load_pipeline_config(config)
    spec = spectro.read(out / "spectrograms").with_labels(read_corpus(data))
    trained = {n: Trainer.load(out / n) for n in ("attention", "seq2seq")}
    results = {}
    for feature in FEATURES:
        cfg = dataclasses.replace(base, **{n: dataclasses.replace(getattr(base, n), feature=feature)
                                           for n in ("attention", "seq2seq")})
        trainers = {}
        for name, old in trained.items():
            new = Trainer(getattr(cfg, name), old.train_cfg, old.n_frames, old.n_mels, made_from=old.made_from)
            new.autoencoder.set_weights(old.autoencoder.get_weights())  # the read-out has no weights of its own
            trainers[name] = new
        _, evaluations = Engine(trainers, spec, cfg.training, cfg.scoring, provenance(cfg, spec)).evaluate()
        results[feature] = evaluations[FUSION].metrics()
    return results


def search(data: Path, runs: Path, cache: Path, name: str, budget: str | None, log: Path,
           space: Path | None = None) -> dict:
    args = ["run", str(space or ROOT / "spaces" / "demo.yaml"), "--data", str(data), "--name", name,
            "--runs", str(runs), "--cache", str(cache)]
    if budget:
        args += ["--time-budget", budget]
    if (runs / name / "best" / "metrics.json").is_file() and (runs / name / "trials.csv").is_file():
        print(f"  run: {name} finished in this work folder before; read, not run again", flush=True)
    else:
        cli(*args, log=log)
    metrics = json.loads((runs / name / "best" / "metrics.json").read_text())
    import pandas as pd

    trials = pd.read_csv(runs / name / "trials.csv")
    metrics["trials"] = {"started": len(trials), "completed": int((trials["status"] == "completed").sum())}
    return metrics


def shipped_validation() -> str:
    """spaces/demo.yaml's scoring.validation (what its plain search chooses by)."""
    import yaml

    return (yaml.safe_load((ROOT / "spaces" / "demo.yaml").read_text()).get("scoring") or {}).get("validation", "devel")


def best_epoch_space(tmp: Path) -> Path:
    """spaces/demo.yaml chosen the former way: the single best epoch of any trial, no confirmation."""
    return space_variant(tmp, "best-epoch", {"experiment": {"select": "best", "confirm_top": 0}})


def space_variant(tmp: Path, name: str, changes: dict[str, dict]) -> Path:
    """spaces/demo.yaml with some settings changed ({section: {key: value}})."""
    import yaml

    space = yaml.safe_load((ROOT / "spaces" / "demo.yaml").read_text())
    for section, values in changes.items():
        space.setdefault(section, {}).update(values)
    path = tmp / f"demo-{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def rechosen(out: Path, branch: str, data: Path, config: Path, validation: str) -> dict:
    """The pipeline's features of `branch` (fusion, functionals) in `out` scored with C chosen by
    scoring.validation `validation` (the corpus' labels and speakers joined): its metrics."""
    from auttention.evaluation import evaluate

    return evaluate(branch_features(out, branch, data), scoring_for(config, validation)).metrics()


def scoring_for(config: Path, validation: str):
    """The scoring settings of `config` with scoring.validation `validation`."""
    from auttention.config import load_pipeline_config

    return dataclasses.replace(load_pipeline_config(config).scoring, validation=validation)


def truth(frame):
    """The columns of `frame` that evaluation.compare reads as the truth: file_name, label, and speaker where known."""
    return frame[[c for c in ("file_name", "label", "speaker") if c in frame.columns]]


def branch_features(out: Path, branch: str, data: Path):
    """The pipeline's feature set of `branch` in `out`, with the corpus `data`'s labels and speakers joined."""
    from auttention.corpus import read_corpus
    from auttention.features import read_features

    frame = read_features(out / "features" / branch).drop(columns=["label", "speaker"], errors="ignore")
    return frame.merge(truth(read_corpus(data)), on="file_name")


def functionals_parts(out: Path, data: Path, config: Path, validation: str) -> dict[str, tuple[dict, dict]]:
    """The functionals with and without their spectral-shape and timing entries (the first version's
    columns: MFCC, energy and voicing), alone and fused with the pipeline's autoencoder features in `out`,
    C chosen by `validation`: {method: (metrics, paired difference to the full functionals alone)}."""
    from auttention.baseline import FUNCTIONALS, mfcc_functional_names
    from auttention.evaluation import evaluate, versus
    from auttention.features import feature_columns, fuse

    scoring = scoring_for(config, validation)
    full = branch_features(out, FUNCTIONALS, data)
    first = mfcc_functional_names().index("centroid_khz_mean")  # the first version's entries come first
    older = full.drop(columns=feature_columns(full)[first:])
    fusion = branch_features(out, "fusion", data)
    sets = {"functionals": full, "functionals-v1": older,
            "fused-functionals": fuse([fusion, full]), "fused-functionals-v1": fuse([fusion, older])}
    evaluations = {name: evaluate(frame, scoring) for name, frame in sets.items()}
    tag = "" if validation == "devel" else f"-{validation}"
    return {f"{name}{tag}": (ev.metrics(), versus(ev, evaluations["functionals"], truth(full)))
            for name, ev in evaluations.items() if name != "functionals"}


AUDEEP_CLIPS = (-40.0, -60.0, -70.0)  # with configs/demo.yaml's own -50: auDeep's recipe spans -30..-75 dB


def audeep_fused(outs: list[Path], data: Path, config: Path, validation: str) -> tuple[dict, dict]:
    """auDeep's recipe on the pipelines in `outs` (configs/demo.yaml at one clip_below each, the first the
    plain one): their fusion features side by side, C chosen by `validation`; (metrics, paired difference
    to the functionals on the same clips)."""
    from auttention.evaluation import evaluate, versus
    from auttention.features import feature_columns

    scoring = scoring_for(config, validation)
    sets = [branch_features(out, "fusion", data) for out in outs]
    fused = sets[0]
    for i, frame in enumerate(sets[1:], 1):  # the same columns from another spectrogram: named apart
        fused = fused.merge(frame[["file_name", *feature_columns(frame)]].rename(
            columns={c: f"{c}_clip{i}" for c in feature_columns(frame)}), on="file_name", validate="one_to_one")
    functionals = branch_features(outs[0], "functionals", data)
    ev = evaluate(fused, scoring)
    return ev.metrics(), versus(ev, evaluate(functionals, scoring), truth(functionals))


def variant(tmp: Path, name: str, changes: dict[str, dict]) -> Path:
    """configs/demo.yaml with some settings changed ({section: {key: value}})."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    path = tmp / f"demo-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# each measured alone against configs/demo.yaml: the former defaults, and the functionals fused in
VARIANTS = {"crop128": {"spectrogram": {"frames": 128}}, "clip70": {"spectrogram": {"clip_below": -70.0}},
            "fused": {"scoring": {"fuse": "attention+seq2seq+functionals"}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="demo corpus seeds")
    ap.add_argument("--clips", type=int, help="demo corpus size (default: the generator's)")
    ap.add_argument("--speakers", type=int, help="demo corpus speakers (default: the generator's)")
    ap.add_argument("--data", nargs="*", default=[], help="further corpora (ComParE layout or manifest)")
    ap.add_argument("--time-budget", default=None, help="the search's budget (default: the space's)")
    ap.add_argument("--ablations", action="store_true", help="measure each change on its own too")
    ap.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=None,
                    help="with --ablations: only these pipeline variants (default: all)")
    ap.add_argument("--no-search", action="store_true", help="baseline and pipeline only")
    ap.add_argument("--validations", nargs="*", choices=["devel", "swap", "speaker_folds"], default=[],
                    help="also measure these scoring.validation choices (pipeline C and a search each)")
    ap.add_argument("--no-plain-search", action="store_true",
                    help="with --validations: leave out the plain search (spaces/demo.yaml as shipped)")
    ap.add_argument("--functionals-parts", action="store_true",
                    help="the functionals without their spectral-shape and timing entries, alone and fused with the "
                         "pipeline's autoencoders (C by devel, and by each of --validations; no retraining)")
    ap.add_argument("--audeep", action="store_true",
                    help="auDeep's recipe: configs/demo.yaml's pipeline at clip_below -40, -50, -60 and -70, the four "
                         "pairs' features fused (C by devel, and by each of --validations)")
    ap.add_argument("--searcher-seeds", type=int, nargs="*", default=[],
                    help="also run the shipped space with these experiment.seed and training.seed values (its own "
                         "is 0): how much one search's result moves from run to run")
    ap.add_argument("--work", type=Path, help="folder for runs and caches (default: a temporary one)")
    ap.add_argument("--tables-from", type=Path, nargs="*", help="only print the tables of saved quality*.json "
                                                                "files (rows merged, the summary computed again)")
    args = ap.parse_args()
    if args.tables_from:
        rows = list({(row["corpus"], row["method"]): row for path in reversed(args.tables_from)
                     for row in json.loads(path.read_text())["rows"]}.values())  # a row in two files: the first's
        order = {key: i for i, key in enumerate(dict.fromkeys((r["corpus"], r["method"]) for path in args.tables_from
                                                              for r in json.loads(path.read_text())["rows"]))}
        rows.sort(key=lambda r: (r["corpus"], order[r["corpus"], r["method"]]))
        print_tables(rows, summarise(rows))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="auttention-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    cache, runs, log = work / "cache", work / "runs", work / "quality.log"
    print(f"work folder {work} (commands and their output: {log})", flush=True)
    tag = size_tag(args.clips, args.speakers)
    corpora = [(f"demo-seed{s}{tag}", demo(s, cache, args.clips, args.speakers)) for s in args.seeds]
    corpora += [(Path(d).name, Path(d)) for d in args.data]
    rows = []

    def add(corpus: str, method: str, entry: dict, versus: dict | None = None, **extra) -> None:
        """One row: a metrics.json entry's devel and test rho with their 95% intervals, and where given the
        paired difference to the functionals baseline on the same clips (evaluation.compare's entries)."""
        row = {"corpus": corpus, "method": method, "devel_rho": entry["devel_rho"], "test_rho": entry.get("test_rho"),
               "devel_ci": entry.get("devel_rho_ci"), "test_ci": entry.get("test_rho_ci"),
               "validation": entry.get("validation", "devel"), "score": entry.get("score", entry["devel_rho"]),
               "score_ci": entry.get("score_ci", entry.get("devel_rho_ci")), **extra}
        if versus:
            row["vs_functionals"] = versus
        rows.append(row)
        scored = f"{row['validation']} {format_rho_ci(row['score'], row['score_ci'])}  " \
            if row["validation"] != "devel" else ""
        print(f"{corpus:<22} {method:<28} {scored}devel {format_rho_ci(row['devel_rho'], row['devel_ci'])}  "
              f"test {format_rho_ci(row['test_rho'], row['test_ci'])}"
              + (f"  vs functionals: devel {format_difference(versus.get('devel'))}, "
                 f"test {format_difference(versus.get('test'))}" if versus else ""), flush=True)

    try:
        run_all(args, corpora, runs, cache, log, work, add)
    finally:  # what was measured is kept even when a later run fails
        report(rows, args)


def size_tag(clips: int | None, speakers: int | None) -> str:
    """The name suffix of demo corpora of a size other than the generator's (their folders, rows and JSON)."""
    return (f"-{clips}clips" if clips else "") + (f"-{speakers}spk" if speakers else "")


def run_all(args, corpora, runs: Path, cache: Path, log: Path, work: Path, add) -> None:
    """Every method on every corpus, in order (rows through `add`)."""
    for i, (name, data) in enumerate(corpora):
        print(f"\n{name}: {data}", flush=True)
        out = runs / f"pipeline-{name}"
        m = pipeline(data, ROOT / "configs" / "demo.yaml", out, log)
        # the baseline as every run computes it: the same clips, the same SVR (`auttention-search baseline`)
        add(name, "baseline", m["functionals"])
        add(name, "pipeline", m["fusion"], m["fusion_vs_functionals"])
        if args.ablations:
            for tag, changes in VARIANTS.items():
                if args.variants is not None and tag not in args.variants:
                    continue
                m = pipeline(data, variant(work, tag, changes), runs / f"pipeline-{tag}-{name}", log)
                add(name, f"pipeline-{tag}", m["fusion"], m["fusion_vs_functionals"])
            for feature, r in readouts(data, out, ROOT / "configs" / "demo.yaml").items():
                add(name, f"pipeline-feature-{feature}", r)
        for validation in args.validations:
            for method, branch in (("baseline", "functionals"), ("pipeline", "fusion")):
                add(name, f"{method}-{validation}", rechosen(out, branch, data, ROOT / "configs" / "demo.yaml", validation))
        if args.functionals_parts:
            for validation in dict.fromkeys(["devel", *args.validations]):
                for method, (metrics, paired) in functionals_parts(out, data, ROOT / "configs" / "demo.yaml",
                                                                   validation).items():
                    add(name, method, metrics, paired)
        if args.audeep:
            outs = [out] + [runs / f"pipeline-audeep{-clip:g}-{name}" for clip in AUDEEP_CLIPS]
            for clip, folder in zip(AUDEEP_CLIPS, outs[1:]):
                if not (folder / "metrics.json").is_file():
                    pipeline(data, variant(work, f"audeep{-clip:g}", {"spectrogram": {"clip_below": clip}}), folder, log)
            for validation in dict.fromkeys(["devel", *args.validations]):
                metrics, paired = audeep_fused(outs, data, ROOT / "configs" / "demo.yaml", validation)
                add(name, "pipeline-audeep" + ("" if validation == "devel" else f"-{validation}"), metrics, paired)
        if args.no_search:
            continue
        plain = [] if args.validations and args.no_plain_search else [("search", None)]
        shipped = shipped_validation() if plain else None  # the plain search is already the search by it
        for method, validation in plain + [(f"search-{v}", v) for v in args.validations if v != shipped]:
            space = space_variant(work, validation, {"scoring": {"validation": validation}}) if validation else None
            m = search(data, runs, cache, f"{method}-{name}", args.time_budget, log, space)
            searched(add, name, method, m, full=validation is None)
        for k in args.searcher_seeds:  # the same space and corpus, other draws of TPE and other training seeds
            method = f"search-searcher-seed{k}"
            m = search(data, runs, cache, f"{method}-{name}", args.time_budget, log,
                       space_variant(work, f"searcher-seed{k}", {"experiment": {"seed": k}, "training": {"seed": k}}))
            searched(add, name, method, m, full=False)
        if args.ablations and i == 0:
            m = search(data, runs, cache, f"search-best-epoch-{name}", args.time_budget, log, best_epoch_space(work))
            add(name, "search-best-epoch", m["fusion"], trial_id=m["trial_id"])


def searched(add, name: str, method: str, m: dict, full: bool) -> None:
    """The rows of one search's best/metrics.json: its export (with `full`, also the same run's chosen
    configuration over its seeds and the chosen trial's own model)."""
    seeds = [s for c in m.get("confirmation", []) if c["trial_id"] == m["trial_id"] for s in c["seeds"]]
    across = m.get("configurations") or {}
    exported = (across if across.get("k", 1) > 1 else None) or m.get("ensemble") or m["fusion"]
    add(name, method, {"validation": m["fusion"].get("validation", "devel"), **exported},
        m.get("exported_vs_functionals"), trial_id=m["trial_id"], selection_score=m["selection"]["selection_score"],
        seeds=seeds, confirmed=len(m.get("confirmation", [])), configurations=across.get("k", 1),
        trials=m.get("trials"))
    if full:
        # the same run's chosen configuration over its seeds (what the export is without averaging configurations)
        add(name, f"{method}-one-configuration", m.get("ensemble") or m["fusion"], trial_id=m["trial_id"])
        # the same run's chosen trial, its own single model (what a search without the seed ensemble exports)
        add(name, f"{method}-single-model", m["fusion"], trial_id=m["trial_id"])


# each change measured alone: (what it is, the method with it, the same runs without it)
CHANGES = [("whole clips (vs frames 128)", "pipeline", "pipeline-crop128"),
           ("clip_below -50 (vs -70)", "pipeline", "pipeline-clip70"),
           ("functionals fused in (vs the autoencoders alone)", "pipeline-fused", "pipeline"),
           ("feature final_mean_std (vs final)", "pipeline-feature-final_mean_std", "pipeline-feature-final"),
           ("feature mean (vs final)", "pipeline-feature-mean", "pipeline-feature-final"),
           ("feature mean_std (vs final)", "pipeline-feature-mean_std", "pipeline-feature-final"),
           ("selection + confirmation (vs best epoch)", "search", "search-best-epoch"),
           ("configurations averaged (vs the chosen one's seeds)", "search", "search-one-configuration"),
           ("seed ensemble (vs chosen trial's model)", "search-one-configuration", "search-single-model"),
           ("C by swap (vs devel), the pipeline's features", "pipeline-swap", "pipeline"),
           ("C by speaker folds (vs devel), the pipeline's features", "pipeline-speaker_folds", "pipeline"),
           ("search by swap (vs devel)", "search-swap", "search-devel"),
           ("auDeep: pairs at clip_below -40/-50/-60/-70 fused (vs -50 alone)", "pipeline-audeep", "pipeline"),
           ("the same, C by swap", "pipeline-audeep-swap", "pipeline-swap"),
           ("spectral shape + timing in the functionals (vs without)", "baseline", "functionals-v1"),
           ("the same, C by swap", "baseline-swap", "functionals-v1-swap"),
           ("the same, fused with the pipeline's autoencoders", "fused-functionals", "fused-functionals-v1"),
           ("the same fused, C by swap", "fused-functionals-swap", "fused-functionals-v1-swap"),
           ("search by speaker folds (vs devel)", "search-speaker_folds", "search-devel")]


def changes(rows: list[dict]) -> list[list]:
    """Per change: its test (and devel) rho minus the same corpus's without it, mean and sd over corpora; and
    the score both were chosen by, where both were chosen by the same validation (n/a otherwise)."""
    by = {(r["corpus"], r["method"]): r for r in rows if r["test_rho"] is not None}
    for r in rows:  # the plain search (the space as shipped) is also the search by its own validation
        if r["method"] == "search" and r["test_rho"] is not None:
            by.setdefault((r["corpus"], f"search-{r.get('validation', 'devel')}"), r)
    corpora = dict.fromkeys(r["corpus"] for r in rows)
    out = []
    for what, with_it, without in CHANGES:
        pairs = [(by[c, with_it], by[c, without]) for c in corpora if (c, with_it) in by and (c, without) in by]
        if pairs:
            dt = [a["test_rho"] - b["test_rho"] for a, b in pairs]
            dd = [a["devel_rho"] - b["devel_rho"] for a, b in pairs]
            # the score each was chosen by (where both were chosen by the same validation: what a choice may use)
            ds = [a.get("score", a["devel_rho"]) - b.get("score", b["devel_rho"]) for a, b in pairs
                  if a.get("validation", "devel") == b.get("validation", "devel")]
            out.append([what, len(pairs), float(np.mean(ds)) if len(ds) == len(pairs) else float("nan"),
                        float(np.mean(dd)), float(np.mean(dt)), float(np.std(dt)), " ".join(f"{d:+.3f}" for d in dt)])
    return out


def print_tables(rows: list[dict], summary: dict) -> None:
    """The rows (each rho with its 95% interval), the paired differences to the functionals baseline, the
    means per method and each change alone, as plain text and then as Markdown."""
    header = ["corpus", "method", "score chosen by [95% CI]", "devel rho [95% CI]", "test rho [95% CI]"]
    cells = [[r["corpus"], r["method"], f"{r.get('validation', 'devel')} {format_rho_ci(r.get('score', r['devel_rho']), r.get('score_ci', r.get('devel_ci')))}",
              format_rho_ci(r["devel_rho"], r.get("devel_ci")), format_rho_ci(r["test_rho"], r.get("test_ci"))]
             for r in rows]
    paired = [[r["corpus"], r["method"], scored_difference(r["vs_functionals"]),
               format_difference(r["vs_functionals"].get("devel")), format_difference(r["vs_functionals"].get("test"))]
              for r in rows if r.get("vs_functionals")]
    paired_header = ["corpus", "method", "score vs functionals [95% CI]", "devel vs functionals [95% CI]",
                     "test vs functionals [95% CI]"]
    means = [[m, s["corpora"], s.get("mean_score", s["mean_devel_rho"]), s["mean_devel_rho"], s["mean_test_rho"],
              s["sd_test_rho"], s["mean_gap"], s.get("mean_score_vs_functionals", float("nan")),
              s.get("mean_test_vs_functionals", float("nan")), s.get("test_intervals_above_0", "")]
             for m, s in summary.items()]
    mean_header = ["method (demo seeds)", "corpora", "mean score chosen by", "mean devel", "mean test", "sd test",
                   "devel - test", "score vs functionals", "mean test vs functionals", "test intervals above 0"]
    moved = changes(rows)
    moved_header = ["change, measured alone", "corpora", "score moved", "devel moved", "test moved", "sd",
                    "test moved per corpus"]
    for fmt in (table, markdown_table):
        print("\n" + "\n\n".join(fmt(c, h) for c, h in ((cells, header), (paired, paired_header),
                                                          (means, mean_header), (moved, moved_header)) if c))


def scored_difference(versus: dict) -> str:
    """The paired difference of the validation scores (where the choice was not by devel), named by it."""
    return f"{versus['score_name']} {format_difference(versus.get('score'))}" if versus.get("score_name") else "= devel"


def summarise(rows: list[dict]) -> dict:
    """Per method over the demo corpora: mean devel and test rho, sd of test, the devel - test gap, and the
    mean paired difference to the functionals with on how many corpora its interval lies above 0."""
    summary = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method and r["corpus"].startswith("demo-")]
        tests = [r["test_rho"] for r in mine if r["test_rho"] is not None]
        if mine and tests:
            summary[method] = {"corpora": len(mine), "mean_devel_rho": float(np.mean([r["devel_rho"] for r in mine])),
                               "mean_test_rho": float(np.mean(tests)), "sd_test_rho": float(np.std(tests)),
                               "mean_gap": float(np.mean([r["devel_rho"] - r["test_rho"] for r in mine])),
                               "mean_score": float(np.mean([r.get("score", r["devel_rho"]) for r in mine]))}
            # the score chosen by against the functionals' score by the same validation on the same clips
            base = {(r["corpus"], r.get("validation", "devel")): r for r in rows if r["method"].startswith("baseline")}
            gaps = [r.get("score", r["devel_rho"]) - base[key].get("score", base[key]["devel_rho"])
                    for r in mine if (key := (r["corpus"], r.get("validation", "devel"))) in base]
            if gaps and not method.startswith("baseline"):
                summary[method]["mean_score_vs_functionals"] = float(np.mean(gaps))
            versus = [(r["vs_functionals"] or {}).get("test") for r in mine if r.get("vs_functionals")]
            versus = [v for v in versus if v]
            if versus:  # the paired differences on each corpus, and on how many their interval lies above 0
                summary[method]["mean_test_vs_functionals"] = float(np.mean([v["difference"] for v in versus]))
                summary[method]["test_intervals_above_0"] = f"{sum(bool(v['ci']) and v['ci'][0] > 0 for v in versus)}/{len(versus)}"
    return summary


def report(rows: list[dict], args) -> None:
    """Print the tables and write bench/results/quality*.json."""
    summary = summarise(rows)
    print_tables(rows, summary)
    # --no-search measures the pipelines only, --validations the other validations: each its own file, so that
    # a run's search rows are never overwritten
    kind = ("-pipelines" if args.no_search else "") + ("-validations" if args.validations else "") \
        + ("-functionals" if args.functionals_parts else "") + ("-audeep" if args.audeep else "") \
        + ("-searcher-seeds" if args.searcher_seeds else "")
    path = write_result(f"quality{kind}{size_tag(args.clips, args.speakers)}",
                        {"rows": rows, "summary": summary, "time_budget": args.time_budget,
                         "ablations": args.ablations, "validations": args.validations})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
