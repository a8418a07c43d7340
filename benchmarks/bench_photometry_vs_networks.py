"""The photometric baseline against the best DeepRed model on every test set, from models and predictions that
already exist (e.g. a default run made before the photometric baseline joined the DAG): fits the photometric
baseline on each processed dataset exactly as rule `photometry` does, then gives per test set the NMADs and
R_photometry = NMAD(best DeepRed) / NMAD(photometry) with a paired-bootstrap 95% interval (same rows).

    python benchmarks/bench_photometry_vs_networks.py --processed data/processed --predictions results/predictions \
        --out results/benchmarks/photometry_vs_networks

Writes {out}/models/photometry/{dataset}/, {out}/predictions/photometry/{dataset}.parquet and {out}/table.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepred.core.model_names import deepred_models  # noqa: E402

from deepred.core.seeds import derive_seed
from deepred.contracts.config import load_config  # noqa: E402
from deepred.contracts.processed import ProcessedDataset, test_set_rows  # noqa: E402
from deepred.core.io import write_csv  # noqa: E402
from deepred.core.metrics import nmad  # noqa: E402
from deepred.baselines.photometry import train_photometry  # noqa: E402
from deepred.predict.splits import calibrate_model, predict_model  # noqa: E402
from deepred.contracts.predictions import test_set_predictions  # noqa: E402

N_BOOT = 1000


def fit_all(cfg: dict, processed: Path, out: Path) -> None:
    for ds in cfg["datasets"]:
        t0, model_dir = time.process_time(), out / "models" / "photometry" / ds
        train_photometry(ds, cfg, processed / ds, model_dir)
        calibrate_model(model_dir, processed / ds, cfg)
        predict_model(model_dir, processed / ds, out / "predictions" / "photometry" / f"{ds}.parquet")
        print(f"{ds}: photometry fitted in {time.process_time() - t0:.1f} CPU-s", flush=True)


def compare(cfg: dict, ts: str, processed: Path, predictions: Path, out: Path) -> dict:
    ds = cfg["test_sets"][ts]["dataset"]
    label, rows = cfg["datasets"][ds]["label_column"], test_set_rows(cfg, ts, processed / ds)
    catalog = ProcessedDataset(processed / ds).catalog

    def z_of(path):
        sel, _ = test_set_predictions(path, rows, catalog, label)
        return sel["z_pred"].to_numpy(), sel["z_true"].to_numpy()

    z_phot, z_true = z_of(out / "predictions" / "photometry" / f"{ds}.parquet")
    deep = {m: z_of(predictions / m / f"{ds}.parquet")[0] for m in deepred_models(cfg)}
    best = min(deep, key=lambda m: nmad(deep[m], z_true))
    rng, n = np.random.default_rng(derive_seed(cfg["seed"], "bootstrap", ts)), len(z_true)
    ratios = [nmad(deep[best][i], z_true[i]) / nmad(z_phot[i], z_true[i])
              for i in (rng.integers(0, n, n) for _ in range(N_BOOT))]
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {"test_set": ts, "n": n, "photometry_nmad": nmad(z_phot, z_true), "best_deepred": best,
            "best_deepred_nmad": nmad(deep[best], z_true), "R_photometry": nmad(deep[best], z_true) / nmad(z_phot, z_true),
            "R_photometry_ci_lo": lo, "R_photometry_ci_hi": hi}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processed", type=Path, required=True, help="folder of {dataset}/ processed datasets")
    ap.add_argument("--predictions", type=Path, required=True, help="folder of {model}/{dataset}.parquet")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    fit_all(cfg, args.processed, args.out)
    table = pd.DataFrame([compare(cfg, ts, args.processed, args.predictions, args.out) for ts in cfg["test_sets"]])
    write_csv(args.out / "table.csv", table)
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
