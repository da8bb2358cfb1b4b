"""A real tiny search on local Ray: Ray extraction, Tune + Optuna (TPE) + ASHA, export, resume."""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import TINY_SPACE, captured_log

pytestmark = pytest.mark.timeout(900)

def test_outputs_complete_and_consistent(finished, tiny):
    run_dir, lines = finished
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped", "errored"}
    assert (trials["status"] == "completed").any()
    assert trials["epochs"].between(1, 3).all()
    assert "config.seq2seq.units" in trials.columns and "node_ids" in trials.columns

    metrics = yaml.safe_load((run_dir / "best" / "metrics.json").read_text())
    best_row = trials.iloc[0]
    assert metrics["trial_id"] == best_row["trial_id"]
    # the export re-scores the selected checkpoint (mean_last: the last epoch's): the same figure the
    # trial reported at that epoch, through the one pipeline implementation
    from search.rundata import read_progress

    progress = read_progress(run_dir / "tune" / f"trial_{best_row['trial_id']}", "fusion_score")
    reported = progress.set_index("epoch").loc[metrics["epoch"], "fusion_score"]
    # the space scores by scoring.validation swap: what a trial reports and is chosen by is the swap score
    assert metrics["fusion"]["validation"] == "swap" and metrics["fusion"]["score_name"] == "swap"
    assert metrics["fusion"]["score"] == pytest.approx(reported, abs=1e-9)
    assert metrics["fusion"]["score_ci"][0] <= metrics["fusion"]["score"] <= metrics["fusion"]["score_ci"][1]
    assert metrics["epoch"] == 3 and best_row["status"] == "completed"
    # selection: the top 2 completed trials trained again with 1 new seed; the exported one has the best mean
    confirmation = metrics["confirmation"]
    assert 1 <= len(confirmation) <= 2 and all(len(c["seeds"]) == 2 for c in confirmation)
    means = {c["trial_id"]: c["mean_selection_score"] for c in confirmation}
    assert max(means, key=means.get) == metrics["trial_id"]
    for c in confirmation:
        assert c["seeds"][0]["selection_score"] == pytest.approx(c["selection_score"])
        assert all(s["test_rho"] is not None for s in c["seeds"])  # shown where test labels are known
    assert metrics["selection"]["select"] == "mean_last"
    assert metrics["made_from"]["corpus"] and metrics["made_from"]["spectrogram"]
    assert best_row["confirmation_selection_score"] == pytest.approx(means[metrics["trial_id"]])
    names = pd.read_csv(tiny[1] / "lab" / "labels.csv")["file_name"]
    assert metrics["fusion"]["n_train_devel"] == names.str.startswith(("train_", "devel_")).sum()  # the refit's
    # the exported predictions: the chosen configuration's seeds averaged; the trial's own model in single/
    ensemble = metrics["ensemble"]
    assert len(ensemble["seeds"]) == 2 and ensemble["test_rho"] is not None
    # every devel and test rho with its 95% bootstrap interval (clips resampled: the tone corpus names no speakers)
    for record in (metrics["fusion"], ensemble):
        assert record["resampled"] == "clips"
        for part in ("devel", "test"):
            ci = record[f"{part}_rho_ci"]
            assert ci is None or ci[0] <= record[f"{part}_rho"] <= ci[1]
    # the functionals baseline by the same SVR on the same clips, and the exported predictions paired with it
    baseline = metrics["functionals"]
    assert baseline["n_test"] == metrics["fusion"]["n_test"] and baseline["test_rho_ci"] is not None
    exported = metrics["configurations"] if (metrics["configurations"] or {}).get("k", 1) > 1 else ensemble
    versus = metrics["exported_vs_functionals"]["score"]  # the swap scores, paired on the same clips and folds
    assert versus["difference"] == pytest.approx(exported["score"] - baseline["score"]) and versus["clips"] == 20
    for part in ("devel", "test"):
        versus = metrics["exported_vs_functionals"][part]
        assert versus["difference"] == pytest.approx(exported[f"{part}_rho"] - baseline[f"{part}_rho"])
        assert versus["resampled"] == "clips" and versus["clips"] == 10
        assert (run_dir / "best" / "functionals" / f"predictions.{part}.csv").is_file()
    said = [i for i, line in enumerate(lines) if line.startswith("baseline: functionals + the same SVR: swap ")]
    started = [i for i, line in enumerate(lines) if line.startswith("search: 4 trials")]
    assert said and started and said[0] < started[0]  # said before the trials start
    printed = "\n".join(lines).splitlines()  # the summary is one message of many lines
    assert any(line.startswith("functionals ") for line in printed)  # a row of the best configuration's table
    assert any(line.startswith("exported vs functionals (paired, the same clips): swap ") for line in printed)
    assert any(line.lstrip().startswith("swap") and "devel" in line for line in printed)  # the table's columns
    # the best 1 or 2 confirmed configurations averaged, k by the swap score; what the export wrote is that average
    across = metrics["configurations"]
    if len(confirmation) == 2:
        assert [row["k"] for row in across["by_k"]] == [1, 2] and across["k"] in (1, 2)
        score = {row["k"]: row["score"] for row in across["by_k"]}
        assert score[across["k"]] == max(score.values())
        assert across["by_k"][0]["devel_rho"] == pytest.approx(ensemble["devel_rho"])  # k=1: the chosen one's seeds
        assert across["by_k"][0]["score"] == pytest.approx(ensemble["score"])
        if across["k"] == 2:
            assert set(across["contributions"]) == set(across["members"]) == {c["trial_id"] for c in confirmation}
            exported_test = metrics["exported_vs_functionals"]["test"]["difference"] + baseline["test_rho"]
            assert exported_test == pytest.approx(across["test_rho"])
    single = pd.read_csv(run_dir / "best" / "single" / "predictions.test.csv")
    assert sorted(single["file_name"]) == sorted(pd.read_csv(run_dir / "best" / "predictions.test.csv")["file_name"])

    preds = pd.read_csv(run_dir / "best" / "predictions.test.csv")
    labels = pd.read_csv(tiny[1] / "lab" / "labels.csv")
    assert sorted(preds["file_name"]) == sorted(labels[labels.file_name.str.startswith("test_")].file_name)
    assert preds["prediction"].between(1, 9).all() and (preds["prediction"] % 1 == 0).all()

    config = yaml.safe_load((run_dir / "best" / "config.yaml").read_text())
    assert set(config) == {"spectrogram", "seq2seq", "attention", "training", "scoring"}
    assert config["training"]["epochs"] == metrics["epoch"]
    for part in ("train", "devel", "test"):
        assert (run_dir / "best" / "features" / part / "features.parquet").is_file()
    assert any("best configuration" in line for line in lines)
    assert lines[-1] == f"report: {run_dir / 'report' / 'index.html'}"
    assert not list(run_dir.rglob(".*.tmp"))


