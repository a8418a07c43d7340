"""Occlusion-sensitivity maps as a localization method, beside expected gradients (benchmarks/bench_shap_methods.py):
each window of the cutout (side `--window-mult` x the network's input unit, every `--stride` pixels) is replaced by
sky noise in turn, and each pixel scores the mean |change of the predicted redshift| / (1 + z) over the windows
that cover it (Zeiler & Fergus 2014). A perturbation map at the scale a patch model reads, scored by the same strict
pointing game, on the explain job's own cutouts and regions; two noise seeds give the stability.

    python benchmarks/bench_shap_occlusion_maps.py --dataset des_wide --models swin mixer --window-mult 2.5 --stride 3

Needs results/models/{model}/{dataset}/ and the processed dataset. Writes results/benchmarks/shap_occlusion_maps.json
(docs/shap.md quotes it).
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

from deepred.catalog import derive_seed  # noqa: E402
from deepred.config import load_config  # noqa: E402
from deepred.data.contract import ProcessedDataset  # noqa: E402
from deepred.explain import patch_size, sample_rows, split_half_rho  # noqa: E402
from deepred.io import write_json  # noqa: E402
from deepred.localization import grow, object_regions, score_attributions  # noqa: E402
from deepred.predictor import load_model  # noqa: E402
from deepred.shap_controls import _predict, sky_levels  # noqa: E402


def occlusion_map(module, images: np.ndarray, regions: np.ndarray, window: int, stride: int,
                  rng: np.random.Generator) -> np.ndarray:
    """(n, 1, H, W): per pixel, the mean |dz| of the predictions with a covering window hidden under sky noise."""
    n, bands, h, w = images.shape
    med, sig = sky_levels(images, ~grow(regions, 3))
    z0 = _predict(module, images, "cpu")
    total, count = np.zeros((n, h, w)), np.zeros((h, w))
    for y in range(-(window // 2), h - window // 2, stride):
        for x in range(-(window // 2), w - window // 2, stride):
            y0, y1, x0, x1 = max(y, 0), min(y + window, h), max(x, 0), min(x + window, w)
            hidden = images.copy()
            noise = rng.standard_normal((n, bands, y1 - y0, x1 - x0))
            hidden[:, :, y0:y1, x0:x1] = (med[:, :, None, None] + sig[:, :, None, None] * noise).astype(np.float32)
            total[:, y0:y1, x0:x1] += (np.abs(_predict(module, hidden, "cpu") - z0) / (1 + z0))[:, None, None]
            count[y0:y1, x0:x1] += 1
    return (total / np.maximum(count, 1))[:, None]


def measure(model: str, dataset: str, config: dict, n: int, mult: float, stride: int, results: Path,
            data: Path) -> dict:
    shap_cfg = config["shap"]
    ds = ProcessedDataset(data / "processed" / dataset)
    scaling = ds.stats.get("scaling", {}).get("method", "none")
    seed = derive_seed(config["seed"], "shap", dataset)  # as explain_model: the job's cutouts
    rows = sample_rows(ds, n, derive_seed(seed, "explain"), shap_cfg["snr_bins"], scaling,
                       shap_cfg["segmentation_thresh"])
    images = ds.images(rows)
    regions, _ = object_regions(images, ds.masks(rows), scaling, thresh=shap_cfg["segmentation_thresh"])
    module = load_model(results / "models" / model / dataset).point_module()
    window = max(3, int(round(patch_size(module) * mult)))
    hq = rows["snr"].to_numpy(float) >= float(shap_cfg["hq_snr"])
    maps, cpu = [], []
    for k in (0, 1):  # two noise seeds
        c0 = time.process_time()
        maps.append(occlusion_map(module, images, regions, window, stride, np.random.default_rng([seed, k])))
        cpu.append((time.process_time() - c0) / len(images))
    hits = [score_attributions(m, regions)["hit"].to_numpy() for m in maps]
    return {"model": model, "dataset": dataset, "n": len(images), "n_high_quality": int(hq.sum()), "window_px": window,
            "stride_px": stride, "chance": float(regions.mean(axis=(1, 2)).mean()),
            "pointing_acc": [float(h.mean()) for h in hits], "pointing_hq": [float(h[hq].mean()) for h in hits],
            "rho_seeds": float(np.nanmedian(split_half_rho(*maps))), "cpu_s_per_cutout": [round(c, 3) for c in cpu]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--dataset", default="des_wide")
    ap.add_argument("--models", nargs="+", default=["swin", "mixer"])
    ap.add_argument("--n", type=int, default=64, help="cutouts explained (the job's stratified sample)")
    ap.add_argument("--window-mult", type=float, default=2.5, help="window side / the network's input unit")
    ap.add_argument("--stride", type=int, default=3, help="pixels between window positions")
    ap.add_argument("--results-dir", default=None, help="default: results_dir of the config")
    ap.add_argument("--data-dir", default=None, help="default: data_dir of the config")
    ap.add_argument("--out", default=None, help="default: {results_dir}/benchmarks/shap_occlusion_maps.json")
    args = ap.parse_args(argv)
    config = load_config(args.config)
    torch.set_num_threads(int(config["shap"]["threads"]))
    results = Path(args.results_dir or config["results_dir"])
    data = Path(args.data_dir or config["data_dir"])
    records = []
    for model in args.models:
        r = measure(model, args.dataset, config, args.n, args.window_mult, args.stride, results, data)
        records.append(r)
        print(f"{args.dataset} {model}: window {r['window_px']} px, stride {r['stride_px']}: pointing "
              f"{r['pointing_acc'][0]:.3f} / {r['pointing_acc'][1]:.3f} (high quality, n={r['n_high_quality']}: "
              f"{r['pointing_hq'][0]:.3f} / {r['pointing_hq'][1]:.3f}), rho {r['rho_seeds']:.3f}, "
              f"{np.mean(r['cpu_s_per_cutout']):.3f} CPU-s per cutout", flush=True)
    out = Path(args.out or results / "benchmarks" / "shap_occlusion_maps.json")
    write_json(out, {"records": records, "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "torch": torch.__version__})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
