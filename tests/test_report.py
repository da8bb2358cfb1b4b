"""The search report, built from a tiny real search: every section, valid PNGs, working links, escaping,
the awkward cases (errored trials without progress, unknown test labels, too few trials for importance),
and the page as headless Chromium shows it."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import TINY_SPACE, chromium_path
from PIL import Image

pytestmark = pytest.mark.timeout(1200)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

@pytest.fixture(scope="module")
def searched(finished) -> Path:
    """The run folder of the session's tiny real search (tests/conftest.py)."""
    return finished[0]


@pytest.fixture(scope="module")
def report(searched) -> Path:
    from search.report import write_report

    index = write_report(searched)
    assert index == searched / "report" / "index.html"
    return index


class Page(html.parser.HTMLParser):
    """What the tests look at in the page: headings, images, links, scripts, section texts."""

    def __init__(self) -> None:
        super().__init__()
        self.h2, self.imgs, self.hrefs, self.tags = [], [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "h2":
            self._in_h2 = True
            self.h2.append("")
        elif tag == "img":
            self.imgs.append(attrs.get("src", ""))
        elif tag == "a":
            self.hrefs.append(attrs.get("href", ""))
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"^(https?:)?//", value), f"external resource in the page: {value}"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


def parse(index: Path) -> Page:
    page = Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


def section_text(index: Path, anchor: str) -> str:
    text = index.read_text(encoding="utf-8")
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def check_png(path: Path) -> tuple[int, int]:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150
        return image.size


def test_every_section_and_image(report):
    from search.report import SECTIONS

    page = parse(report)
    assert [h.strip() for h in page.h2] == [heading for _, heading in SECTIONS]
    assert "script" not in page.tags  # no JavaScript at all
    assert page.imgs, "no images in the report"
    for src in page.imgs:
        assert "/" not in src  # beside index.html
        check_png(report.parent / src)
    # every image the folder holds is on the page, and the plots the tiny search allows are all there
    assert sorted(p.name for p in report.parent.glob("*.png")) == sorted(page.imgs)
    for name in ("progress_time.png", "progress_trial.png", "parallel.png", "curves.png", "best_devel.png",
                 "best_test.png"):
        assert name in page.imgs
    assert not list(report.parent.parent.glob(".report.*")), "temporary folder left behind"


def test_top_table_links_and_best(report, searched):
    from search.report import SECTIONS

    trials = pd.read_csv(searched / "trials.csv", dtype={"trial_id": str})
    top = section_text(report, "top")
    for trial_id in trials["trial_id"]:
        assert trial_id in top
    page = parse(report)
    assert "../trials.csv" in page.hrefs
    for href in page.hrefs:
        if href.startswith("#"):
            assert href[1:] in {anchor for anchor, _ in SECTIONS}
            continue
        target = (report.parent / href).resolve()
        assert target.exists(), f"broken link {href}"
    tensorboard = [h for h in page.hrefs if h.rstrip("/").endswith("/tensorboard")]
    for trial_id in trials["trial_id"]:
        assert any(f"trial_{trial_id}/tensorboard" in h for h in tensorboard), trial_id
    best = section_text(report, "best")
    metrics = json.loads((searched / "best" / "metrics.json").read_text())
    assert metrics["trial_id"] in best
    for branch in ("attention", "seq2seq", "fusion", "functionals"):
        assert f">{branch}<" in best
        assert f"{metrics[branch]['devel_rho']:.3f}" in best
        assert f"{metrics[branch]['test_rho']:.3f}" in best  # the tone corpus has test labels
        assert f"{metrics[branch]['score']:.3f}" in best  # the swap score C was chosen by: a column of its own
    assert "<th>swap ρ</th>" in best
    versus = metrics["exported_vs_functionals"]
    assert (f"paired on the same clips: swap ρ {versus['score']['difference']:+.3f} [" in best
            and f", devel ρ {versus['devel']['difference']:+.3f} [" in best)
    assert f"test ρ {versus['test']['difference']:+.3f} [" in best
    # the baseline's devel rho drawn as the bar to beat on the progress plots (and the learning curves)
    # (the session's search scores by scoring.validation swap: the curves and the line are swap scores)
    assert "The dashed line is the swap ρ of the functionals baseline" in section_text(report, "progress")
    # how it was chosen: every confirmed trial with its selection score / test rho per seed
    assert "How it was chosen" in best and metrics["confirmation"]
    for cand in metrics["confirmation"]:
        assert cand["trial_id"] in best
        for seed in cand["seeds"]:
            assert f"{seed['selection_score']:.3f} / {seed['test_rho']:.3f}" in best
    assert "learning_rate" in best  # the configuration is shown