def test_optuna_history_is_honest(finished):
    """Trials ASHA stopped are PRUNED in the persisted study, not COMPLETE with a truncated score."""
    run_dir, _ = finished
    trials = pd.read_csv(run_dir / "trials.csv")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 4
    assert states.count(optuna.trial.TrialState.COMPLETE) == (trials["status"] == "completed").sum()
    assert states.count(optuna.trial.TrialState.PRUNED) == (trials["status"] == "stopped").sum()
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert max(t.intermediate_values) == 3  # told only after all epochs


def test_honest_searcher_states_directly():
    """The searcher's bookkeeping for each way a trial can end."""
    from search.tuning import HonestOptunaSearch

    def space(trial):
        trial.suggest_float("x", 0, 1)

    searcher = HonestOptunaSearch(space=space, metric="fusion_score", mode="max", seed=0)
    searcher.set_search_properties("fusion_score", "max", {})
    endings = {"done": ({"fusion_score": 0.5, "epoch": 3, "max_epochs": 3}, False),
               "asha": ({"fusion_score": 0.4, "epoch": 1, "max_epochs": 3}, False),
               "crash": ({"fusion_score": 0.1, "epoch": 1, "max_epochs": 3}, True),
               "nan": ({"fusion_score": float("nan"), "epoch": 3, "max_epochs": 3}, False)}
    for trial_id in endings:
        searcher.suggest(trial_id)
    for trial_id, (result, error) in endings.items():
        searcher.on_trial_result(trial_id, {**result, "training_iteration": result["epoch"]})
        searcher.on_trial_complete(trial_id, result, error=error)
    from search.compat import searcher_study

    states = [t.state.name for t in searcher_study(searcher).trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]


