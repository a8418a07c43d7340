"""Test NMAD against training-set size: a learning curve of the models on one simulated dataset.

    python benchmarks/bench_training_size.py [--dataset sdss] [--sizes 2000 3000 5000]
        [--models resnet efficientnet swin mixer hogsvr] [--jobs 2]

For each size the dataset's simulation is re-run with that many systems (same preset, seed, bands, cutout and
split fractions; the data go to --work-dir, not data/), normalized, and every model is trained with the
config's own recipe (networks: one job each, 1 torch thread; HOG+SVR: all training rows up to its cap). Each
row of results/benchmarks/training_size.json gives the size, the training rows, the test NMAD, the
training-median NMAD (the half-median target is half of it) and the training seconds.

This answers "would more systems reach the target?" where the default run's 2,000 systems per dataset are set
by the 30-minute CPU budget of the whole DAG.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepred.contracts.config import load_config  # noqa: E402
from deepred.contracts.processed import ProcessedDataset  # noqa: E402
from deepred.data.normalize import normalize  # noqa: E402
from deepred.data.sources import open_source  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.core.metrics import nmad  # noqa: E402
from deepred.core.provenance import provenance  # noqa: E402
from deepred.simulate import simulate_dataset  # noqa: E402


def sized_config(config: dict, dataset: str, size: int, work_dir: Path) -> tuple[dict, str]:
    """The config with one more dataset, `<dataset>_n<size>`, simulated with `size` systems under work_dir."""
    ds_cfg = copy.deepcopy(config["datasets"][dataset])
    if ds_cfg["source"]["kind"] != "simulate":
        raise SystemExit(f"--dataset {dataset}: source kind {ds_cfg['source']['kind']!r}; only simulated ones resize")
    ds_cfg["source"]["n_systems"] = int(size)
    cfg = copy.deepcopy(config)
    name = f"{dataset}_n{size}"
    cfg["datasets"][name] = ds_cfg
    cfg["data_dir"] = str(work_dir / "data")
    return cfg, name


def prepare(cfg: dict, name: str) -> Path:
    """Simulate and normalize one sized dataset (skipped when its catalogue exists); its processed folder."""
    ds_cfg = cfg["datasets"][name]
    processed = Path(cfg["data_dir"]) / "processed" / name
    if (processed / "stats.json").exists():
        return processed
    src = ds_cfg["source"]
    simulate_dataset(preset=src["preset"], n_systems=src["n_systems"], seed=cfg["seed"],
                     out_dir=Path(cfg["data_dir"]) / "raw" / name, bands=ds_cfg["bands"], cutout=ds_cfg["cutout"],
                     class_fractions=src.get("class_fractions"))
    normalize(open_source(cfg, name), name, ds_cfg, processed, seed=cfg["seed"], config=cfg)
    return processed


def fit_one(model: str, cfg: dict, name: str, processed: Path, out_dir: Path) -> dict:
    """Train one model on one sized dataset; its test NMAD and seconds."""
    t0 = time.perf_counter()
    pred_path = out_dir / "predictions.parquet"
    from deepred.predict.splits import predict_model

    if model == "hogsvr":
        from deepred.baselines.hogsvr import train_hogsvr

        train_hogsvr(name, cfg, processed, out_dir)
    else:
        from deepred.training.train import train_model

        train_model(model, name, cfg, processed, out_dir, threads=1)
    pred = predict_model(out_dir, processed, pred_path)
    seconds = time.perf_counter() - t0
    test = pred[pred["split"] == "test"]
    return {"model": model, "test_nmad": nmad(test["z_pred"].to_numpy(), test["z_true"].to_numpy()),
            "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--dataset", default="sdss")
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 3000, 5000])
    ap.add_argument("--models", nargs="+", default=["resnet", "efficientnet", "swin", "mixer", "hogsvr"])
    ap.add_argument("--jobs", type=int, default=2, help="models trained at once (one process each)")
    ap.add_argument("--work-dir", default=str(ROOT / "data" / "bench_training_size"), help="simulated data and models")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "training_size.json"))
    args = ap.parse_args()
    config = load_config(args.config)
    if args.dataset not in config["datasets"]:
        raise SystemExit(f"--dataset {args.dataset}: not in {args.config} (known: {', '.join(config['datasets'])})")
    work = Path(args.work_dir)
    label = config["datasets"][args.dataset]["label_column"]
    rows = []
    for size in args.sizes:
        cfg, name = sized_config(config, args.dataset, size, work)
        processed = prepare(cfg, name)
        ds = ProcessedDataset(processed)
        train, test = ds.split("train"), ds.split("test")
        y_te = test[label].to_numpy(float)
        median_nmad = nmad(np.full(len(y_te), np.median(train[label].to_numpy(float))), y_te)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(fit_one, m, cfg, name, processed, work / "models" / m / name) for m in args.models]
            for fut in futures:
                row = {"dataset": args.dataset, "n_systems": size, "n_train": len(train), "n_test": len(test),
                       "training_median_nmad": median_nmad, "half_median_target": median_nmad / 2, **fut.result()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    write_json(args.out, {"config": args.config, "rows": rows, "provenance": provenance(config, [])})


if __name__ == "__main__":
    main()
