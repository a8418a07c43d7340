"""Benchmark SHAP: seconds to explain and score 200 test cutouts with each explained model (one CPU thread),
the issue's target being <= 3 minutes per default variant.

    python benchmarks/bench_shap.py                          # shap.models of config.yaml, 45x45 4-band cutouts
    python benchmarks/bench_shap.py --dataset sdss --n 200   # another dataset's shape (64x64 5-band)

Uses the trained model results/models/{model}/{dataset}/ and the processed test split where they exist;
otherwise a freshly built (untrained) network on simulated-like cutouts: the cost of expected gradients
depends on the architecture and input size, not on the weights. Writes results/benchmarks/shap.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepred.core.model_names import explained_models  # noqa: E402
from deepred.contracts.config import load_config  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.explain.scoring import object_regions, score_attributions  # noqa: E402
from deepred.explain.attributions import shap_attributions  # noqa: E402


def cutouts(n: int, bands: int, size: int, seed: int) -> np.ndarray:
    """asinh-scaled noise plus one central blob per cutout (what normalized simulated images look like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    flux = rng.uniform(20, 500, n)[:, None, None, None]
    sigma = rng.uniform(1.5, 4, n)[:, None, None, None]
    img = flux * np.exp(-0.5 * (yy**2 + xx**2) / sigma**2) + rng.normal(0, 1, (n, bands, size, size))
    return np.arcsinh(img).astype(np.float32)


def load_inputs(model: str, dataset: str, config: dict, n: int, seed: int):
    """(point module, background, images, masks, source) for one model and dataset."""
    from deepred.contracts.processed import ProcessedDataset
    from deepred.models.checkpoint import load_trained
    from deepred.models.registry import build_model

    ds_cfg = config["datasets"][dataset]
    model_dir = Path(config["results_dir"]) / "models" / model / dataset
    processed = Path(config["data_dir"]) / "processed" / dataset
    if (model_dir / "model.json").exists():
        module, source = load_trained(model_dir).point_module(), "trained"
    else:
        from deepred.models.checkpoint import TrainedModel

        net = build_model(model, config, len(ds_cfg["bands"]), int(ds_cfg["cutout"]))
        module, source = TrainedModel(meta={}, net=net.eval(), model_dir=model_dir).point_module(), "untrained"
    if (processed / "catalog.parquet").exists():
        ds = ProcessedDataset(processed)
        test, train = ds.split("test"), ds.split("train")
        test = test.iloc[:n] if len(test) >= n else test.sample(n, replace=True, random_state=seed)
        bg = train.iloc[: config["shap"]["n_background"]]
        return module, ds.images(bg), ds.images(test), ds.masks(test), source + "+processed"
    c, b = int(ds_cfg["cutout"]), len(ds_cfg["bands"])
    return module, cutouts(config["shap"]["n_background"], b, c, seed + 1), cutouts(n, b, c, seed), None, source


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--dataset", default=None, help="dataset whose shape/model to use (default: the first)")
    ap.add_argument("--models", nargs="*", default=None, help="default: shap.models of the config")
    ap.add_argument("--n", type=int, default=200, help="cutouts to explain")
    ap.add_argument("--out", default=None, help="default: {results_dir}/benchmarks/shap.json")
    args = ap.parse_args(argv)

    config = load_config(args.config)
    torch.set_num_threads(int(config["shap"]["threads"]))
    dataset = args.dataset or next(iter(config["datasets"]))
    models = args.models or explained_models(config)
    records = []
    for model in models:
        module, bg, images, masks, source = load_inputs(model, dataset, config, args.n, config["seed"])
        t0, c0 = time.perf_counter(), time.process_time()
        attr = shap_attributions(module, bg, images, config["shap"]["nsamples"], seed=0,
                                 batch_size=config["shap"]["batch_size"])
        t_shap = time.perf_counter() - t0
        regions, _ = object_regions(images, masks, "asinh", thresh=config["shap"]["segmentation_thresh"])
        scores = score_attributions(attr, regions)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        rec = {
            "model": model, "dataset": dataset, "n_cutouts": len(images), "shape": list(images.shape[1:]),
            "nsamples": config["shap"]["nsamples"], "n_background": len(bg), "weights": source,
            "n_params": int(sum(p.numel() for p in module.parameters())),
            "shap_s": round(t_shap, 2), "total_s": round(total, 2), "cpu_s": round(cpu, 2),
            "within_3_min": total <= 180.0, "pointing_acc": float(scores["hit"].mean()),
        }
        records.append(rec)
        print(f"{model:>14s} {dataset}: {rec['n_cutouts']} cutouts in {total:6.1f} s wall, {cpu:6.1f} s CPU "
              f"({rec['n_params']} params, {source}); pointing {rec['pointing_acc']:.2f}", flush=True)
    out = Path(args.out or Path(config["results_dir"]) / "benchmarks" / "shap.json")
    write_json(out, {"records": records, "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "processor": platform.processor(), "torch": torch.__version__})
    print(f"wrote {out}")
    return 0 if all(r["within_3_min"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
