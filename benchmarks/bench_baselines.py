"""Benchmark the baselines: time per training epoch of each neural baseline (single thread), full
training time and test NMAD through the pipeline's trainer when it is there, HOG+SVR feature /
fit / predict times and the photometric baseline's, against the training-median predictor's NMAD.

    python benchmarks/bench_baselines.py                          # every data/processed/* dataset
    python benchmarks/bench_baselines.py --processed data/processed/des_deep --no-train
    python benchmarks/bench_baselines.py --simulate des_deep --n 600   # simulate a small set first

Writes results/benchmarks/baselines.json (one record per dataset and baseline).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepred.core.model_names import FEATURE_BASELINES, neural_baselines  # noqa: E402
from deepred.contracts.config import load_config, validate_config  # noqa: E402
from deepred.contracts.processed import ProcessedDataset  # noqa: E402
from deepred.baselines.hogsvr import HogParams, HogSVRModel, fit_hogsvr, hog_features  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.core.metrics import metric_values, sample_arrays  # noqa: E402


def nmad(p, t) -> float:
    return metric_values("nmad", sample_arrays(np.asarray(p, float), np.asarray(t, float)), {})


def epoch_time(name: str, config: dict, images: np.ndarray, batch: int) -> dict:
    """Seconds for one training epoch (forward + backward + Adam step) over `images`, one thread."""
    from deepred.models.registry import build_model

    net = build_model(name, config, images.shape[1], images.shape[2]).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.from_numpy(np.ascontiguousarray(images))
    t0 = time.perf_counter()
    for lo in range(0, len(x), batch):
        out = net(x[lo:lo + batch])
        loss = (out if torch.is_tensor(out) else next(iter(out.values()))).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"epoch_s": round(time.perf_counter() - t0, 3), "n_params": int(sum(p.numel() for p in net.parameters()))}


def train_with_pipeline(name: str, dataset: str, config: dict, processed: Path, workdir: Path) -> dict:
    """Train through deepred.training.train.train_model and score the test split with the trained checkpoint."""
    from deepred.models.checkpoint import load_trained
    from deepred.training.train import train_model

    out_dir = workdir / "models" / name / dataset
    t0 = time.perf_counter()
    train_model(name, dataset, config, processed, out_dir)
    fit_s = time.perf_counter() - t0
    ds = ProcessedDataset(processed)
    test = ds.split("test")
    z = load_trained(out_dir).predict(ds.images(test).astype(np.float32))["z_pred"]
    return {"fit_s": round(fit_s, 2), "test_nmad": nmad(z, test[ds.stats["label_column"]])}


def bench_hogsvr(config: dict, dataset: str, processed: Path) -> dict:
    cfg = config["baselines"]["hogsvr"]
    ds = ProcessedDataset(processed)
    label = config["datasets"][dataset]["label_column"] if dataset in config["datasets"] else "z_lens"
    params = HogParams.from_config(cfg, int(ds.stats["cutout"]))
    train, val, test = ds.split("train"), ds.split("val"), ds.split("test")
    if len(train) > cfg["max_train_rows"]:
        train = train.sample(cfg["max_train_rows"], random_state=0)
    t0 = time.perf_counter()
    xs = [hog_features(ds.images(r), params) for r in (train, val, test)]
    feat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = fit_hogsvr(xs[0], train[label].to_numpy(float), xs[1], val[label].to_numpy(float), cfg, params,
                       ds.bands, int(ds.stats["cutout"]))
    fit_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        model = HogSVRModel.load(tmp)
    t0 = time.perf_counter()
    z = model.predict_images(ds.images(test))
    pred_s = time.perf_counter() - t0
    return {
        "features_s": round(feat_s, 3), "n_rows_featurized": int(sum(len(x) for x in xs)),
        "n_features": int(xs[0].shape[1]), "grid_fit_s": round(fit_s, 3), "grid_size": len(model.hyper["grid"]),
        "predict_test_s": round(pred_s, 3), "n_train": int(len(train)), "chosen": model.hyper["chosen"],
        "test_nmad": nmad(z, test[label]),
    }


def bench_photometry(config: dict, dataset: str, processed: Path) -> dict:
    """The photometric baseline as its rule fits it (deepred.baselines.photometry.train_photometry), then its test NMAD."""
    from deepred.baselines.photometry import PhotometryModel, train_photometry

    ds = ProcessedDataset(processed)
    test = ds.split("test")
    with tempfile.TemporaryDirectory() as tmp:
        model = train_photometry(dataset, config, processed, tmp)
        model = PhotometryModel.load(tmp)
    t0 = time.perf_counter()
    z = model.predict_images(ds.images(test))
    pred_s = time.perf_counter() - t0
    return {**{f"{k}_s": v for k, v in model.hyper["timing_s"].items()}, "n_features": len(model.features),
            "grid_size": len(model.hyper["grid"]), "predict_test_s": round(pred_s, 3), "chosen": model.hyper["chosen"],
            "test_nmad": nmad(z, test[ds.stats["label_column"]])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--processed", action="append", default=[], help="normalized dataset folder (repeatable)")
    ap.add_argument("--simulate", action="append", default=[], help="simulate + normalize this dataset first")
    ap.add_argument("--n", type=int, default=600, help="systems to simulate with --simulate")
    ap.add_argument("--no-train", action="store_true", help="epoch timings and HOG+SVR only")
    ap.add_argument("--baselines", default=",".join(neural_baselines() + FEATURE_BASELINES))
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "baselines.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.config)
    names = args.baselines.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_baselines_"))
    folders = [Path(p) for p in args.processed]
    for dataset in args.simulate:  # small fresh copy of a configured dataset
        from deepred.data.normalize import normalize
        from deepred.data.sources import open_source

        cfg = copy.deepcopy(config)
        cfg["data_dir"] = str(work / "data")
        cfg["datasets"][dataset]["source"]["n_systems"] = args.n
        from deepred.simulate import simulate_dataset

        ds_cfg = cfg["datasets"][dataset]
        simulate_dataset(preset=ds_cfg["source"]["preset"], n_systems=args.n, seed=cfg["seed"],
                         out_dir=work / "data" / "raw" / dataset, bands=ds_cfg["bands"], cutout=ds_cfg["cutout"],
                         class_fractions=ds_cfg["source"].get("class_fractions"))
        normalize(open_source(cfg, dataset), dataset, ds_cfg, work / "data" / "processed" / dataset,
                  seed=cfg["seed"], config=cfg)
        folders.append(work / "data" / "processed" / dataset)
    if not folders:
        folders = sorted(p.parent for p in (REPO / config["data_dir"] / "processed").glob("*/catalog.parquet"))
    if not folders:
        ap.error("no dataset: pass --processed DIR or --simulate DATASET")
    records = []
    for folder in folders:
        dataset = folder.name
        ds = ProcessedDataset(folder)
        if dataset not in config["datasets"]:  # an ad-hoc folder: describe it from its stats.json
            config["datasets"][dataset] = {
                "source": {"kind": "simulate", "preset": "des_deep", "n_systems": len(ds.catalog)},
                "bands": ds.bands, "cutout": int(ds.stats["cutout"]), "label_column": ds.stats["label_column"],
            }
            config = validate_config(config)
        label = config["datasets"][dataset]["label_column"]
        train, test = ds.split("train"), ds.split("test")
        base = nmad(np.full(len(test), np.median(train[label])), test[label])
        print(f"{dataset}: {len(train)} train, {len(test)} test rows; training-median NMAD {base:.4f}", flush=True)
        images = ds.images(train).astype(np.float32)
        for name in names:
            rec = {"dataset": dataset, "baseline": name, "n_train": int(len(train)), "median_nmad": base}
            if name == "hogsvr":
                rec.update(bench_hogsvr(config, dataset, folder))
            elif name == "photometry":
                rec.update(bench_photometry(config, dataset, folder))
            else:
                rec.update(epoch_time(name, config, images, config["training"]["batch_size"]))
                rec["projected_fit_s"] = round(rec["epoch_s"] * config["training"]["epochs"], 1)
                if not args.no_train:
                    rec.update(train_with_pipeline(name, dataset, config, folder, work))
            if "test_nmad" in rec:
                rec["beats_median_2x"] = bool(rec["test_nmad"] * 2 <= base)
            print(json.dumps(rec), flush=True)
            records.append(rec)
    write_json(args.out, {"machine": platform.platform(), "torch_threads": torch.get_num_threads(),
                          "config": args.config, "records": records})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
