"""Benchmark the catalogue-driven cutouts (issue 16). Output: results/benchmarks/cutouts.json.

1. Cut rate per core from cached frames: `build_cutouts` on SDSS-format frames already in the cache (fetched
   once from a loopback server), 5 bands -> 64 x 64, bilinear. Measured two ways, in CPU seconds of the one
   process (single-threaded BLAS), so the figure is per core:
   - `dense`: 100 targets per 512 x 512 field;
   - `sdss_density`: real-size frames (2048 x 1489, SDSS's FLOATCOMPRESS precision of 10 mantissa bits,
     bzip2) at 3 targets per field, about the SDSS main-sample density (~80 spectroscopic galaxies per
     deg^2, a field is 0.037 deg^2).
   Each is cut from the decoded copies kept at download (keep_decoded, the default) and again decoding
   every .bz2 (keep_decoded: false), where bzip2 decompression dominates.
   Target: >= 200 cutouts/s per core.
2. Peak memory flat in the number of targets: `build_cutouts` in a fresh subprocess for each size (default
   2,000 and 20,000 targets, 1,000 per field on 1024 x 1024 frames); peak RSS (VmHWM) at the larger size at
   most 1.2x the smaller. Past the image cache (16 frames), `--only-memory --sizes 10000 20000 --per-field 500`
   compares equal numbers of cached frames.
3. Each frame requested once per run (the server's request log), whatever the number of targets.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_cutouts.py [--sizes 2000 20000] [--per-field 1000] [--frame 1024] [--dense 2000] [--fields 5]
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # survey_formats / realformats: fixture writers and the loopback server

from realformats import RangeServer  # noqa: E402
from survey_formats import SDSS_BANDS, cutout_config, sdss_frame_bytes, sdss_frame_key, tan_wcs  # noqa: E402

from deepred.cutouts.source import build_cutouts, fetch_images  # noqa: E402
from deepred.core.io import write_json  # noqa: E402

CHILD = r"""
import json, pickle, sys, time
from deepred.cutouts.source import build_cutouts
cfg = pickle.load(open(sys.argv[1], "rb"))
t0, c0 = time.perf_counter(), time.process_time()
meta = build_cutouts(cfg, "sdss")
hwm_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "peak_rss_mb": hwm_kb / 1024, "n_cut": meta["n_cut"], "n_rejected": meta["n_rejected"]}))
"""


def floatcompress(img: np.ndarray, bits: int = 10) -> np.ndarray:
    """Keep `bits` mantissa bits of float32 values (SDSS frames' FLOATCOMPRESS, as the data model says)."""
    u = img.astype(np.float32).view(np.uint32)
    return (u & np.uint32(~((1 << (23 - bits)) - 1) & 0xFFFFFFFF)).view(np.float32)


def write_archive(root: Path, n_fields: int, per_field: int, shape: tuple[int, int], seed: int = 0):
    """Frames with sky noise (nanomaggies) for n_fields fields, targets uniformly inside each field (clear of
    the edges). One noise image per band is shared by all fields (their WCS differ), to keep writing cheap."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    noise = {b: floatcompress(rng.normal(0, 0.05, shape)) for b in SDSS_BANDS}
    rows = []
    for k in range(n_fields):
        ra0, dec0, run, camcol, field = 10.0 + 0.3 * k, 0.5, 1000 + k // 500, 1 + (k // 100) % 6, 11 + k % 100
        for j, b in enumerate(SDSS_BANDS):
            w = tan_wcs(ra0 + rng.uniform(-2, 2) / 3600, dec0 + rng.uniform(-2, 2) / 3600, shape, 0.396, (j - 2) * 0.5)
            p = root / sdss_frame_key(b, run, camcol, field)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(sdss_frame_bytes(noise[b], w, b, run, camcol, field))
        hx, hy = 0.5 * (nx - 100) * 0.396 / 3600, 0.5 * (ny - 100) * 0.396 / 3600
        for m in range(per_field):
            rows.append({"objID": len(rows), "ra": ra0 + rng.uniform(-hx, hx), "dec": dec0 + rng.uniform(-hy, hy),
                         "z": rng.uniform(0.02, 0.35), "run": run, "camcol": camcol, "field": field})
    import pandas as pd

    return pd.DataFrame(rows)


def fetch_all(tmp: Path, archive: Path, targets, name: str):
    with RangeServer(archive) as srv:
        cfg = cutout_config(tmp / name, "sdss", targets, {"name": "sdss_frames", "base_url": srv.url}, SDSS_BANDS, 64,
                            (0.0, 0.4), id_column="objID", columns={"z_lens": "z"}, max_connections=4)
        t0 = time.perf_counter()
        stamp = fetch_images(cfg, "sdss")
        fetch_s = time.perf_counter() - t0
        paths = [r["path"] for r in srv.requests]
    return cfg, stamp, fetch_s, paths


def rate(tmp: Path, name: str, n_fields: int, per_field: int, shape) -> dict:
    archive = tmp / f"{name}_sas"
    targets = write_archive(archive, n_fields, per_field, shape)
    cfg, stamp, fetch_s, paths = fetch_all(tmp, archive, targets, name)
    t0, c0 = time.perf_counter(), time.process_time()
    meta = build_cutouts(cfg, "sdss")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cfg["datasets"]["sdss"]["source"]["keep_decoded"] = False  # the same cut, decoding every .bz2 frame again
    t2 = time.process_time()
    build_cutouts(cfg, "sdss")
    cpu_bz2 = time.process_time() - t2
    frame_mb = np.mean([(archive / p).stat().st_size for p in paths]) / 1e6
    t1 = time.process_time()
    bz2.decompress((archive / paths[0]).read_bytes())
    decode_s = time.process_time() - t1
    return {"targets": len(targets), "fields": n_fields, "targets_per_field": per_field, "frame_shape": list(shape),
            "frame_mb_bz2": round(float(frame_mb), 3), "frames_requested": len(paths),
            "frames_requested_once": len(paths) == len(set(paths)) == 5 * n_fields, "fetch_seconds": round(fetch_s, 3),
            "cut": meta["n_cut"], "rejected": meta["n_rejected"], "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3), "cutouts_per_cpu_second": round(len(targets) / cpu, 1),
            "cutouts_per_cpu_second_decoding_bz2": round(len(targets) / cpu_bz2, 1),
            "bz2_decode_cpu_seconds_per_frame": round(decode_s, 4)}


def memory(tmp: Path, sizes: list[int], per_field: int, frame: int) -> list[dict]:
    import pickle

    out = []
    for n in sizes:
        archive = tmp / f"mem{n}_sas"
        targets = write_archive(archive, -(-n // per_field), per_field, (frame, frame), seed=n)
        cfg, stamp, fetch_s, paths = fetch_all(tmp, archive, targets.head(n), f"mem{n}")
        pickle.dump(cfg, open(tmp / f"cfg{n}.pkl", "wb"))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        res = subprocess.run([sys.executable, "-c", CHILD, str(tmp / f"cfg{n}.pkl")], capture_output=True, text=True,
                             env=env, check=True)
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        rec.update({"targets": n, "targets_per_field": per_field, "frame_shape": [frame, frame], "frames": len(paths),
                    "frames_requested_once": len(paths) == len(set(paths)), "fetch_seconds": round(fetch_s, 1)})
        out.append(rec)
        print(json.dumps(rec), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--per-field", type=int, default=1000, help="targets per field in the memory runs")
    p.add_argument("--frame", type=int, default=1024, help="frame side in the memory runs")
    p.add_argument("--dense", type=int, default=2000, help="targets for the dense cut rate (100 per field)")
    p.add_argument("--fields", type=int, default=5, help="real-size fields for the SDSS-density rate (3 per field)")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "cutouts.json"))
    p.add_argument("--only-memory", action="store_true", help="skip the cut-rate runs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_cutouts_") as tmp:
        tmp = Path(tmp)
        if args.only_memory:
            mem = memory(tmp, args.sizes, args.per_field, args.frame)
            ratio = mem[-1]["peak_rss_mb"] / mem[0]["peak_rss_mb"]
            write_json(args.out, {"memory": {"runs": mem, "peak_ratio": round(ratio, 3), "flat": ratio <= 1.2}})
            print(json.dumps({"peak_ratio": ratio, "out": args.out}))
            return 0
        dense = rate(tmp, "dense", max(1, args.dense // 100), 100, (512, 512))
        print(json.dumps({"dense": dense}), flush=True)
        sdss = rate(tmp, "density", args.fields, 3, (1489, 2048))
        print(json.dumps({"sdss_density": sdss}), flush=True)
        mem = memory(tmp, args.sizes, args.per_field, args.frame)
    ratio = mem[-1]["peak_rss_mb"] / mem[0]["peak_rss_mb"]
    result = {
        "cut_rate": {"dense": dense, "sdss_density": sdss, "target_per_core": 200,
                     "meets_target_dense": dense["cutouts_per_cpu_second"] >= 200,
                     "meets_target_sdss_density": sdss["cutouts_per_cpu_second"] >= 200},
        "memory": {"runs": mem, "peak_ratio": round(ratio, 3), "flat": ratio <= 1.2},
        "interpolation": "bilinear",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    write_json(args.out, result)
    print(json.dumps({"peak_ratio": ratio, "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
