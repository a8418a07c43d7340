"""Choose the SHAP attribution method per network by measurement: strict pointing accuracy, the stability of the
maps across two explainer seeds and the CPU per cutout, for expected gradients per pixel and summed over windows
(the network's input unit, and any other sides asked for), on the explain job's own cutouts and background.

    python benchmarks/bench_shap_methods.py --dataset des_deep --n 64
    python benchmarks/bench_shap_methods.py --models swin --windows 3 7 9 --results-dir /elsewhere/results

Needs the trained models results/models/{model}/{dataset}/ and the processed dataset. Writes
results/benchmarks/shap_methods.json (docs/shap.md quotes it).
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

from deepred.core.seeds import derive_seed
from deepred.contracts.config import load_config  # noqa: E402
from deepred.contracts.processed import ProcessedDataset  # noqa: E402
from deepred.explain.attributions import (  # noqa: E402
    background_sample,
    patch_size,
    sample_rows,
    shap_attributions,
    split_half_rho,
    window_sums,
)
from deepred.core.io import write_json  # noqa: E402
from deepred.explain.scoring import object_regions, score_attributions  # noqa: E402
from deepred.predict.predictor import load_model  # noqa: E402


def measure(model: str, dataset: str, config: dict, n: int, windows: list[int], results: Path, data: Path) -> dict:
    shap_cfg = config["shap"]
    ds = ProcessedDataset(data / "processed" / dataset)
    scaling = ds.stats.get("scaling", {}).get("method", "none")
    seed = derive_seed(config["seed"], "shap", dataset)  # as explain_model: the job's cutouts and background
    rows = sample_rows(ds, n, derive_seed(seed, "explain"), shap_cfg["snr_bins"], scaling,
                       shap_cfg["segmentation_thresh"])
    bg = ds.images(background_sample(ds.split("train"), shap_cfg["n_background"], derive_seed(seed, "background")))
    images = ds.images(rows)
    regions, _ = object_regions(images, ds.masks(rows), scaling, thresh=shap_cfg["segmentation_thresh"])
    module = load_model(results / "models" / model / dataset).point_module()
    maps, cpu = [], []
    for k in (0, 1):  # two explainer seeds
        c0 = time.process_time()
        maps.append(shap_attributions(module, bg, images, shap_cfg["nsamples"], derive_seed(seed, "shap") + k,
                                      shap_cfg["batch_size"]))
        cpu.append((time.process_time() - c0) / len(images))
    hq = rows["snr"].to_numpy(float) >= float(shap_cfg["hq_snr"])
    unit = patch_size(module)
    out = {"model": model, "dataset": dataset, "n": len(images), "n_high_quality": int(hq.sum()),
           "nsamples": shap_cfg["nsamples"], "input_unit_px": unit, "eg_cpu_s_per_cutout": [round(c, 3) for c in cpu],
           "chance": float(regions.mean(axis=(1, 2)).mean()), "windows": {}}
    for w in sorted({1, unit, *windows}):
        t0 = time.process_time()
        summed = [window_sums(m, w) for m in maps]
        hits = [score_attributions(s, regions)["hit"].to_numpy() for s in summed]
        out["windows"][str(w)] = {
            "pointing_acc": [float(h.mean()) for h in hits], "pointing_hq": [float(h[hq].mean()) for h in hits],
            "rho_seeds": float(np.nanmedian(split_half_rho(*summed))),
            "window_cpu_s_per_cutout": round((time.process_time() - t0) / (2 * len(images)), 5),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--dataset", default="des_deep")
    ap.add_argument("--models", nargs="*", default=None, help="default: shap.models of the config")
    ap.add_argument("--n", type=int, default=64, help="cutouts explained (the job's stratified sample)")
    ap.add_argument("--windows", nargs="*", type=int, default=[], help="window sides beyond 1 and the input unit")
    ap.add_argument("--results-dir", default=None, help="default: results_dir of the config")
    ap.add_argument("--data-dir", default=None, help="default: data_dir of the config")
    ap.add_argument("--out", default=None, help="default: {results_dir}/benchmarks/shap_methods.json")
    args = ap.parse_args(argv)

    config = load_config(args.config)
    torch.set_num_threads(int(config["shap"]["threads"]))
    results = Path(args.results_dir or config["results_dir"])
    data = Path(args.data_dir or config["data_dir"])
    records = []
    for model in args.models or explained_models(config):
        rec = measure(model, args.dataset, config, args.n, args.windows, results, data)
        records.append(rec)
        for w, r in rec["windows"].items():
            print(f"{model:>13s} window {w:>2s} px: pointing {r['pointing_acc'][0]:.3f} / {r['pointing_acc'][1]:.3f} "
                  f"(high quality {r['pointing_hq'][0]:.3f} / {r['pointing_hq'][1]:.3f}), rho {r['rho_seeds']:.3f}; "
                  f"EG {rec['eg_cpu_s_per_cutout'][0]:.3f} s CPU per cutout", flush=True)
    out = Path(args.out or results / "benchmarks" / "shap_methods.json")
    write_json(out, {"records": records, "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "torch": torch.__version__})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