def test_trial_id_one_helper_for_ranking_and_trials_csv(tmp_path):
    """A trial that reported no trial_id is found by its folder name without the prefix, in the ranking and
    in trials.csv alike, so its confirmation row is filled in."""
    from types import SimpleNamespace

    from search.export import trials_table
    from search.selection import Candidate, SeedRun, trial_id

    folder = tmp_path / "trial_ab12_00003"
    folder.mkdir()
    result = SimpleNamespace(path=str(folder), metrics={"epoch": 3, "max_epochs": 3}, error=None,
                             metrics_dataframe=None, config={})
    assert trial_id(result) == "ab12_00003"
    assert trial_id(SimpleNamespace(path=str(folder), metrics={"trial_id": "cd34"})) == "cd34"
    cand = Candidate("ab12_00003", result, None, str(folder), 3, 0.4,
                     runs=[SeedRun(0, 0.4, None, 3, trial=True), SeedRun(1, 0.2, None, 3)])
    row = trials_table([result], "fusion_score", [cand]).iloc[0]
    assert row["trial_id"] == "ab12_00003" and row["confirmation_selection_score"] == pytest.approx(0.3)
    assert row["confirmation_seeds"] == "0=0.400/n/a 1=0.200/n/a"


def one_float(trial):
    """A define-by-run space at module level (the searcher's snapshot pickles it)."""
    trial.suggest_float("x", 0, 1)


def test_restored_searcher_settles_the_trial_its_snapshot_missed(tmp_path):
    """A trial asked after the snapshot a restarted driver restores from is settled at once, marked lost;
    the trials the snapshot holds stay RUNNING for Tune to resume."""
    from search.tuning import LOST, SETTLED, HonestOptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher = HonestOptunaSearch(space=one_float, metric="fusion_score", mode="max", seed=0, storage=storage, study_name="s")
    searcher.set_search_properties("fusion_score", "max", {})
    searcher.suggest("kept")
    searcher.on_trial_result("kept", {"fusion_score": 0.3, "epoch": 1})
    searcher.save(str(tmp_path / "snapshot.pkl"))
    searcher.suggest("lost")  # the driver is killed before the next snapshot

    restored = HonestOptunaSearch(space=one_float, metric="fusion_score", mode="max", seed=0, storage=storage, study_name="s")
    restored.restore(str(tmp_path / "snapshot.pkl"))
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["RUNNING", "FAIL"]
    assert SETTLED not in trials[0].user_attrs and trials[1].user_attrs[SETTLED] == LOST
    restored.on_trial_complete("kept", {"fusion_score": 0.5, "epoch": 3, "max_epochs": 3})
    assert optuna.load_study(study_name="s", storage=storage).trials[0].state.name == "COMPLETE"


EPOCH_LINE = r"\s+\S+ epoch \d+/"  # search.tuning.ProgressLog's line for a reported epoch


class JumpingClock:
    """time.monotonic, moved forward by `jump` seconds once `after` logged lines have matched `pattern`: a test
    spends the time budget at the event it needs (trials that have reported), not at a wall time the machine may
    not keep. Module level, so that Tune can pickle the run's stopper that holds it."""

    def __init__(self, jump: float, after: int, pattern: str = EPOCH_LINE) -> None:
        self.offset, self.jump, self.after, self.pattern, self.seen = 0.0, jump, after, pattern, 0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def saw(self, line: str) -> None:
        if re.match(self.pattern, line):
            self.seen += 1
            if self.seen == self.after:
                self.offset = self.jump


@contextlib.contextmanager
def watched_by(clock: JumpingClock) -> Iterator[None]:
    """The block's log lines (search.*) shown to `clock`."""

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            clock.saw(record.getMessage())

    watch = Watch()
    logging.getLogger("search").addHandler(watch)
    try:
        yield
    finally:
        logging.getLogger("search").removeHandler(watch)


