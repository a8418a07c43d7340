"""Occlusion-sensitivity maps (the `occlusion` shap.method, deepred/explain/occlusion_map.py) against the explain jobs'
cutouts: each window of the cutout (side `--window-mult` x the network's input unit, every `--stride` pixels) is
filled in turn with the same window of a background training cutout (`--fill background`) or with sky noise
(`--fill sky`), and each pixel scores the mean |change of the predicted redshift| / (1 + z) over the windows that
cover it. Scored by the explain job's strict pointing game on its own cutouts, regions and background; two noise
seeds (explainer seeds) give the stability, the two halves of each map's draws its split-half rho.

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

from deepred.core.seeds import derive_seed  # noqa: E402
from deepred.contracts.config import load_config  # noqa: E402
from deepred.contracts.processed import ProcessedDataset  # noqa: E402
from deepred.explain.attributions import background_sample, patch_size, sample_rows, split_half_rho  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.explain.scoring import object_regions, score_attributions  # noqa: E402
from deepred.explain.occlusion_map import FILLS, occlusion_maps  # noqa: E402
from deepred.predict.predictor import load_model  # noqa: E402


def measure(model: str, dataset: str, config: dict, n: int, mult: float, stride: int, draws: int, fill: str,
            results: Path, data: Path) -> dict:
    shap_cfg = config["shap"]
    ds = ProcessedDataset(data / "processed" / dataset)
    scaling = ds.stats.get("scaling", {}).get("method", "none")
    seed = derive_seed(config["seed"], "shap", dataset)  # as explain_model: the job's cutouts and background
    rows = sample_rows(ds, n, derive_seed(seed, "explain"), shap_cfg["snr_bins"], scaling,
                       shap_cfg["segmentation_thresh"])
    images = ds.images(rows)
    background = ds.images(background_sample(ds.split("train"), shap_cfg["n_background"],
                                             derive_seed(seed, "background")))
    regions, _ = object_regions(images, ds.masks(rows), scaling, thresh=shap_cfg["segmentation_thresh"])
    module = load_model(results / "models" / model / dataset).point_module()
    window = max(3, int(round(patch_size(module) * mult)))
    hq = rows["snr"].to_numpy(float) >= float(shap_cfg["hq_snr"])
    maps, halves, cpu = [], [], []
    for k in (0, 1):  # two explainer seeds
        c0 = time.process_time()
        both = occlusion_maps(module, images, regions, background, window, stride, draws, fill,
                              derive_seed(seed, "shap", k))
        cpu.append((time.process_time() - c0) / len(images))
        maps.append(both[0])
        halves.append(float(np.nanmedian(split_half_rho(both[1], both[2]))))
    scores = [score_attributions(m, regions, int(shap_cfg["pointing_tolerance"])) for m in maps]
    hits, tol = [s["hit"].to_numpy() for s in scores], [s["hit_tol"].to_numpy() for s in scores]
    return {"model": model, "dataset": dataset, "n": len(images), "n_high_quality": int(hq.sum()), "window_px": window,
            "stride_px": stride, "draws": draws, "fill": fill, "chance": float(regions.mean(axis=(1, 2)).mean()),
            "pointing_acc": [float(h.mean()) for h in hits], "pointing_hq": [float(h[hq].mean()) for h in hits],
            "pointing_tol_hq": [float(t[hq].mean()) for t in tol],
            "rho_seeds": float(np.nanmedian(split_half_rho(*maps))),
            "rho_split_half": halves, "cpu_s_per_cutout": [round(c, 3) for c in cpu]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--dataset", default="des_wide")
    ap.add_argument("--models", nargs="+", default=["swin", "mixer"])
    ap.add_argument("--n", type=int, default=64, help="cutouts explained (the job's stratified sample)")
    ap.add_argument("--window-mult", type=float, default=2.5, help="window side / the network's input unit")
    ap.add_argument("--stride", type=int, default=3, help="pixels between window positions")
    ap.add_argument("--draws", type=int, default=2, help="fills per window")
    ap.add_argument("--fill", choices=FILLS, default="background")
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
        r = measure(model, args.dataset, config, args.n, args.window_mult, args.stride, args.draws, args.fill, results,
                    data)
        records.append(r)
        print(f"{args.dataset} {model}: {r['fill']} fill, window {r['window_px']} px, stride {r['stride_px']}: "
              f"pointing "
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
