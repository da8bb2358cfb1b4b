"""The search report: runs/NAME/report/index.html, one self-contained page to look at a finished search.

Built only from what a run folder holds (trials.csv, optuna.db, space.yaml, best/, tune/trial_*/progress.csv),
so it can be (re)written at the end of a search or on demand. Here: the page's sections and write_report;
the run folder is read by search/rundata.py, the figures (PNGs beside index.html, Matplotlib's Agg backend)
are drawn by search/plots.py, the style is search/report.css. The page inlines that CSS and has no
JavaScript and no network resources.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml

from auttention.formatting import VALIDATION_TEXT, format_difference, format_rho, format_rho_ci
from auttention.io import atomic_dir
from auttention.record import FUNCTIONALS, FUSION, SELECTION, metric_branch, recorded_validation

from .export import VERSUS
from .plots import (
    STATUS_STYLE,
    TOP_PARALLEL,
    plot_best_so_far,
    plot_curves,
    plot_importance,
    plot_parallel,
    plot_predictions,
    save_png,
)
from .rundata import RunData, load_run, read_labels, read_predictions

# (anchor, heading) of every section, in page order
SECTIONS = (
    ("progress", "Search progress"),
    ("importance", "Hyperparameter importance"),
    ("parallel", "Top trials: parallel coordinates"),
    ("curves", "Learning curves"),
    ("best", "Best trial"),
    ("top", "Top 10 trials"),
    ("files", "Files and logs"),
)


@lru_cache(maxsize=1)
def page_css() -> str:
    """The page's style sheet, search/report.css (package data), inlined in every page."""
    return resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8").strip()


# ---------------------------------------------------------------------------------------------- html


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell ('–' when missing)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return esc(value) if value not in (None, "") else "–"
    if math.isnan(number):
        return "–"
    if number.is_integer() and abs(number) < 1e6 and not isinstance(value, float):
        return str(int(number))
    return f"{number:.{digits}f}"


def fmt_value(value: Any) -> str:
    """A configuration value for a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def rel_link(target: Path, run_dir: Path) -> str:
    """The page's link to a file of the run folder (index.html lies in run_dir/report/)."""
    return "../" + "/".join(esc(quote(part)) for part in target.relative_to(run_dir).parts)


