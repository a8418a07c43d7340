"""Benchmark DeepRed training: images/s of each backbone's training step and of the data loader.

    python benchmarks/bench_training.py                                   # data/processed/des_deep
    python benchmarks/bench_training.py --processed data/processed/sdss
    python benchmarks/bench_training.py --simulate des_deep --n 600       # simulate a small set first
    python benchmarks/bench_training.py --train                           # also time whole training jobs

Training throughput: optimizer steps (forward, loss, backward, AdamW) on batches already in memory, with
`training.threads` torch threads, as the `train` rule runs. Loader throughput: one pass of the trainer's
own DataLoader (memory-mapped shards, flips/rotations, collation) with `training.num_workers` workers.
Target: loader >= 5x training for every backbone, so data loading never starves training.
With --train, each backbone is trained through deepred.training.train.train_model and its test NMAD is
compared with the training-median predictor's (target: at most half).

Writes results/benchmarks/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepred.contracts.config import load_config  # noqa: E402
from deepred.contracts.processed import ProcessedDataset  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.models.registry import build_model  # noqa: E402
from deepred.training.loader import ShardImages, make_loader  # noqa: E402
from deepred.training.train import nmad, train_model, training_params  # noqa: E402


def loader_throughput(proc: ProcessedDataset, params: dict, label: str) -> float:
    rows = proc.split("train")
    ds = ShardImages(proc, rows, label, augment=True, seed=1)
    loader = make_loader(ds, int(params["batch_size"]), params, torch.device("cpu"), sampler=None)
    n, t0 = 0, time.perf_counter()
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def train_throughput(model: str, config: dict, proc: ProcessedDataset, steps: int) -> tuple[float, float]:
    params = training_params(model, config)
    bands, cutout = len(proc.bands), int(proc.stats["cutout"])
    torch.manual_seed(0)
    net = build_model(model, config, bands, cutout)
    if net.head == "pdf":
        grid = np.linspace(0, 1, net.num_outputs)
    else:
        grid = None
    net.set_normalization(proc.stats["band_mean"], proc.stats["band_std"], 0.5, 0.2, grid)
    bs = int(params["batch_size"])
    rows = proc.split("train").iloc[:bs]
    x = torch.from_numpy(proc.images(rows).astype(np.float32))
    z = torch.from_numpy(rows[proc.stats["label_column"]].to_numpy(np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = net.loss(net(x), z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step pays one-off allocations
            times.append(time.perf_counter() - t0)
    return bs / float(np.median(times)), sum(p.numel() for p in net.parameters()) / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--processed", help="a normalized dataset folder (default: data/processed/des_deep)")
    ap.add_argument("--simulate", help="simulate + normalize this configured dataset first (small, in a temp dir)")
    ap.add_argument("--n", type=int, default=600, help="systems to simulate with --simulate")
    ap.add_argument("--models", nargs="*", help="models to time (default: every enabled backbone)")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per backbone")
    ap.add_argument("--train", action="store_true", help="also train each model and report its test NMAD")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "training.json"))
    args = ap.parse_args(argv)

    config = load_config(args.config)
    params = config["training"]
    torch.set_num_threads(int(params["threads"]))
    dataset = None
    if args.simulate:
        from deepred.data.normalize import normalize
        from deepred.contracts.raw import read_simulated
        from deepred.simulate import simulate_dataset

        dataset = args.simulate
        ds_cfg = config["datasets"][dataset]
        tmp = Path(tempfile.mkdtemp(prefix="bench_training_"))
        simulate_dataset(preset=ds_cfg["source"]["preset"], n_systems=args.n, seed=config["seed"],
                         out_dir=tmp / "raw", bands=ds_cfg["bands"], cutout=ds_cfg["cutout"])
        normalize(read_simulated(tmp / "raw"), dataset, ds_cfg, tmp / "processed", seed=config["seed"], config=config)
        processed = tmp / "processed"
    else:
        processed = Path(args.processed or REPO / "data" / "processed" / "des_deep")
        if not (processed / "catalog.parquet").exists():
            ap.error(f"{processed}: no normalized dataset (run `snakemake {processed}/catalog.parquet` or pass --simulate)")
    proc = ProcessedDataset(processed)
    dataset = dataset or proc.stats["dataset"]
    label = proc.stats["label_column"]
    models = args.models or [a for a, c in config["architectures"].items() if c["enabled"]]

    loader_ips = loader_throughput(proc, params, label)
    print(f"loader: {loader_ips:.0f} images/s ({params['num_workers']} workers, batch {params['batch_size']})", flush=True)
    record = {
        "dataset": dataset,
        "processed": str(processed),
        "shape": [len(proc.bands), proc.stats["cutout"], proc.stats["cutout"]],
        "n_train": int((proc.catalog["split"] == "train").sum()),
        "threads": int(params["threads"]),
        "num_workers": int(params["num_workers"]),
        "batch_size": int(params["batch_size"]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "loader_images_per_s": loader_ips,
        "models": {},
    }
    for m in models:
        ips, mparams = train_throughput(m, config, proc, args.steps)
        rec = {"train_images_per_s": ips, "params_millions": mparams, "loader_over_train": loader_ips / ips,
               "loader_ok": loader_ips >= 5 * ips}
        if args.train:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                meta = train_model(m, dataset, config, processed, tmp)
                from deepred.predict.splits import predict_rows

                test = proc.split("test")
                pred = predict_rows(tmp, processed, test)
                z_train = proc.split("train")[label].to_numpy(float)
                rec.update(
                    train_seconds=time.perf_counter() - t0,
                    epochs_run=meta["epochs_run"],
                    test_nmad=nmad(pred["z_pred"], pred["z_true"]),
                    test_nmad_train_median=nmad(np.full(len(pred), np.median(z_train)), pred["z_true"]),
                )
                rec["nmad_ok"] = rec["test_nmad"] <= 0.5 * rec["test_nmad_train_median"]
        record["models"][m] = rec
        print(f"{m}: {json.dumps(rec)}", flush=True)
    record["all_loader_ok"] = all(r["loader_ok"] for r in record["models"].values())
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
