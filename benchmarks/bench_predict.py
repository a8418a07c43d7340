"""Benchmark: `deepred predict` throughput per backbone and peak memory versus the number of cutouts.

1. Throughput (issue 9 target: >= 500 cutouts/s on CPU for the default small variants at 45x45x4): for
   each architecture of the config (default: config.yaml's resnet, efficientnet, swin, mixer), a model
   folder is written with deepred.models.checkpoint.write_model (the trained weights do not change the
   cost, so a fresh network is used; a trained results/models/{arch}/... folder works alike) and
   `predict_cutouts` streams an NPY cube of raw 45x45x4 cutouts through it: reading, per-band asinh
   scaling, the network and the Parquet writer, all counted. The FITS reading rate (one file per band)
   is measured once, separately.
2. Memory: `deepred predict` runs in a fresh subprocess on NPY cubes of 1,000 and 50,000 cutouts and
   reports its peak resident memory from /proc/self/status VmHWM (not ru_maxrss, which Linux carries
   across fork+exec from the parent). Target: ratio <= 1.2.

Output: results/benchmarks/predict.json (with the CPU, torch threads and torch version).

    python benchmarks/bench_predict.py [--threads 1] [--n-throughput 2000] [--sizes 1000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
BANDS = ["g", "r", "i", "z"]
CUTOUT = 45

CHILD = r"""
import json, sys, time
from deepred.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
hwm_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "peak_rss_mb": hwm_kb / 1024}))
"""


def write_cube(path: Path, n: int, chunk: int = 5000) -> None:
    """Raw-flux cutouts (a blob on unit noise), streamed to disk so this process stays small too."""
    rng = np.random.default_rng(0)
    cube = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, len(BANDS), CUTOUT, CUTOUT))
    yy, xx = np.mgrid[:CUTOUT, :CUTOUT] - CUTOUT // 2
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sig = rng.uniform(1.5, 5, (e - s, 1, 1, 1))
        cube[s:e] = (200 * np.exp(-(xx**2 + yy**2) / (2 * sig**2)) + rng.normal(0, 1, (e - s, 4, CUTOUT, CUTOUT)))
    cube.flush()
    del cube


def write_fits_folder(folder: Path, cube: np.ndarray) -> None:
    from astropy.io import fits

    folder.mkdir(parents=True)
    for i, img in enumerate(cube):
        for b, band in enumerate(BANDS):
            h = fits.Header({"FILTER": band, "CD1_1": -0.263 / 3600, "CD2_2": 0.263 / 3600})
            fits.PrimaryHDU(np.asarray(img[b]), header=h).writeto(folder / f"obj{i:06d}_{band}.fits")


def make_model(results: Path, arch: str, config: dict) -> Path:
    """results/models/{arch}/bench: a fresh network in the trained-model format (write_model)."""
    import torch

    from deepred.models.checkpoint import write_model
    from deepred.models.registry import build_model

    torch.manual_seed(0)
    net = build_model(arch, config, len(BANDS), CUTOUT).eval()
    out = results / "models" / arch / "bench"
    write_model(out, net, {"model": arch, "dataset": "bench", "bands": BANDS, "in_chans": len(BANDS), "cutout": CUTOUT,
                           "pixel_scale": 0.263, "scaling": {"method": "asinh", "per_image": False, "softening": [1.0] * 4},
                           "head": net.head, "grid": None if net.head == "point" else net.grid.tolist(),
                           "config": config, "n_params": int(sum(p.numel() for p in net.parameters()))})
    return out


def throughput(model_dir: Path, source: Path, out: Path, batch_size: int, **kw) -> dict:
    from deepred.predict.own_cutouts import load_predictor, predict_cutouts
    from deepred.predict.inputs import open_input

    pred = load_predictor(model_dir, device="cpu", batch_size=batch_size)
    items, total, _ = open_input(source, pred.bands, **kw)
    # warm-up batch outside the clock (one-time allocator and kernel selection)
    batch = np.load(source, mmap_mode="r")[:batch_size] if source.suffix == ".npy" else None
    pred.predict_raw(np.zeros((min(batch_size, 64), len(BANDS), CUTOUT, CUTOUT), np.float32) + 1)
    t0, c0 = time.perf_counter(), time.process_time()
    s = predict_cutouts(pred, items, out, batch_size=batch_size, total=total, progress=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # cutouts per CPU-second: what one otherwise idle core would give (wall rates drop on a shared machine)
    rec = {"n": s.n_ok, "seconds": round(dt, 3), "cutouts_per_s": round(s.n_ok / dt, 1),
           "cpu_seconds": round(cpu, 3), "cutouts_per_cpu_s": round(s.n_ok / cpu, 1),
           "n_params": pred.meta.get("n_params")}
    if batch is not None:  # the network alone on scaled pixels: how much of the time the rest takes
        from deepred.data.normalize import scale_images

        scaled = scale_images(np.array(batch), pred.scaling)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(3):
            pred.predict_scaled(scaled)
        rec["network_only_cutouts_per_s"] = round(3 * len(scaled) / (time.perf_counter() - t0), 1)
        rec["network_only_cutouts_per_cpu_s"] = round(3 * len(scaled) / (time.process_time() - c0), 1)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--archs", nargs="+", default=None, help="architectures (default: all in the config)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--n-throughput", type=int, default=2000)
    ap.add_argument("--n-fits", type=int, default=300, help="objects for the FITS reading rate (0: skip)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 50000], help="memory runs (none: skip)")
    ap.add_argument("--rss-arch", default="efficientnet", help="model used for the memory runs")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "predict.json"))
    args = ap.parse_args()

    import torch

    from deepred.contracts.config import validate_config

    torch.set_num_threads(args.threads)
    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    archs = args.archs or list(config["architectures"])
    result = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "torch_threads": args.threads, "batch_size": args.batch_size,
              "cutout": f"{CUTOUT}x{CUTOUT}x{len(BANDS)}", "target_cutouts_per_s": 500,
              "load_average_at_start": os.getloadavg(), "throughput": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cube = tmp / "cube.npy"
        write_cube(cube, args.n_throughput)
        for arch in archs:
            model_dir = make_model(tmp / "results", arch, config)
            rec = throughput(model_dir, cube, tmp / f"{arch}.parquet", args.batch_size)
            rec["timm_name"] = config["architectures"][arch].get("timm_name")
            rec["meets_target_wall"] = rec["cutouts_per_s"] >= 500
            rec["meets_target_per_cpu_s"] = rec["cutouts_per_cpu_s"] >= 500
            result["throughput"][arch] = rec
            print(arch, rec, flush=True)
        if args.n_fits:
            folder = tmp / "fits"
            write_fits_folder(folder, np.load(cube, mmap_mode="r")[: args.n_fits])
            rec = throughput(make_model(tmp / "results", archs[0], config), folder, tmp / "fits.parquet",
                             args.batch_size)
            result["fits_folder"] = {"model": archs[0], "files_per_object": len(BANDS), **rec}
            print("fits folder", result["fits_folder"], flush=True)

        if not args.sizes:
            args.sizes = []
        model_dir = make_model(tmp / "results", args.rss_arch, config)
        runs = []
        for n in args.sizes:
            src = tmp / f"rss{n}.npy"
            write_cube(src, n)
            cmd = [sys.executable, "-c", CHILD, "predict", str(model_dir), str(src), "-o", str(tmp / f"rss{n}.parquet"),
                   "--no-progress", "--device", "cpu", "--threads", str(args.threads),
                   "--batch-size", str(args.batch_size)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"memory run failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
            rec = {"n_cutouts": n, **json.loads(res.stdout.strip().splitlines()[-1])}
            rec["cutouts_per_s"] = round(n / rec["seconds"], 1)
            runs.append(rec)
            src.unlink()
            print("memory", rec, flush=True)
        if runs:
            result["memory"] = {
                "model": args.rss_arch, "runs": runs, "target": "ratio <= 1.2",
                "rss_ratio_largest_to_smallest": round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
                "measured_with": "/proc/self/status VmHWM in a fresh subprocess"}
    result["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
