"""Benchmark: normalization streams, so peak memory does not grow with the dataset size.

Writes a raw folder of N synthetic 45x45x4 objects (streamed with open_memmap), normalizes it in a fresh
subprocess, and records that subprocess's peak resident memory (ru_maxrss). Target (issue 2): peak RSS at
40,000 objects at most 1.2x that at 10,000. Output: results/benchmarks/normalize.json.

    python benchmarks/bench_normalize.py [--sizes 10000 40000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys, time
from deepred.data.normalize import normalize
from deepred.contracts.raw import read_simulated
raw, out = sys.argv[1], sys.argv[2]
cfg = {"bands": ["g", "r", "i", "z"], "cutout": 45, "label_column": "z_lens", "label_range": [0, 4],
       "splits": {"train": 0.7, "val": 0.15, "test": 0.15}, "scaling": "asinh", "rows_per_shard": 512,
       "on_bad": "error"}
t0 = time.perf_counter()
normalize(read_simulated(raw), "bench", cfg, out, seed=1)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec from the (large) parent.
hwm_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": hwm_kb / 1024}))
"""


def write_raw(folder: Path, n: int, chunk: int = 2000) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, 4, 45, 45))
    masks = np.lib.format.open_memmap(folder / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, 45, 45))
    yy, xx = np.mgrid[:45, :45] - 22
    z = rng.uniform(0.1, 1.5, n)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sig = (1 + 4 / (1 + 4 * z[s:e]))[:, None, None]
        prof = np.exp(-(xx**2 + yy**2)[None] / (2 * sig**2))
        images[s:e] = (100 * prof[:, None] + rng.normal(0, 1, (e - s, 4, 45, 45))).astype(np.float32)
        masks[s:e] = prof > 0.1
    images.flush()
    masks.flush()
    del images, masks
    pd.DataFrame({
        "object_id": [f"o{i}" for i in range(n)], "system_id": [f"s{i}" for i in range(n)],
        "obj_class": "galaxy", "z_lens": z, "z_source": np.nan,
    }).to_parquet(folder / "truth.parquet", index=False)
    (folder / "meta.json").write_text(json.dumps({"bands": ["g", "r", "i", "z"], "pixel_scale": 0.263,
                                                  "survey": "bench"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "normalize.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            raw, out = Path(tmp) / f"raw{n}", Path(tmp) / f"out{n}"
            write_raw(raw, n)
            res = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(out)], check=True,
                                 capture_output=True, text=True)
            rec = {"n_objects": n, **json.loads(res.stdout.strip().splitlines()[-1])}
            rec["objects_per_s"] = n / rec["seconds"]
            rows.append(rec)
            print(rec, flush=True)
    result = {"runs": rows, "rss_ratio_largest_to_smallest": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"],
              "target": "ratio <= 1.2"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
