"""How every command, table and the report print a score: a rho, its interval, a paired difference,
an evaluation's figures on one line, and the paper's table of branches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .record import FUNCTIONALS, FUSION

if TYPE_CHECKING:
    from .evaluation import Evaluation

RHO_UNDEFINED = "undefined (every label equal)"


def format_rho(rho: float | None, digits: int = 3, missing: str = "n/a") -> str:
    """A Spearman's rho as every command and the report print it: `digits` decimals; RHO_UNDEFINED where it
    is undefined (NaN, see `spearman`), never a number; `missing` where there is none (None: labels unknown)."""
    if rho is None:
        return missing
    if math.isnan(rho):
        return RHO_UNDEFINED
    return f"{rho:.{digits}f}"


def format_rho_ci(rho: float | None, ci: Sequence[float] | None, missing: str = "n/a") -> str:
    """A rho with its 95% interval as every command and the report print it: "0.577 [0.41, 0.72]" (the rho
    as `format_rho` prints it everywhere else; the interval, see auttention/confidence.py, to 2 decimals);
    `format_rho`'s words where rho is undefined or missing, the rho alone where there is no interval (none
    computed, or undefined in most resamples)."""
    shown = format_rho(rho, missing=missing)
    if rho is None or math.isnan(rho) or ci is None or any(v is None or math.isnan(v) for v in ci):
        return shown
    return f"{shown} [{ci[0]:.2f}, {ci[1]:.2f}]"


VALIDATION_TEXT = {  # what each validation's score is, in the words of every table's footnote
    "devel": "devel rho of the SVR fit on train",
    "swap": "the mean of devel's rho (SVR fit on train) and train's (SVR fit on devel)",
    "speaker_folds": (
        "the mean rho of speaker-disjoint folds over train+devel, each predicted by the SVR fit on the others"
    ),
}


def format_evaluation(ev: Evaluation, missing: str = "n/a") -> str:
    """An evaluation's figures as the commands print them on one line (see `format_scores`)."""
    return format_scores(ev.metrics(), missing)


def format_scores(entry: dict, missing: str = "n/a") -> str:
    """The figures of a metrics.json entry (an evaluation's, or an ensemble's with its score_name) on one line:
    the validation score C was chosen by where it is not devel's, then devel and test rho, each with its 95%
    interval: "swap 0.433 [0.13, 0.66], devel 0.282 [-0.26, 0.69], test 0.757 [0.47, 0.88]"."""
    shown = (
        f"devel {format_rho_ci(entry.get('devel_rho'), entry.get('devel_rho_ci'))}, "
        f"test {format_rho_ci(entry.get('test_rho'), entry.get('test_rho_ci'), missing)}"
    )
    name = entry.get("score_name") or "devel"
    if name == "devel" or entry.get("score") is None:
        return shown
    return f"{name} {format_rho_ci(entry['score'], entry.get('score_ci'))}, {shown}"


def format_difference(entry: dict | None, missing: str = "n/a") -> str:
    """A paired difference (`compare`) as every command and the report print it: "+0.099 [-0.06, +0.25]"."""
    if not entry or entry.get("difference") is None or math.isnan(entry["difference"]):
        return missing
    shown = f"{entry['difference']:+.3f}"
    ci = entry.get("ci")
    return f"{shown} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else shown


def table(results: dict[str, Evaluation]) -> str:
    """The paper's table: devel and test Spearman per branch with their 95% intervals (test only where
    labels are known), and first the score C was chosen by where scoring.validation is not devel."""

    def signed(text: str) -> str:  # a place for the minus sign, so that the decimal points line up
        return text if text.startswith("-") else " " + text

    labels = sorted({ev.label for ev in results.values() if ev.validation != "devel"})
    heads = [f" {label}" for label in labels[:1]] + [" devel", " test"]
    rows = []
    for name, ev in results.items():
        cells = [signed(format_rho_ci(ev.score, ev.score_ci))] if labels else []
        cells += [signed(format_rho_ci(ev.devel_rho, ev.devel_ci)), signed(format_rho_ci(ev.test_rho, ev.test_ci))]
        rows.append((name, cells, f"{ev.c:g}"))
    nw = max(10, *(len(r[0]) for r in rows))
    widths = [max([len(head)] + [len(r[1][i]) for r in rows]) for i, head in enumerate(heads)]
    lines = [" ".join([f"{'':<{nw}}", *(f"{h:<{w}}" for h, w in zip(heads, widths))]) + "  C"]
    lines += [
        " ".join([f"{name:<{nw}}", *(f"{c:<{w}}" for c, w in zip(cells, widths))]) + f"  {c}" for name, cells, c in rows
    ]
    if labels:
        validation = next(ev.validation for ev in results.values() if ev.validation != "devel")
        lines.append(
            f"({labels[0]}: {VALIDATION_TEXT[validation]}; "
            f"C chosen by it; devel from the SVR fit on train, test from the SVR refit on train+devel)"
        )
    if any(ev.test_rho is None for ev in results.values()):
        lines.append("(test: labels unknown, e.g. '?' as ComParE ships them)")
    resampled = {ev.resampled for ev in results.values() if ev.resampled}
    if resampled:
        lines.append(f"[95% bootstrap interval, {' and '.join(sorted(resampled))} resampled]")
    return "\n".join(lines)


def versus_line(entry: dict[str, Any], what: str = FUSION) -> str:
    """The paired difference as `pipeline` and `run` print it."""
    scored = f"{entry['score_name']} {format_difference(entry.get('score'))}, " if entry.get("score_name") else ""
    return (
        f"{what} vs {FUNCTIONALS} (paired, the same clips): {scored}devel {format_difference(entry.get('devel'))}, "
        f"test {format_difference(entry.get('test'))}"
    )
