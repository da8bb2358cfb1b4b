"""Choosing the configuration to export, in a way that resists luck.

Many trials x epochs on a small devel set make the single best devel score optimistic. So:
1. each trial is ranked by its selection score (experiment.select: by default the mean of its last
   select_last scores), read from the checkpoint it would be exported from;
2. the top experiment.confirm_top configurations are trained again from scratch with
   experiment.confirm_seeds new training seeds (Ray tasks with a trial's resources), each scored the
   same way;
3. the exported best is the configuration with the best mean selection score over its seeds (the
   original trial's among them). Test rho, where test labels are known, is recorded for every seed
   and shown, never used to choose.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .tuning import selected_checkpoint


@dataclasses.dataclass
class Candidate:
    """A trial as a candidate for export: its configuration, selected checkpoint and scores per seed."""

    trial_id: str
    result: Any
    checkpoint: str  # the selected checkpoint's folder: a local path, or a URI on object storage
    epoch: int
    score: float  # the trial's own selection score
    seeds: list[dict] = dataclasses.field(default_factory=list)  # {seed, devel_rho, test_rho, epochs}
    predictions: list[dict] = dataclasses.field(default_factory=list)  # per seed: {devel, test} DataFrames

    @property
    def mean_devel(self) -> float:
        """The mean selection score over every seed (the original trial's first)."""
        values = [s["devel_rho"] for s in self.seeds if s["devel_rho"] is not None and math.isfinite(s["devel_rho"])]
        return float(np.mean(values)) if values else self.score

    def record(self) -> dict[str, Any]:
        """What metrics.json and the report show of it."""
        tests = [s["test_rho"] for s in self.seeds if s.get("test_rho") is not None]
        return {"trial_id": self.trial_id, "selection_score": self.score, "mean_devel_rho": self.mean_devel,
                "mean_test_rho": float(np.mean(tests)) if tests else None, "seeds": self.seeds}


def rank_trials(results, metric: str, select: str, max_epochs: int | None = None) -> list[Candidate]:
    """Every trial with a scored checkpoint, best selection score first; only those that trained all
    max_epochs when there are any (a trial ASHA stopped early is not exported as if it were finished).
    Reads each trial where Tune stored it (local disk or object storage)."""
    from auttention import storage

    ranked = []
    for result in results:
        folder = storage.of_filesystem(getattr(result, "filesystem", None), result.path) if result.path else None
        found = selected_checkpoint(folder, metric, select) if folder else None
        if found:
            checkpoint, metrics, score = found
            trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
            ranked.append(Candidate(str(trial_id), result, str(checkpoint), int(metrics.get("epoch", 0)), score))
    finished = [c for c in ranked if max_epochs and c.result.metrics and
                c.result.metrics.get("epoch", 0) >= max_epochs]
    return sorted(finished or ranked, key=lambda c: c.score, reverse=True)


def evaluate_checkpoint(checkpoint: str, source, cfg, resources=None):
    """(evaluations, feature sets, epoch) of a trial checkpoint's two models on every partition
    (`source`: the spectrograms' search.sources.Source; `resources`: the space's, which TensorFlow keeps to)."""
    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    from auttention.pipeline import AutoencoderPair

    from .runfolder import local_checkpoint
    from .trial import configure_tensorflow

    if resources is not None:
        configure_tensorflow(resources.cpu, resources.gpu)

    with local_checkpoint(checkpoint) as folder:  # a checkpoint on object storage: fetched to this node
        pair = AutoencoderPair.load(folder, cfg, source.get())
    frames, evaluations = pair.evaluate()
    return evaluations, frames, pair.epoch


def train_seed(cfg, source, seed: int, experiment, max_epochs: int, resources=None) -> dict[str, Any]:
    """The configuration trained from scratch with training seed `seed` as a trial is (with the space's
    `resources`): its selection score over the epochs it reports, and the test rho of its last epoch
    (None without test labels)."""
    from auttention import import_tensorflow_quietly

    import_tensorflow_quietly()
    from auttention.pipeline import FUSION, AutoencoderPair

    from .trial import configure_tensorflow, epochs, selection_score

    if resources is not None:
        configure_tensorflow(resources.cpu, resources.gpu)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, seed=seed))
    pair = AutoencoderPair(cfg, source.get())
    history = []
    for _, metrics in epochs(pair, max_epochs, experiment.report_every):
        history.append(metrics[experiment.metric])
    _, evaluations = pair.evaluate()
    branch = experiment.metric.removesuffix("_rho")
    ev = evaluations[branch if branch in evaluations else FUSION]
    return {"seed": seed, "devel_rho": selection_score(history, experiment), "test_rho": ev.test_rho,
            "epochs": pair.epoch, "predictions": {"devel": ev.devel, "test": ev.test}}


