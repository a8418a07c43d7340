"""Time the metrics stage at the default run's size: 7 test sets x every model, bootstraps included.

Synthetic but real files: a catalogue per dataset (2000 objects, 15% test) and a Parquet prediction file per
model in the contract (PhotoZ with a 180-bin PDF), then the same functions the rules call.
Run: python benchmarks/bench_metrics.py [--n 2000] [--resamples 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from deepred.contracts.config import validate_config  # noqa: E402
from deepred.results.tables import build_tables, study_paths, table_models, write_test_set_metrics  # noqa: E402
from test_tables import SCATTER, write_pred  # noqa: E402  (the tests' contract writer)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="objects per dataset")
    ap.add_argument("--resamples", type=int, default=200)
    args = ap.parse_args(argv)
    cfg = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    cfg["metrics"]["bootstrap_resamples"] = args.resamples
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        grid = np.linspace(0, 2, 180)
        preds, t0 = {}, time.perf_counter()
        for ds in cfg["datasets"]:
            proc = tmp / "processed" / ds
            proc.mkdir(parents=True)
            cat = pd.DataFrame({
                "object_id": [f"{ds}{i:06d}" for i in range(args.n)],
                "split": rng.choice(["train", "val", "test"], size=args.n, p=[0.7, 0.15, 0.15]),
                "z_lens": rng.uniform(0.1, 0.9, args.n), "snr": rng.lognormal(3, 1, args.n),
                "high_prob_lens": rng.random(args.n) < 0.3,
            })
            cat.to_parquet(proc / "catalog.parquet", index=False)
            preds[ds] = {m: write_pred(tmp / "pred" / m / f"{ds}.parquet", cat, m, SCATTER.get(m, 0.05), 0,
                                       grid if m == "photoz" else None) for m in table_models(cfg)}
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        for ts, spec in cfg["test_sets"].items():
            d = tmp / "metrics" / ts
            write_test_set_metrics(cfg, ts, preds[spec["dataset"]], tmp / "processed" / spec["dataset"],
                                   d / "metrics.csv", d / "nmad.csv", d / "binned.csv", d / "calibration.csv")
        t_metrics = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_tables(cfg, *study_paths(cfg, tmp / "metrics", tmp / "tables"))
        t_tables = time.perf_counter() - t0
        print(pd.read_csv(tmp / "tables" / "improvement.csv")[["test_set", "n", "best_deepred", "best_baseline",
                                                                  "R", "paper_R"]].to_string(index=False))
    n_models = len(table_models(cfg))
    print(f"{len(cfg['test_sets'])} test sets x {n_models} models, {args.n} objects/dataset, "
          f"{args.resamples} resamples: write inputs {t_write:.1f} s, metrics {t_metrics:.1f} s, "
          f"tables {t_tables:.2f} s")


if __name__ == "__main__":
    main()