def figure_html(src: str, alt: str, caption: str = "", css: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    cls = f' class="{esc(css)}"' if css else ""
    return f'<figure{cls}><img src="{esc(src)}" alt="{esc(alt)}" loading="eager">{cap}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def section(anchor: str, body: str) -> str:
    heading = dict(SECTIONS)[anchor]
    return f'<section id="{anchor}">\n<h2>{esc(heading)}</h2>\n{body}\n</section>'


def status_badge(status: str) -> str:
    return f'<span class="badge {esc(status) if status in STATUS_STYLE else "other"}">{esc(status)}</span>'


# ------------------------------------------------------------------------------------------ sections


def reference_line(run: RunData) -> tuple[str, float] | None:
    """(label, devel rho) of the functionals baseline scored by the exported configuration's SVR, for the
    plots of devel scores; None where best/metrics.json has none."""
    entry = (run.best or {}).get(FUNCTIONALS) or {}
    rho = entry.get("score", entry.get("devel_rho"))  # what the trials' curves are: scoring.validation's score
    return (f"{FUNCTIONALS} baseline ({run.score_name})", float(rho)) if isinstance(rho, (int, float)) else None


def section_progress(run: RunData, out: Path) -> str:
    """Best-so-far devel metric against wall time and against trial number; every trial a point."""
    trials, metric, label = run.trials, run.metric, run.label
    if not len(trials):
        return section("progress", note("No trials in trials.csv."))
    if not trials[run.best_col].notna().any():
        return section(
            "progress",
            note(
                "No trial scored an epoch, so there is no progress to plot; the errors "
                'are in the <a href="#top">top trials table</a> and trials.csv.'
            ),
        )
    reports = []
    for frame in run.curves.values():
        if "rel_time" in frame:
            good = frame[frame[metric].notna() & frame["rel_time"].notna()]
            reports.append(pd.DataFrame({"x": good["rel_time"], "y": good[metric]}))
    reports = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=["x", "y"])
    steps_time = reports.sort_values(["x", "y"], kind="stable").reset_index(drop=True)
    end_times = {
        tid: float(f["rel_time"].dropna().iloc[-1])
        for tid, f in run.curves.items()
        if "rel_time" in f and f["rel_time"].notna().any()
    }
    points_time = pd.DataFrame(
        {
            "x": [end_times.get(t, np.nan) for t in trials["trial_id"]],
            "y": trials[run.best_col],
            "status": trials["status"],
        }
    )
    untimed = int(points_time["x"].isna().sum())
    points_time = points_time[points_time["x"].notna()]
    figures = []
    if len(points_time):
        fig = plot_best_so_far(
            points_time,
            steps_time,
            "wall time (s since the first epoch began)",
            f"best {label}",
            x_from_zero=True,
            reference=reference_line(run),
        )
        figures.append(
            figure_html(
                save_png(fig, out, "progress_time.png"),
                f"best {label} against wall time",
                "Against wall time: a point where each trial ended, at its best epoch's score.",
            )
        )
    by_number = trials.sort_values("number")
    points_number = pd.DataFrame(
        {"x": by_number["number"], "y": by_number[run.best_col], "status": by_number["status"]}
    )
    scored = points_number[points_number["y"].notna()]
    fig = plot_best_so_far(
        points_number,
        scored[["x", "y"]].reset_index(drop=True),
        "trial number (order started)",
        f"best {label}",
        integer_x=True,
        reference=reference_line(run),
    )
    unscored = int(points_number["y"].isna().sum())
    figures.append(
        figure_html(
            save_png(fig, out, "progress_trial.png"),
            f"best {label} against trial number",
            "Against trial number (the order trials started)"
            + (f"; the {unscored} trial(s) without a score sit on the bottom edge." if unscored else "."),
        )
    )
    counts = trials["status"].value_counts()
    text = (
        f"The line is the best {esc(label)} found so far; the points are the trials, coloured by how they "
        f"ended: {int(counts.get('completed', 0))} completed all epochs, {int(counts.get('stopped', 0))} were "
        f"stopped early by ASHA or the time budget (their scores come from fewer epochs), "
        f"{int(counts.get('errored', 0))} errored."
    )
    if untimed:
        text += f" {untimed} trial(s) reported no epoch and have no place on the wall-time axis."
    if reference_line(run):
        text += (
            f" The dashed line is the {esc(run.score_name)} ρ of the {FUNCTIONALS} baseline (utterance functionals "
            f"and the same SVR) on the same clips: the bar to beat."
        )
    return section("progress", f'<p>{text}</p>\n<div class="pair">{"".join(figures)}</div>')


