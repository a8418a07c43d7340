"""The default SHAP jobs (method, occlusion control) and the localization table on chosen datasets, from trained
models and processed datasets that already exist (e.g. a default run's results/models and data/processed), without
Snakemake: for measuring the attribution method on datasets the explained sample of a run did not reach yet.

    python benchmarks/bench_shap_sets.py --models results/models --processed data/processed \
        --datasets des_wide desi_dot --out results/benchmarks/shap_sets

Writes {out}/shap/{model}/{dataset}/ (as rule shap_explain does) and {out}/shap_localization.csv, and prints the
high-quality rows. Config: config.yaml's shap section (--config to change it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepred.core.model_names import explained_models  # noqa: E402
from deepred.contracts.config import load_config  # noqa: E402
from deepred.explain.attributions import explain_model  # noqa: E402
from deepred.results.shap_table import write_localization_table  # noqa: E402

SHOWN = ["test_set", "model", "subset", "n", "pointing_acc", "pointing_lo", "pointing_hi", "chance", "err_clean",
         "err_object_hidden", "err_elsewhere_hidden", "reliance", "reliance_lo", "reliance_hi", "wide_reliance",
         "looks_at"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True, help="folder of {model}/{dataset}/ model folders")
    ap.add_argument("--processed", type=Path, required=True, help="folder of {dataset}/ processed datasets")
    ap.add_argument("--datasets", nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    entries = []
    for ds in args.datasets:
        for model in explained_models(cfg):
            out, t0 = args.out / "shap" / model / ds, time.process_time()
            explain_model(args.models / model / ds, args.processed / ds, cfg, out, model=model, dataset=ds)
            print(f"{ds} {model}: {time.process_time() - t0:.1f} CPU-s", flush=True)
            entries.append([model, ds, out / "per_image.parquet", out / "occlusion.parquet", None])
    cfg["test_sets"] = {k: v for k, v in cfg["test_sets"].items() if v["dataset"] in args.datasets}
    table = args.out / "shap_localization.csv"
    write_localization_table(cfg, entries, {d: args.processed / d for d in args.datasets}, table,
                             args.out / "shap_localization.provenance.json")
    frame = pd.read_csv(table)
    pd.set_option("display.width", 250)
    print(frame[frame.subset == "high_quality"][[c for c in SHOWN if c in frame]].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