def confirm(ranked: list[Candidate], space, sources: dict, echo: Callable[[str], None] = print) -> list[Candidate]:
    """Train the top experiment.confirm_top candidates again with experiment.confirm_seeds new seeds, in
    parallel as Ray tasks with a trial's resources; fill each candidate's `seeds` (its own first)."""
    import ray

    from .resources import trial_resources

    exp = space.experiment
    top = ranked[:exp.confirm_top] if exp.confirm_top else ranked[:1]
    need = trial_resources(space)
    task = ray.remote(train_seed).options(num_cpus=need["CPU"], num_gpus=need["GPU"], memory=need.get("memory"))
    own = ray.remote(evaluate_checkpoint).options(num_cpus=need["CPU"], num_gpus=need["GPU"], memory=need.get("memory"))
    jobs = []
    for cand in top:
        cfg = space.trial_config(cand.result.config)
        spec = sources[cfg.spectrogram.hash()]
        jobs.append((cand, None, own.remote(cand.checkpoint, spec, cfg, space.resources)))
        base = cfg.training.seed
        for i in range(1, (exp.confirm_seeds if exp.confirm_top else 0) + 1):
            jobs.append((cand, base + i, task.remote(cfg, spec, base + i, exp, space.scheduler.max_epochs, space.resources)))
    if len(jobs) > len(top):
        echo(f"selection: training the top {len(top)} configuration(s) again with {exp.confirm_seeds} new seed(s) "
             f"each ({len(jobs) - len(top)} runs)")
    branch = exp.metric.removesuffix("_rho")
    for cand, seed, ref in jobs:
        out = ray.get(ref)
        if seed is None:
            ev = out[0][branch] if branch in out[0] else out[0]["fusion"]
            cand.seeds.insert(0, {"seed": space.trial_config(cand.result.config).training.seed,
                                  "devel_rho": cand.score, "test_rho": ev.test_rho, "epochs": cand.epoch, "trial": True})
            cand.predictions.insert(0, {"devel": ev.devel, "test": ev.test})
        else:
            cand.predictions.append(out.pop("predictions"))
            cand.seeds.append(out)
            shown = f", test {out['test_rho']:.3f}" if out["test_rho"] is not None else ""
            echo(f"  trial {cand.trial_id} seed {seed}: selection score {out['devel_rho']:.3f}{shown}")
    return top


def ensemble(cand: Candidate, scoring) -> dict[str, Any]:
    """The chosen configuration's predictions averaged over its seeds (the trial's model and every
    confirmation seed's): {devel, test: DataFrame(file_name, prediction)}, post-processed as one model's.
    Averaging the seeds' models removes much of the variance a single training seed carries."""
    import pandas as pd

    from auttention.scoring import postprocess

    out = {}
    for part in ("devel", "test"):
        frames = [p[part].set_index("file_name")["prediction"] for p in cand.predictions]
        mean = pd.concat(frames, axis=1).mean(axis=1)
        out[part] = pd.DataFrame({"file_name": mean.index, "prediction": postprocess(mean.to_numpy(), scoring)})
    return out


def choose(confirmed: list[Candidate]) -> Candidate | None:
    """The candidate with the best mean selection score over its seeds (the first on ties)."""
    best = None
    for cand in confirmed:
        if best is None or cand.mean_devel > best.mean_devel:
            best = cand
    return best
