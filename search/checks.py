"""The checks a search makes up front, before any work: the folders it writes, the labels' range, and
that every node of a cluster sees the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from auttention import storage
from auttention.config import ScoringConfig, build
from auttention.corpus import check_label_range
from auttention.errors import UserError
from auttention.validation import check_validation

from .space import Space

if TYPE_CHECKING:
    from .runfolder import RunFolder


def check_labels(corpus: pd.DataFrame, space: Space) -> None:
    """Devel must hold at least two distinct known labels (a search ranks trials by their devel Spearman's
    rho, undefined otherwise), the corpus must allow scoring.validation (speakers for speaker_folds), and
    known labels must lie in the scoring's [label_min, label_max] (predictions are clipped to it)."""
    devel = sorted(corpus.loc[(corpus["partition"] == "devel") & corpus["label"].notna(), "label"].unique())
    if len(devel) < 2:
        what = f"every devel label is {devel[0]:g}" if devel else "no devel clip has a known label"
        raise UserError(
            f"{corpus.attrs.get('labels', 'labels')}: {what}: Spearman's rho is undefined, nothing to "
            f"rank; give devel clips at least two different labels (pipeline and baseline still run "
            f"and say 'undefined')"
        )
    fixed = {k: v for k, v in space.fixed.get("scoring", {}).items() if k in ("validation", "folds")}
    check_validation(corpus, build(ScoringConfig, fixed, "scoring"))  # never searched (search/space.py FIXED)
    if any(p.section == "scoring" and p.key in ("label_min", "label_max") for p in space.params):
        return  # a searched range: each trial's own
    fixed = {k: v for k, v in space.fixed.get("scoring", {}).items() if k in ("label_min", "label_max")}
    scoring = build(ScoringConfig, fixed, "scoring")
    check_label_range(corpus, scoring.label_min, scoring.label_max)


def _sees(path: str) -> bool:
    return Path(path).is_file()


def _reaches(uri: str) -> str:
    """'' if this node can write under the object-storage `uri`, else the one line saying why not."""

    try:
        storage.check(storage.location(uri, "--runs"), "--runs")
    except UserError as exc:
        return str(exc)
    return ""


def check_shared_runs(run: RunFolder) -> None:
    """On a multi-node cluster, fail fast unless every node can write the run folder: trials write their
    checkpoints there, and a node that cannot would fail every trial it runs. run: a RunFolder; on object
    storage, every node must reach the bucket with its credentials; a local folder must be one that
    every node mounts."""
    import ray  # here, not at the top: Ray takes seconds to import, and only a running search needs it
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    if len(nodes) < 2:
        return

    def on_every_node(fn, arg):
        task = ray.remote(num_cpus=0)(fn)
        return ray.get(
            [
                task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(arg)
                for n in nodes
            ],
            timeout=120,
        )

    if run.remote:
        problems = on_every_node(_reaches, run.location.uri)
        bad = [(n["NodeManagerAddress"], p) for n, p in zip(nodes, problems) if p]
        if bad:
            raise UserError(
                f"node {bad[0][0]}: {bad[0][1]} (give every node the storage credentials and "
                f"endpoint: AWS_* variables or an instance role)"
            )
        return
    run_dir = run.local
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = (run_dir / ".shared-check").resolve()
    marker.write_text("every node must see this file\n")
    try:
        seen = on_every_node(_sees, str(marker))
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise UserError(
            f"--runs {run_dir.parent}: not visible from node(s) {', '.join(blind)}; trials save "
            f"checkpoints there, so put --runs on storage every node mounts (NFS, EFS, a shared "
            f"volume) or on object storage (s3://bucket/runs)"
        )