def test_importance_says_what_it_used(report, searched):
    experiment = TINY_SPACE["experiment"]
    study = optuna.load_study(study_name=experiment["name"], storage=f"sqlite:///{searched / 'optuna.db'}")
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    text = section_text(report, "importance")
    assert f"completed all epochs (COMPLETE): {complete} of {experiment['num_samples']}" in text
    # with a few trials there is a chart or a sentence saying why not, never a crash
    assert "importance.png" in text or 'class="note"' in text


def test_awkward_run_escaped_errored_unknown_labels(searched, tmp_path):
    """An errored trial without progress.csv and with markup in its error, unknown test labels."""
    from search.report import write_report

    run = tmp_path / "awkward"
    shutil.copytree(searched, run, ignore=shutil.ignore_patterns("report"))
    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str, "error": object})
    victim = trials["trial_id"].iloc[-1]
    trials.loc[trials.index[-1], ["status", "best_fusion_score", "epochs", "error"]] = \
        ["errored", np.nan, 0, "RuntimeError: <script>alert('x')</script> & more"]
    trials.to_csv(run / "trials.csv", index=False)
    for name in ("progress.csv", "result.json"):
        (run / "tune" / f"trial_{victim}" / name).unlink(missing_ok=True)
    metrics = json.loads((run / "best" / "metrics.json").read_text())
    for branch in ("attention", "seq2seq", "fusion"):
        metrics[branch]["test_rho"] = None
    (run / "best" / "metrics.json").write_text(json.dumps(metrics))
    test_features = run / "best" / "features" / "test" / "features.parquet"
    frame = pd.read_parquet(test_features)
    frame["label"] = np.nan
    frame.to_parquet(test_features)

    index = write_report(run)
    text = index.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(" in text
    assert "test: labels unknown" in text
    assert not (index.parent / "best_test.png").exists()
    assert "1 trial(s) reported no epoch" in section_text(index, "curves")
    for src in parse(index).imgs:
        check_png(index.parent / src)
    # written again, it replaces the report whole
    (index.parent / "stale.png").write_bytes(b"old")
    write_report(run)
    assert not (index.parent / "stale.png").exists()


def test_one_trial_run(searched, tmp_path):
    from search.report import write_report

    run = tmp_path / "one"
    shutil.copytree(searched, run, ignore=shutil.ignore_patterns("report"))
    trials = pd.read_csv(run / "trials.csv")
    trials.head(1).to_csv(run / "trials.csv", index=False)
    (run / "optuna.db").unlink()
    index = write_report(run)
    assert "no optuna.db" in section_text(index, "importance")
    assert "same configuration" in section_text(index, "parallel")
    for src in parse(index).imgs:
        check_png(index.parent / src)


def _study(values: list[float | None], params: list[dict]) -> optuna.Study:
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    dists = {"a/x": FloatDistribution(0, 1), "a/c": CategoricalDistribution(["p", "q"])}
    study = optuna.create_study(direction="maximize")
    for value, p in zip(values, params):
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(create_trial(params=p, distributions={k: dists[k] for k in p}, value=value, state=state,
                                     intermediate_values={1: 0.1}))
    return study


def test_importance_edge_cases():
    from search.report import compute_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    one = _study([0.5, None], [{"a/x": 0.1, "a/c": "p"}, {"a/x": 0.2, "a/c": "q"}])
    result, notes, n = compute_importances(one)
    assert result == {} and n == 1 and "at least 2" in notes[0] and "1 stopped early" in notes[0]
    single = _study([0.5, 0.6, 0.7], [{"a/x": x} for x in (0.1, 0.2, 0.3)])
    result, notes, n = compute_importances(single)
    assert result == {} and "Only one searched parameter (a/x)" in notes[0]
    rng = np.random.default_rng(0)
    params = [{"a/x": float(rng.uniform()), "a/c": str(rng.choice(["p", "q"]))} for _ in range(30)]
    values = [p["a/x"] + 0.05 * rng.standard_normal() for p in params]
    result, notes, n = compute_importances(_study(values, params))
    assert n == 30 and set(result) == {"fANOVA", "PED-ANOVA"}
    assert max(result["fANOVA"], key=result["fANOVA"].get) == "a/x"


def screenshot(chromium: str, index: Path, width: int, height: int, out: Path, profile: Path) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
           "--enable-logging=stderr", "--v=0", index.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_page_in_headless_chromium(report, tmp_path):
    chromium = chromium_path()
    for width in (1280, 800):
        shot = tmp_path / f"report-{width}.png"
        log = screenshot(chromium, report, width, 2400, shot, tmp_path / f"profile-{width}")
        console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
        assert not console, "console messages from the page:\n" + "\n".join(console)
        assert check_png(shot) == (width, 2400)
        with Image.open(shot) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 10, "the screenshot is blank"
        # dark pixels (text, plots) across the page, not only at its top
        assert (pixels[1200:] < 128).mean() > 0.005
        if os.environ.get("AUTTENTION_REPORT_SHOTS"):
            shutil.copy(shot, Path(os.environ["AUTTENTION_REPORT_SHOTS"]) / shot.name)


def test_headline_and_choice_name_the_validation_score(report, searched):
    """Under scoring.validation swap the headline figure is the swap score the trials were ranked by (devel's
    rho beside it, named), and "How it was chosen" says the trials were ranked by their swap scores."""
    metrics = json.loads((searched / "best" / "metrics.json").read_text())
    summary = re.search(r'<p class="summary">(.*?)</p>', report.read_text(encoding="utf-8")).group(1)
    assert f"best fusion score (swap ρ) {metrics['fusion']['score']:.3f} " in summary, summary
    assert f"devel ρ {metrics['fusion']['devel_rho']:.3f}" in summary, summary
    assert "of their swap scores" in section_text(report, "best")


def _report_cli(run: Path) -> tuple[int, str]:
    from click.testing import CliRunner

    from search.cli import main

    result = CliRunner().invoke(main, ["report", str(run)], catch_exceptions=False)
    return result.exit_code, result.stderr


@pytest.mark.parametrize("damage, named", [
    (lambda run: (run / "trials.csv").write_text((run / "trials.csv").read_text()[:-25]), "trials.csv"),
    (lambda run: (run / "trials.csv").write_text((run / "trials.csv").read_text() + "x,y\n"), "trials.csv"),
    (lambda run: (run / "space.yaml").write_text("experiment: {name: [\n"), "space.yaml"),
    (lambda run: (run / "best" / "metrics.json").write_text('{"trial_id": "0001", "fusion": {'), "metrics.json"),
    (lambda run: (run / "best" / "metrics.json").write_text("[1, 2]"), "metrics.json"),
], ids=["trials-cut-mid-line", "trials-ragged-row", "space-yaml", "metrics-cut", "metrics-not-a-record"])
def test_damaged_run_folder_is_one_line(searched, tmp_path, damage, named):
    run = tmp_path / "damaged"
    shutil.copytree(searched, run, ignore=shutil.ignore_patterns("report"))
    damage(run)
    code, err = _report_cli(run)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert named in lines[0] and "--resume" in lines[0] and "Traceback" not in err
    assert not (run / "report").exists()


def test_run_folder_of_an_earlier_version_still_reads(searched, tmp_path):
    """A run folder written before the validation score got its own name (metric fusion_rho, trials.csv's
    best_fusion_rho, progress.csv's fusion_rho) is reported as it is."""
    run = tmp_path / "earlier"
    shutil.copytree(searched, run, ignore=shutil.ignore_patterns("report"))
    space = (run / "space.yaml").read_text().replace("fusion_score", "fusion_rho")
    (run / "space.yaml").write_text(space)
    trials = (run / "trials.csv").read_text()
    (run / "trials.csv").write_text(trials.replace("best_fusion_score", "best_fusion_rho"))
    for progress in (run / "tune").glob("trial_*/progress.csv"):
        header, rest = progress.read_text().split("\n", 1)
        for branch in ("attention", "seq2seq", "fusion"):
            header = header.replace(f"{branch}_score", f"{branch}_rho")
        progress.write_text(header + "\n" + rest)
    code, err = _report_cli(run)
    assert code == 0, err
    text = (run / "report" / "index.html").read_text(encoding="utf-8")
    best = pd.read_csv(searched / "trials.csv")["best_fusion_score"].iloc[0]
    assert f"{best:.3f}" in section_text(run / "report" / "index.html", "top")
    assert "Traceback" not in text
