"""The per-epoch scoring, before and after: select_c over the 6 C values, per-C liblinear vs LinearSVRPath.

    .venv/bin/python bench/scoring.py [--cases demo-random compare-512-random ...] [--threads 1]

`before` is what select_c did until this change (and what the paper's code does): for each C a
MinMaxScaler fit on train and a liblinear LinearSVR(C, random_state=0, max_iter=10000) fit from
zero. `after` is select_c as it is now (bench/common.py: auttention.validation.cross_validate on devel): one pipeline,
make_pipeline(MinMaxScaler(), LinearSVRPath(grid)) (auttention/svr.py). Both get the same data;
reported are CPU seconds of this process (time.process_time, with --threads BLAS threads: on a
shared machine CPU time is steadier than wall time, and liblinear is single-threaded anyway), the
chosen C of each, and the largest |rho difference| over the grid.

Cases: `demo` = the demo configuration's fusion (240 train, 180 devel clips; 192 features),
`compare-512` / `compare-1024` = ComParE's 5,564 train and 5,328 devel clips with 512 features
(the paper-size attention features) and 1,024 (the issue's fused figure). `random`: uniform
features and labels without any relation (the issue's measurement, the solvers' worst case);
`latent`: tanh of a few correlated factors, one of them the label's (features that carry it).

Prints a table and writes bench/results/scoring.json; bench/scale.py reads it for the "scoring as
before" projection. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import loadavg, table, write_result  # noqa: E402

SIZES = {"demo": (240, 180, 192), "compare-512": (5564, 5328, 512), "compare-1024": (5564, 5328, 1024)}
CASES = ["demo-random", "demo-latent", "compare-512-random", "compare-512-latent", "compare-1024-random"]


def features(case: str, seed: int = 0):
    """(x_train, y_train, x_devel, y_devel) float32 features and labels 1..9 of one case."""
    size, kind = case.rsplit("-", 1)
    n_train, n_devel, d = SIZES[size]
    rng = np.random.default_rng(seed)
    n = n_train + n_devel
    y = rng.integers(1, 10, n).astype(float)
    if kind == "random":
        x = rng.uniform(size=(n, d))
    else:
        factors = np.c_[(y - 5) / 3 + rng.normal(0, 1.2, n), rng.normal(size=(n, 5))]
        x = np.tanh(factors @ rng.normal(size=(6, d)) / 2 + rng.normal(0, 0.3, (n, d)))
    x = x.astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def before(x_train, y_train, x_devel, y_devel, cfg) -> tuple[float, dict[float, float]]:
    """select_c as it was: a scaler and a liblinear fit from zero per C; (chosen C, rho per C)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import LinearSVR

    from auttention.metric import spearman
    from auttention.svr import postprocess

    rhos = {}
    for c in cfg.complexities:
        scaler = MinMaxScaler().fit(x_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svr = LinearSVR(C=c, random_state=0, max_iter=cfg.max_iter, dual="auto").fit(scaler.transform(x_train),
                                                                                          y_train)
        rhos[float(c)] = spearman(y_devel, postprocess(svr.predict(scaler.transform(x_devel)), cfg))
    return max(rhos, key=rhos.get), rhos


def cpu_seconds(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=[f"{s}-{k}" for s in SIZES for k in ("random", "latent")])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: one trial's core)")
    args = parser.parse_args()
    from common import select_c
    from threadpoolctl import threadpool_limits

    from auttention.config import ScoringConfig

    cfg = ScoringConfig()
    load_start, rows = loadavg(), []
    with threadpool_limits(args.threads):
        for case in args.cases:
            data = features(case)
            t_before, (c_before, rho_before) = cpu_seconds(lambda: before(*data, cfg))
            t_after, chosen = cpu_seconds(lambda: select_c(*data, cfg))
            rows.append({"case": case, "n_train": len(data[0]), "n_devel": len(data[2]), "features": data[0].shape[1],
                         "before_cpu_s": t_before, "after_cpu_s": t_after, "speed_up": t_before / t_after,
                         "c_before": c_before, "c_after": chosen.c, "rho_before": rho_before[c_before],
                         "rho_after": chosen.score,
                         "max_abs_rho_diff": max(abs(rho_before[c] - chosen.score_per_c[c]) for c in rho_before)})
            r = rows[-1]
            print(f"  {case}: {t_before:.2f} -> {t_after:.2f} CPU s, C {c_before:g} / {chosen.c:g}", flush=True)
    print(table([[r["case"], f"{r['n_train']}x{r['features']}", r["before_cpu_s"], r["after_cpu_s"], r["speed_up"],
                  f"{r['c_before']:g}", f"{r['c_after']:g}", r["rho_before"], r["rho_after"], r["max_abs_rho_diff"]]
                 for r in rows],
                ["case", "train", "before CPU s", "after CPU s", "x", "C before", "C after", "rho before",
                 "rho after", "max |drho| over C"]))
    print(f"wrote {write_result('scoring', {'threads': args.threads, 'complexities': list(cfg.complexities), 'cases': rows, 'load_start': load_start, 'load_end': loadavg()})}")


if __name__ == "__main__":
    main()