def compute_importances(study) -> tuple[dict[str, dict[str, float]], list[str], int]:
    """({evaluator: {param: importance}}, notes, number of completed trials used).

    Importance is computed on COMPLETE trials only: the trials ASHA stopped are PRUNED in the study and
    their scores come from fewer epochs, errored ones have none.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    all_trials = study.get_trials(deepcopy=False)
    complete = [
        t for t in all_trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    n = len(complete)
    pruned = sum(t.state == TrialState.PRUNED for t in all_trials)
    failed = sum(t.state == TrialState.FAIL for t in all_trials)
    left_out = f"{pruned} stopped early (pruned) and {failed} failed or unstarted trial(s) are left out"
    if n < 2:
        return (
            {},
            [
                (
                    f"Importance needs at least 2 trials that completed all epochs; this study has {n}, so there "
                    f"is no chart ({left_out}: their scores are truncated or missing)."
                )
            ],
            n,
        )
    names = set.intersection(*(set(t.params) for t in complete))
    varied = sorted(p for p in names if len({repr(t.params[p]) for t in complete}) > 1)
    if not varied:
        return (
            {},
            [
                (
                    f"No searched parameter took different values among the {n} completed trials, so there "
                    f"is nothing to attribute the score to."
                )
            ],
            n,
        )
    if len(varied) == 1:
        return (
            {},
            [
                (
                    f"Only one searched parameter ({varied[0]}) varied among the {n} completed trials; its "
                    f"importance is trivially 100%, so no chart is drawn."
                )
            ],
            n,
        )
    if len({t.value for t in complete}) == 1:
        return (
            {},
            [
                (
                    f"All {n} completed trials scored the same ({complete[0].value:.3f}), so no parameter "
                    f"explains any difference."
                )
            ],
            n,
        )
    evaluators = {"fANOVA": FanovaImportanceEvaluator(seed=0), "PED-ANOVA": PedAnovaImportanceEvaluator()}
    results, notes = {}, []
    for label, evaluator in evaluators.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results[label] = get_param_importances(study, evaluator=evaluator, params=varied)
            except Exception as exc:  # noqa: BLE001 - optuna's evaluators fail in several ways on few trials
                notes.append(f"{label} could not be computed: {type(exc).__name__}: {exc}")
                continue
        for w in caught:
            if not issubclass(w.category, (DeprecationWarning, optuna.exceptions.ExperimentalWarning)):
                notes.append(f"{label}: {w.message}")
    return results, notes, n


def section_importance(run: RunData, out: Path) -> str:
    """Hyperparameter importance of the searched parameters under Optuna's evaluators."""
    if run.study is None:
        return section("importance", note(f"Hyperparameter importance is not available: {esc(run.study_note)}."))
    results, notes, n = compute_importances(run.study)
    from optuna.trial import TrialState

    trials = run.study.get_trials(deepcopy=False)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    intro = (
        f"<p>Optuna's importance evaluators on the persisted study, using only the trials that completed all "
        f"epochs (COMPLETE): {n} of {len(trials)}. The {pruned} stopped early by ASHA or the budget (PRUNED: their "
        f"scores come from fewer epochs) and the {failed} that failed or never reported an epoch are left out."
    )
    if results:
        intro += (
            " fANOVA fits random forests to the scores; PED-ANOVA (Optuna's default) compares the best 10% "
            "of the trials with all of them and is stable from about 50 completed trials on."
        )
    body = intro + "</p>"
    if results:
        fig = plot_importance(results)
        body += figure_html(
            save_png(fig, out, "importance.png"),
            "hyperparameter importance",
            f"Importance for {esc(run.label)} of every searched parameter that varied among the completed trials.",
            css="medium",
        )
    body += "".join(note(esc(text)) for text in notes)
    return section("importance", body)


def section_parallel(run: RunData, out: Path) -> str:
    """Parallel coordinates of the top trials over the searched parameters and the metric."""
    trials = run.trials
    scored = trials[trials[run.best_col].notna()]
    params = run.params
    if not len(scored):
        return section("parallel", note("No trial has a score to rank by."))
    if not params:
        return section(
            "parallel",
            note(
                "Every trial had the same configuration (no searched parameter varies), "
                "so there is nothing to draw across."
            ),
        )
    top = min(TOP_PARALLEL, len(scored))
    fig = plot_parallel(trials, params, run.best_col, run.label, run.log_params, top)
    caption = (
        f"The top {top} of {len(scored)} scored trials, one line each, coloured by best "
        f"{esc(run.label)}; parameters searched on a log scale have log axes; "
        f"“n/a” marks a conditional parameter a trial did not use."
    )
    return section(
        "parallel", figure_html(save_png(fig, out, "parallel.png"), "parallel coordinates of the top trials", caption)
    )


def section_curves(run: RunData, out: Path) -> str:
    """Learning curves: the devel metric per epoch of every trial."""
    with_data = {tid: f for tid, f in run.curves.items() if len(f) and f[run.metric].notna().any()}
    silent = len(run.curves) - len(with_data)
    if not with_data:
        return section("curves", note("No trial reported a scored epoch."))
    statuses = dict(zip(run.trials["trial_id"], run.trials["status"]))
    best_id = str(run.best["trial_id"]) if run.best and "trial_id" in run.best else None
    fig = plot_curves(with_data, statuses, run.metric, run.label, best_id, run.max_epochs, reference_line(run))
    caption = (
        f"{esc(run.label)} after every epoch of the {len(with_data)} trials that scored one; "
        f"dashed curves ending in a marker are trials stopped early (ASHA or the time budget) or errored."
    )
    if silent:
        caption += f" {silent} trial(s) reported no epoch and have no curve."
    return section("curves", figure_html(save_png(fig, out, "curves.png"), "learning curves", caption))


