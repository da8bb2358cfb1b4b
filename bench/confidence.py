"""Bootstrap intervals of Spearman's rho (auttention/confidence.py): seconds per interval.

    .venv/bin/python bench/confidence.py [--repeats 3]

Cases: `demo` = the demo corpus' devel partition (180 clips, 9 speakers), `compare` = ComParE's
devel partition (5,328 clips, about 80 speakers); labels 1..9 and rounded predictions (ties, as the
product scores them). For each, rho_interval resampling clips and speakers, and difference_interval
(two predictions on the same resamples), B = 1000. Reported: wall seconds (best of --repeats) and
the interval. Prints a table and writes bench/results/confidence.json. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import loadavg, summary, table, timed, write_result  # noqa: E402

CASES = {"demo": (180, 9), "compare": (5328, 80)}


def _data(n: int, speakers: int, seed: int = 0):
    """Labels 1..9 following the speaker, two rounded predictions of them, and each clip's speaker."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, speakers, n)
    y = np.clip(np.round(rng.normal(5, 1.5, speakers)[groups] + rng.normal(0, 1, n)), 1, 9)
    a = np.clip(np.round(y + rng.normal(0, 2.5, n)), 1, 9)
    b = np.clip(np.round(y + rng.normal(0, 3.0, n)), 1, 9)
    return y, a, b, groups


def main(argv: list[str] | None = None) -> None:
    """Time each case and print the table."""
    from auttention.confidence import N_BOOT, difference_interval, rho_interval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    load_start, rows = loadavg(), []
    for case, (n, speakers) in CASES.items():
        y, a, b, groups = _data(n, speakers)
        for what, fn in (("rho, clips", lambda: rho_interval(y, a)),
                         ("rho, speakers", lambda: rho_interval(y, a, groups)),
                         ("difference, speakers", lambda: difference_interval(y, a, b, groups)[1:])):
            runs = [timed(fn) for _ in range(args.repeats)]
            lo, hi = runs[0][1]
            rows.append({"case": case, "n": n, "speakers": speakers, "interval": what, "n_boot": N_BOOT,
                         "seconds": summary([t for t, _ in runs]), "lo": lo, "hi": hi})
    print(table([[r["case"], r["n"], r["interval"], r["seconds"]["best"], f"[{r['lo']:.3f}, {r['hi']:.3f}]"]
                 for r in rows], ["case", "clips", "interval (B = 1000)", "seconds", "95% interval"]))
    print(f"wrote {write_result('confidence', {'cases': rows, 'load_start': load_start, 'load_end': loadavg()})}")


if __name__ == "__main__":
    main()