def test_time_budget_leaves_no_running_optuna_trial(tiny):
    """The budget covers the whole search and the run says how it is split, up front and when the trials end
    (the confirmation planned from what is left: here nothing, the clock jumps past the budget once three
    epochs are reported). Trials the budget ends are recorded as what happened to them: PRUNED with their
    epochs, FAIL where they never reported; none stays RUNNING after the search."""
    from search.runner import run_search

    root, corpus_dir, _ = tiny
    space = copy.deepcopy(TINY_SPACE)
    space["experiment"].update(name="budget", num_samples=6, time_budget=3600, confirm_top=1, confirm_seeds=1)
    space["scheduler"] = {"type": "none", "max_epochs": 2000}  # more epochs than anyone waits for
    path = root / "budget.yaml"
    path.write_text(yaml.safe_dump(space))
    clock = JumpingClock(jump=3600, after=3)
    with watched_by(clock), captured_log() as lines:
        run_dir = run_search(str(path), data=str(corpus_dir), runs=str(root / "runs"),
                             cache=str(root / "cache-budget"), dashboard=False, clock=clock)
    assert clock.seen >= 3
    split = [line for line in lines if line.startswith("budget: 1h 00m in all: ")]
    assert len(split) == 1 and "the confirmation 15m 00s (confirm_share 0.25), export and report 1m 48s" in split[0]
    assert any(line.startswith("budget: the trials' share is spent at ") for line in lines)
    planned = [line for line in lines if line.startswith("budget: the trials ended at ")]
    assert len(planned) == 1 and planned[0].endswith("no time for confirmation runs; the best trial's own model is "
                                                     "exported"), planned
    assert not any("training the top" in line for line in lines)
    assert re.fullmatch(r"search: .+ of the 1h 00m budget; trials.csv and best/ in .+", lines[-2].strip()), lines[-2]
    study = optuna.load_study(study_name="budget", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states  # cut by the budget after some epochs
    assert optuna.trial.TrialState.RUNNING not in states
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.intermediate_values
        if t.state == optuna.trial.TrialState.FAIL:
            assert not t.intermediate_values


def test_budget_that_ends_every_trial_before_an_epoch_says_so(tiny):
    """The trials' share spent before any trial reports an epoch (the clock jumps when the budget's split is
    said): the run ends in one line that names the time budget, how long the trials had and what to give, not
    errors there are none of; the study's counts call those trials what they are."""
    from auttention.errors import UserError
    from search.runner import run_search

    root, corpus_dir, _ = tiny
    space = copy.deepcopy(TINY_SPACE)
    space["experiment"].update(name="nothing", num_samples=2, time_budget=3600, confirm_top=0)
    path = root / "nothing.yaml"
    path.write_text(yaml.safe_dump(space))
    clock = JumpingClock(jump=3600, after=1, pattern=r"budget: 1h 00m in all: ")
    with watched_by(clock), captured_log() as lines, pytest.raises(UserError) as raised:
        run_search(str(path), data=str(corpus_dir), runs=str(root / "runs"), cache=str(root / "cache-nothing"),
                   dashboard=False, clock=clock)
    assert clock.seen == 1
    message = str(raised.value)
    assert message.startswith("the time budget ended every trial before its first epoch: in the trials' "), message
    assert "raise --time-budget" in message and "errors" not in message
    counts = [line for line in lines if line.startswith("optuna: ")]
    assert all("failed" not in line for line in counts), counts


def test_resume_refuses_more_trials_in_one_line(finished, tiny):
    """--resume goes on with the trials the search was started with: another --num-samples is refused before
    anything starts (a --time-budget is applied: test_resume_after_interruption)."""
    from auttention.errors import UserError
    from search.runner import run_search

    root, corpus, space = tiny
    with pytest.raises(UserError, match=r"^--num-samples 9: a resumed search goes on with the trials it was "
                                        r"started with \(4\); resume without it, or start a new --name for more$"):
        run_search(str(space), data=str(corpus), runs=str(root / "runs"), cache=str(root / "cache"),
                   dashboard=False, resume=True, num_samples=9)


def test_spectrogram_cache_reused(finished, tiny):
    from search.runner import run_search

    root, corpus, space = tiny
    cached = list((root / "cache" / "spectrograms").glob("*/*/settings.json"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    # the same spectrogram settings; one trial of one epoch, no confirmation: the cache is what is tested
    again = {**TINY_SPACE, "scheduler": {"type": "none", "max_epochs": 1},
             "experiment": {**TINY_SPACE["experiment"], "confirm_top": 0}}
    space = root / "again.yaml"
    space.write_text(yaml.safe_dump(again))
    with captured_log() as lines:
        run_search(str(space), data=str(corpus), runs=str(root / "runs"), cache=str(root / "cache"), name="again",
                   num_samples=1, dashboard=False)
    assert any(line.startswith("spectrograms: reusing") for line in lines)
    assert cached[0].stat().st_mtime_ns == before


def test_existing_name_needs_resume(finished, tiny):
    from auttention.errors import UserError
    from search.runner import run_search

    root, corpus, space = tiny
    with pytest.raises(UserError, match="pass --resume"):
        run_search(str(space), data=str(corpus), runs=str(root / "runs"), cache=str(root / "cache"),
                   dashboard=False)


# the driver, SIGKILLed (with its process group) right after the searcher asks Optuna for its third trial:
# with 2 trials at a time that is when the first one has ended, before Tune snapshots the new trial
KILLED_AFTER_THIRD_ASK = """
import os, signal
import search.tuning as tuning
from search.cli import main
ask, asked = tuning.HonestOptunaSearch.suggest, []
def suggest(self, trial_id):
    out = ask(self, trial_id)
    asked.append(trial_id)
    if len(asked) == 3:
        print("killed after asking for", trial_id, flush=True)
        os.killpg(0, signal.SIGKILL)
    return out
tuning.HonestOptunaSearch.suggest = suggest
main()
"""


def test_resume_after_interruption(tiny):
    """The driver killed after a trial has ended and the next was asked for; --resume finishes without
    re-running trials, and the trial the restored Tune never knew is settled and marked lost."""
    from search.tuning import LOST, SETTLED

    root, corpus, _ = tiny
    space = root / "resumed.yaml"  # the tiny space without confirmation seeds (test_outputs checks those)
    space.write_text(yaml.safe_dump({**TINY_SPACE, "experiment": {**TINY_SPACE["experiment"], "confirm_top": 0}}))
    args = ["run", str(space), "--data", str(corpus), "--runs", str(root / "runs"), "--cache", str(root / "cache"),
            "--name", "resumed", "--no-dashboard"]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THIRD_ASK, *args], capture_output=True, text=True,
                            start_new_session=True, timeout=600)
    assert "killed after asking for" in killed.stdout, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "completed after" in killed.stdout or "stopped early after" in killed.stdout
    run_dir = root / "runs" / "resumed"
    assert not (run_dir / "trials.csv").exists()
    study = optuna.load_study(study_name="resumed", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert len(study.trials) == 3 and not study.trials[2].state.is_finished()

    out = subprocess.run([sys.executable, "-m", "search.cli", *args, "--resume", "--time-budget", "2h"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming" in out.stdout
    assert "budget: 2h 00m in all: " in out.stdout  # the command line's budget, for the rest of the search
    assert "(1 lost when the driver stopped" in out.stdout
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    study = optuna.load_study(study_name="resumed", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert all(t.state.is_finished() for t in study.trials)  # none stays RUNNING
    lost = [t.number for t in study.trials if t.user_attrs.get(SETTLED) == LOST]
    assert lost == [2] and study.trials[2].state == optuna.trial.TrialState.FAIL
    assert len(study.trials) == 5  # the 4 trials Tune ran, each once, and the lost one
    assert (run_dir / "best" / "predictions.test.csv").is_file()


def damaged_cache(cache, corpus_dir, spectrogram: dict, clip_prefix: str):
    """The cache folder of these spectrogram settings, extracted, with the frames of the first clip whose name
    starts with `clip_prefix` set to NaN (a damaged cache entry)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from auttention import spectrogram as spectro
    from auttention.config import SpectrogramConfig, build
    from auttention.corpus import fingerprint as corpus_fingerprint
    from auttention.corpus import read_corpus
    from auttention.extraction import ProcessPool, extract
    from search.extract import cache_folder

    corpus = read_corpus(corpus_dir)
    cfg = build(SpectrogramConfig, spectrogram, "spectrogram")
    folder = cache_folder(cache, corpus_fingerprint(corpus), cfg)
    extract(corpus, cfg, folder.local, ProcessPool(1))
    for part in sorted((folder.local / spectro.PARQUET).glob("*.parquet")):
        table = pq.read_table(part)
        names = table.column("file_name").to_pylist()
        hit = next((i for i, name in enumerate(names) if name.startswith(clip_prefix)), None)
        if hit is None:
            continue
        cells = cfg.frames * cfg.n_mels
        x = table.column("spectrogram").combine_chunks().flatten().to_numpy().copy()
        x[hit * cells:(hit + 1) * cells] = np.nan
        pq.write_table(table.set_column(table.schema.get_field_index("spectrogram"), "spectrogram",
                                        pa.FixedSizeListArray.from_arrays(pa.array(x), cells)), part)
        return folder
    raise AssertionError(f"no clip named {clip_prefix}* in {folder}")


def test_diverging_trial_errors_and_the_search_goes_on(tiny):
    """Trials whose training meets non-finite values end as errors (reason in trials.csv, no futile
    retries), the other trials complete and the best is exported."""
    import copy

    from conftest import TINY_SPACE

    from search.runner import run_search

    root, corpus_dir, _ = tiny
    space = copy.deepcopy(TINY_SPACE)
    space["experiment"].update(name="diverge", num_samples=2, confirm_top=0)
    space["scheduler"] = {"type": "none", "max_epochs": 1}  # one epoch of each point: the error is what is tested
    space["spectrogram"]["clip_below"] = {"choice": [-80.0, -60.0]}
    space["searcher"] = {"type": "random",
                         "points_to_evaluate": [{"spectrogram": {"clip_below": -80.0}},
                                                {"spectrogram": {"clip_below": -60.0}}]}
    path = root / "diverge.yaml"
    path.write_text(yaml.safe_dump(space))
    cache = root / "cache-diverge"
    # a damaged cache entry for clip_below -80: a training clip's frames are NaN
    damaged_cache(cache, corpus_dir, {**space["spectrogram"], "clip_below": -80.0}, "train_")

    run_dir = run_search(str(path), data=str(corpus_dir), runs=str(root / "runs"), cache=str(cache),
                         dashboard=False)
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 2
    errored = trials[trials["config.spectrogram.clip_below"] == -80.0]
    assert len(errored) >= 1 and (errored["status"] == "errored").all()
    assert errored["error"].str.contains("TrainingDiverged").all()
    fine = trials[trials["config.spectrogram.clip_below"] == -60.0]
    assert len(fine) >= 1 and fine["status"].isin(["completed", "stopped"]).all()
    metrics = yaml.safe_load((run_dir / "best" / "metrics.json").read_text())
    assert metrics["trial_id"] in set(fine["trial_id"])
    study = optuna.load_study(study_name="diverge", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials) == len(errored)


def test_damaged_test_clip_is_one_line(tiny):
    """A damaged cache entry of a test clip (which no trial reads: they score devel) stops the search at the
    export's evaluation with one line naming the folder to delete, not a Ray traceback."""
    import copy

    from conftest import TINY_SPACE

    from auttention.errors import UserError
    from search.runner import run_search

    root, corpus_dir, _ = tiny
    # one trial of one epoch, no confirmation seeds: the export still evaluates its checkpoint on every partition
    space = {**copy.deepcopy(TINY_SPACE), "scheduler": {"type": "none", "max_epochs": 1}}
    space["experiment"].update(name="damaged", num_samples=1, max_concurrent=1, confirm_top=0)
    path, cache = root / "damaged.yaml", root / "cache-damaged"
    path.write_text(yaml.safe_dump(space))
    folder = damaged_cache(cache, corpus_dir, space["spectrogram"], "test_")
    with pytest.raises(UserError) as caught:
        run_search(str(path), data=str(corpus_dir), runs=str(root / "runs"), cache=str(cache), dashboard=False)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message and "delete that folder" in message
    assert "test_" in message


def test_a_configuration_whose_confirmation_seed_diverged_is_not_chosen():
    """A confirmation seed that diverges is recorded (trials.csv says so) and rules its configuration out,
    however well its other seeds scored."""
    from search.export import _seed_text
    from search.selection import Candidate, SeedRun, choose

    steady = Candidate("a", None, None, "", 3, 0.40, runs=[SeedRun(0, 0.40, 0.3, 3, trial=True), SeedRun(1, 0.38, 0.3, 3)])
    shaky = Candidate("b", None, None, "", 3, 0.60,
                      runs=[SeedRun(0, 0.60, 0.5, 3, trial=True),
                            SeedRun(1, float("nan"), None, 2, diverged="training diverged in epoch 2")])
    assert choose([shaky, steady]) is steady
    assert _seed_text(shaky.runs[1]) == "1=diverged" and _seed_text(steady.runs[1]) == "1=0.380/0.300"


def test_dashboard_line_names_a_command_that_prints_the_token(finished):
    """The dashboard asks for the cluster's token: the line that gives its address names the command that
    prints the token, and that command, run as the line says, prints the token Ray uses here."""
    import shlex

    from search.runner import dashboard_line

    line = dashboard_line("127.0.0.1:8265")
    assert line.startswith("ray: dashboard at http://127.0.0.1:8265 (it asks for this cluster's token: `")
    command = re.search(r"`([^`]+)` prints it\)$", line).group(1)
    printed = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip().splitlines()[-1]
    from pathlib import Path

    assert token and token == (Path.home() / ".ray" / "auth_token").read_text().strip()