def paper_table(best: dict) -> str:
    """The paper's table: rows attention, seq2seq, the functionals baseline (where metrics.json has it) and
    fusion; columns devel and test Spearman's rho (with the 95% bootstrap interval where metrics.json has
    one), C."""
    rows, unknown = [], False
    name = recorded_validation(best)
    validated = name if name != "devel" else ""  # the score C was chosen by, where it is not devel's rho
    for branch in ("attention", "seq2seq", FUNCTIONALS, "fusion"):
        if branch == FUNCTIONALS and not best.get(branch):
            continue  # a run from before the baseline was part of every run
        entry = best.get(branch) or {}
        test = entry.get("test_rho")
        unknown |= test is None
        test_cell = format_rho_ci(test, entry.get("test_rho_ci"), missing='<span class="muted">labels unknown</span>')
        devel_cell = format_rho_ci(entry.get("devel_rho"), entry.get("devel_rho_ci"), missing="–")
        score_cell = (
            f'<td class="num">{format_rho_ci(entry.get("score"), entry.get("score_ci"), missing="–")}</td>'
            if validated
            else ""
        )
        rows.append(
            f'<tr><th scope="row">{branch}</th>{score_cell}<td class="num">{devel_cell}</td>'
            f'<td class="num">{test_cell}</td><td class="num">{fmt_value(entry.get("c"))}</td></tr>'
        )
    score_head = f"<th>{esc(validated)} ρ</th>" if validated else ""
    table = (
        f'<div class="scroll"><table class="paper"><thead><tr><th></th>{score_head}<th>devel ρ</th><th>test ρ</th>'
        f"<th>C</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    if validated:
        table += note(
            f"{esc(validated)} ρ: {esc(VALIDATION_TEXT.get(str((best.get('fusion') or {}).get('validation')), ''))}; "
            f"C was chosen by it, and so was every choice of the search."
        )
    if unknown:
        table += note("test: labels unknown (e.g. '?' as ComParE ships them), so there is no test ρ.")
    resampled = {(best.get(b) or {}).get("resampled") for b in ("attention", "seq2seq", FUNCTIONALS, "fusion")} - {None}
    if resampled:
        table += note(
            f"[lo, hi]: 95% bootstrap interval, {' and '.join(sorted(map(str, resampled)))} resampled "
            f"(docs/QUALITY.md, Intervals)."
        )
    return table


def section_best(run: RunData, out: Path) -> str:
    """The best trial: the paper's table, its configuration, predicted vs true label."""
    if not run.best:
        return section(
            "best",
            note(
                "No best trial was exported (best/metrics.json is missing): no trial scored "
                "an epoch, or the export did not finish."
            ),
        )
    best = run.best
    tid = esc(best.get("trial_id", "?"))
    body = [
        (
            f"<p>Trial <code>{tid}</code>, checkpoint of epoch {esc(best.get('epoch', '?'))}, scored again for "
            f"export; test predictions come from the SVR refit on train+devel.</p>"
        ),
        paper_table(best),
        ensemble_html(best),
        versus_html(best),
        confirmation_html(best),
    ]
    try:
        cfg = yaml.safe_load((run.run_dir / "best" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    scoring = cfg.get("scoring") or {} if isinstance(cfg, dict) else {}
    lo, hi = float(scoring.get("label_min", 1.0)), float(scoring.get("label_max", 9.0))
    figures, notes = [], []
    for part in ("devel", "test"):
        labels, preds = read_labels(run.run_dir, part), read_predictions(run.run_dir, part)
        if preds is None:
            notes.append(f"{part}: no predictions.{part}.csv")
            continue
        if labels is None:
            notes.append(f"{part}: no features with labels to compare with")
            continue
        both = preds.merge(labels, on="file_name").dropna(subset=["label", "prediction"])
        if not len(both):
            notes.append(f"{part}: labels unknown" if part == "test" else f"{part}: no labelled clips")
            continue
        across = best.get("configurations") or {}
        exported = (across if across.get("k", 1) > 1 else None) or best.get("ensemble") or best.get("fusion") or {}
        rho = exported.get(f"{part}_rho")
        what = (
            "configurations' average"
            if across.get("k", 1) > 1
            else "seed ensemble"
            if best.get("ensemble")
            else "fusion"
        )
        title = f"{part}: {len(both)} clips" + (
            f", {what} ρ = {format_rho(rho)}" if isinstance(rho, (int, float)) else ""
        )
        fig = plot_predictions(both["label"].to_numpy(), both["prediction"].to_numpy(), lo, hi, title)
        figures.append(
            figure_html(
                save_png(fig, out, f"best_{part}.png"),
                f"predicted vs true label on {part}",
                f"{part}: predicted (rounded, clipped) against true label, clips counted per "
                f"cell; the dashed diagonal is a perfect prediction.",
            )
        )
    body.append("<h3>Predicted vs true</h3>")
    if figures:
        body.append(f'<div class="pair">{"".join(figures)}</div>')
    body += [note(esc(text)) for text in notes]
    config_path = run.run_dir / "best" / "config.yaml"
    if config_path.is_file():
        text = config_path.read_text(errors="replace")
        body.append(
            f'<h3>Configuration</h3><p><a href="{rel_link(config_path, run.run_dir)}">best/config.yaml</a> '
            f"(rerun it with <code>auttention-search pipeline --data ... --config "
            f'{esc(config_path)}</code>)</p><pre class="config">{esc(text)}</pre>'
        )
    return section("best", "\n".join(body))


def versus_html(best: dict) -> str:
    """The exported predictions against the functionals baseline: the paired difference on the same clips."""
    versus = best.get(VERSUS)
    if not versus:
        return ""
    scored = (
        f"{esc(versus['score_name'])} ρ {esc(format_difference(versus.get('score'), missing='–'))}, "
        if versus.get("score_name")
        else ""
    )
    return (
        f"<p>Exported predictions against the {FUNCTIONALS} baseline (the table's {FUNCTIONALS} row: utterance "
        f"functionals and the same SVR), paired on the same clips: {scored}devel ρ "
        f"{esc(format_difference(versus.get('devel'), missing='–'))}, test ρ "
        f"{esc(format_difference(versus.get('test'), missing='–'))} (the difference with its 95% bootstrap "
        f"interval; an interval that holds 0 is no evidence either way).</p>"
    )


def ensemble_html(best: dict) -> str:
    """The exported predictions: the configuration's fusion predictions averaged over its seeds."""
    ens = best.get("ensemble")
    if not ens:
        return ""
    text = (
        f"<p>This configuration's fusion predictions averaged over its models of seeds "
        f"{esc(', '.join(map(str, ens.get('seeds', []))))}: devel ρ "
        f"{format_rho_ci(ens.get('devel_rho'), ens.get('devel_rho_ci'), missing='–')}, test ρ "
        f"{format_rho_ci(ens.get('test_rho'), ens.get('test_rho_ci'), missing='–')}. The table above is the "
        f"trial's own model (its predictions: best/single/).</p>"
    )
    across = best.get("configurations") or {}
    if across.get("k", 1) > 1:
        shares = ", ".join(f"<code>{esc(t)}</code> {d:+.3f}" for t, d in (across.get("contributions") or {}).items())
        name = recorded_validation(best)
        scored = (
            f"{esc(name)} ρ {format_rho_ci(across.get('score'), across.get('score_ci'), missing='–')}, "
            if name != "devel"
            else ""
        )
        text += (
            f"<p>Exported predictions (best/predictions.*.csv): the best {across['k']} configurations averaged, "
            f"each over its seeds (k chosen by the average's {esc(name)} ρ, never by test): {scored}devel ρ "
            f"{format_rho_ci(across.get('devel_rho'), across.get('devel_rho_ci'), missing='–')}, test ρ "
            f"{format_rho_ci(across.get('test_rho'), across.get('test_rho_ci'), missing='–')}. What each member "
            f"adds to {esc(name)} ρ (the average's minus the others'): {shares}.</p>"
        )
    else:
        text = text.replace(
            "<p>This configuration's", "<p>Exported predictions (best/predictions.*.csv): this configuration's", 1
        )
    return text


def confirmation_html(best: dict) -> str:
    """How the exported configuration was chosen: each confirmed candidate's selection score and test rho
    per training seed (test shown, never used to choose)."""
    sel, confirmed = best.get("selection") or {}, best.get("confirmation") or []
    if not confirmed:
        return ""
    how = esc(sel.get("select", "?")) + (
        f" (last {esc(sel.get('select_last'))})" if sel.get("select") == "mean_last" else ""
    )
    rows = []
    for cand in confirmed:
        chosen = cand.get("trial_id") == best.get("trial_id")
        # a run folder written before the rename keeps the selection scores under devel_rho / mean_devel_rho
        seeds = "; ".join(
            f"seed {esc(s.get('seed'))}: {fmt(s.get('selection_score', s.get('devel_rho')))} / {fmt(s.get('test_rho'))}"
            for s in cand.get("seeds", [])
        )
        mean = cand.get("mean_selection_score", cand.get("mean_devel_rho"))
        rows.append(
            f"<tr><td><code>{esc(cand.get('trial_id'))}</code>{' (exported)' if chosen else ''}</td>"
            f"<td>{fmt(cand.get('selection_score'))}</td><td>{fmt(mean)}</td>"
            f"<td>{fmt(cand.get('mean_test_rho'))}</td><td>{seeds}</td></tr>"
        )
    scored = esc(best.get("fusion", {}).get("score_name") or "devel")
    return (
        f"<h3>How it was chosen</h3><p>Trials are ranked by their selection score ({how} of their "
        f"{scored} scores); the top {len(confirmed)} were trained again with new seeds, and the one with the best mean "
        f"selection score over its seeds is exported. Selection score / test rho per seed; test is shown, never "
        f'used to choose.</p><div class="scroll"><table class="trials"><thead><tr><th>trial</th><th>selection '
        f"score</th><th>mean selection score over seeds</th><th>mean test over seeds</th><th>seed: selection "
        f"score / test</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def section_top(run: RunData, out: Path, top: int = 10) -> str:
    """The top trials by best metric as a table, with links to each one's TensorBoard logs."""
    trials = run.trials
    if not len(trials):
        return section("top", note("No trials in trials.csv."))
    by = [c for c in (SELECTION, run.best_col) if c in trials.columns]
    ranked = trials.sort_values(by, ascending=False, na_position="last", kind="stable").head(top)
    params = run.params
    show_error = ranked["error"].astype(str).str.strip().ne("").any()
    has_selection = SELECTION in trials.columns
    head = (
        ["#", "trial", "logs", "no.", "status"]
        + (["selection score"] if has_selection else [])
        + [f"best epoch {esc(run.label)}", "epochs", "wall&nbsp;s"]
    )
    head += [esc(c[len("config.") :]).replace(".", ".<wbr>") for c in params] + (["error"] if show_error else [])
    lines = []
    for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
        folder = row["folder"]
        tb = folder / "tensorboard" if folder is not None and (folder / "tensorboard").is_dir() else folder
        logs = (
            f'<a href="{rel_link(tb, run.run_dir)}/">TensorBoard</a>'
            if tb is not None
            else '<span class="muted">none</span>'
        )
        cells = [
            str(rank),
            f"<code>{esc(row['trial_id'])}</code>",
            logs,
            fmt(row["number"]),
            status_badge(row["status"]),
        ]
        cells += [fmt(row[SELECTION])] if has_selection else []
        cells += [fmt(row[run.best_col]), fmt(row["epochs"]), fmt(row["wall_seconds"], 1)]
        cells += [fmt_value(row[c]) for c in params]
        if show_error:
            cells.append(f'<span class="error">{esc(row["error"])}</span>')
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    shown = f"The top {len(ranked)} of {len(trials)}" if len(trials) > len(ranked) else f"All {len(trials)}"
    table = (
        f"<p>{shown} trials by {'selection score' if has_selection else 'best ' + esc(run.label)}; “no.” is the "
        f"order trials started, the "
        f"columns after “wall s” are the parameters that differ between trials. Every trial is in "
        f'<a href="../trials.csv">trials.csv</a>.</p>'
        f'<div class="scroll"><table class="trials"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}'
        f"</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
    )
    return section("top", table)


def section_files(run: RunData, out: Path) -> str:
    """Links to the run's files, TensorBoard logs and the commands that open them."""
    rd = run.run_dir
    wanted = [
        ("trials.csv", "every trial: status, best score, epochs, wall time, configuration"),
        ("space.yaml", "the search space as run"),
        ("optuna.db", "the Optuna study"),
        ("best/metrics.json", "the best trial's scores"),
        ("best/config.yaml", "the best configuration"),
        ("best/predictions.devel.csv", "devel predictions"),
        ("best/predictions.test.csv", "test predictions (ComParE format)"),
        ("best/functionals", "the functionals baseline's predictions, by the same SVR"),
        ("tune", "Ray Tune's experiment: one folder per trial"),
    ]
    items = [
        f'<li><a href="{rel_link(rd / p, rd)}{"/" if (rd / p).is_dir() else ""}">{esc(p)}</a> – {esc(w)}</li>'
        for p, w in wanted
        if (rd / p).exists()
    ]
    logs = []
    for _, row in run.trials.sort_values("number").iterrows():
        folder = row["folder"]
        if folder is not None and (folder / "tensorboard").is_dir():
            logs.append(
                f'<li><a href="{rel_link(folder / "tensorboard", rd)}/">{esc(row["trial_id"])}</a> '
                f"{status_badge(row['status'])}</li>"
            )
    tune = rd / "tune"
    body = [
        f"<ul>{''.join(items)}</ul>",
        (
            f"<p>TensorBoard: <code>tensorboard --logdir {esc(tune)}</code>; the Optuna study: "
            f"<code>optuna-dashboard sqlite:///{esc((rd / 'optuna.db').resolve())}</code>.</p>"
        ),
    ]
    if logs:
        listing = f'<ul class="logs">{"".join(logs)}</ul>'
        if len(logs) > 24:  # a long list stays folded (native <details>, no script)
            listing = f"<details><summary>{len(logs)} trials, in the order they started</summary>{listing}</details>"
        body.append(f"<h3>TensorBoard logs per trial</h3>{listing}")
    else:
        body.append(note("No trial folder has TensorBoard logs."))
    return section("files", "\n".join(body))


def summary_html(run: RunData) -> str:
    """The line under the title: counts, best score, search time."""
    trials = run.trials
    counts = trials["status"].value_counts()
    parts = [
        f"{len(trials)} trial{'s' if len(trials) != 1 else ''}: "
        + ", ".join(f"{int(counts.get(s, 0))} {STATUS_STYLE[s]['label']}" for s in STATUS_STYLE)
    ]
    if run.best:
        scores = run.best.get(metric_branch(run.metric)) or run.best.get(FUSION) or {}
        score = scores.get("score", scores.get("devel_rho"))  # a run folder of an earlier version: devel's
        devel = f"; devel ρ {format_rho(scores.get('devel_rho'), missing='–')}" if run.score_name != "devel" else ""
        parts.append(
            f"best {esc(run.label)} {format_rho(score, missing='–')} "
            f"(trial <code>{esc(run.best.get('trial_id', '?'))}</code>{devel}; test ρ "
            f"{format_rho(scores.get('test_rho'), missing='labels unknown')})"
        )
    ends = [
        float(f["timestamp"].max()) for f in run.curves.values() if "timestamp" in f and f["timestamp"].notna().any()
    ]
    if ends and run.origin is not None:
        parts.append(f"search time {_duration(max(ends) - run.origin)}")
    return '<p class="summary">' + " · ".join(parts) + "</p>"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def page_html(run: RunData, sections: list[str]) -> str:
    """The whole page around the sections."""
    nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h in SECTIONS)
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = f"Search report: {run.name}"
    css = page_css()
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{esc(title)}</title>\n<link rel="icon" href="data:,">\n<style>\n{css}\n</style>\n</head>\n'
        f"<body>\n<main>\n<header>\n<h1>{esc(title)}</h1>\n{summary_html(run)}\n<nav>{nav}</nav>\n</header>\n"
        + "\n".join(sections)
        + f"\n<footer>Written by auttention-search report on {esc(generated)} from {esc(run.run_dir)}; "
        f"metric {esc(run.metric)}.</footer>\n</main>\n</body>\n</html>\n"
    )


SECTION_BUILDERS = (
    section_progress,
    section_importance,
    section_parallel,
    section_curves,
    section_best,
    section_top,
    section_files,
)


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report/ (index.html and its PNGs) for a finished (or interrupted) search; return the
    path of index.html. The folder is built beside report/ and renamed into place, so a reader sees the
    old report or the new one, never half of one."""
    run = load_run(run_dir)
    target = run.run_dir / "report"
    with atomic_dir(target) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is for reading
        sections = [build(run, tmp) for build in SECTION_BUILDERS]
        (tmp / "index.html").write_text(page_html(run, sections), encoding="utf-8")
    return target / "index.html"
