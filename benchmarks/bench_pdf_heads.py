"""Point head plus a calibrated width, or a PDF head? One network trained both ways on processed datasets.

    python benchmarks/bench_pdf_heads.py [--model resnet] [--datasets des_deep sdss] [--seeds 20260211 12345]
        [--data-dir data] [--work-dir /tmp/deepred-pdf-heads]

For every (dataset, seed, head in point|pdf) the network is trained with the config's recipe and that head
(deepred.training.train.train_model, 1 torch thread), calibrated on the validation split (deepred.predict.splits.calibrate_model)
and predicted (deepred.predict.splits.predict_model); the test rows give, before and after calibration, the
pdf_calibration table's columns (deepred.pdfs.calibration_table: NMAD of z_pred and of the PDF median, PIT KS, CRPS,
68%/95% coverage with bootstrap intervals). Models and predictions go to --work-dir; the rows to
results/benchmarks/pdf_heads.json. Needs the datasets' processed shards (a default run's data/processed/).
docs/pdfs.md quotes it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepred.core import metrics as M  # noqa: E402
from deepred.pdfs.calibration_table import calibration_rows  # noqa: E402
from deepred.contracts.config import load_config  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.predict.splits import calibrate_model, predict_model  # noqa: E402
from deepred.contracts.predictions import read_predictions  # noqa: E402
from deepred.core.provenance import provenance  # noqa: E402
from deepred.training.train import train_model  # noqa: E402

HEADS = ("point", "pdf")


def one_run(config: dict, model: str, dataset: str, seed: int, head: str, processed: Path, work: Path) -> list[dict]:
    """Train, calibrate and predict one (dataset, seed, head); the test rows' calibration table rows."""
    cfg = copy.deepcopy(config)
    cfg["seed"] = seed
    cfg["architectures"][model]["head"] = head
    out = work / f"seed{seed}" / head
    model_dir, pred = out / "models" / model / dataset, out / "predictions" / model / f"{dataset}.parquet"
    t0 = time.perf_counter()
    if not pred.exists():  # a rerun reuses finished runs
        train_model(model, dataset, cfg, processed, model_dir, threads=1)
        calibrate_model(model_dir, processed, cfg)
        predict_model(model_dir, processed, pred)
    frame, grid = read_predictions(pred)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    idx = M.bootstrap_indices(len(test), cfg["metrics"]["bootstrap_resamples"], seed)
    base = {"model": model, "dataset": dataset, "seed": seed, "head": head, "seconds": time.perf_counter() - t0}
    return calibration_rows(base, test, grid, pred, idx, cfg["metrics"]["ci_level"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--model", default="resnet", help="an architecture key of the config")
    ap.add_argument("--datasets", nargs="+", default=["des_deep", "sdss"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[20260211, 12345], help="master seeds")
    ap.add_argument("--data-dir", default=None, help="where processed/{dataset} lives (default: the config's)")
    ap.add_argument("--work-dir", default="/tmp/deepred-pdf-heads")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "pdf_heads.json"))
    args = ap.parse_args()
    config = load_config(args.config)
    if args.model not in config["architectures"]:
        raise SystemExit(f"--model {args.model}: not an architecture of {args.config}")
    data_dir = Path(args.data_dir or config["data_dir"])
    rows = []
    for dataset in args.datasets:
        processed = data_dir / "processed" / dataset
        if not (processed / "stats.json").exists():
            raise SystemExit(f"{processed}: no processed dataset (run the pipeline's normalize step first)")
        for seed in args.seeds:
            for head in HEADS:
                rows += one_run(config, args.model, dataset, seed, head, processed, Path(args.work_dir))
                print(rows[-1], flush=True)
    write_json(args.out, {"rows": rows, "provenance": provenance(config, [])})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
