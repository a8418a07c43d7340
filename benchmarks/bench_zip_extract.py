"""Benchmark streaming extraction (deepred.fetch.archive_zip, issue 15). Output: results/benchmarks/zip_extract.json.

For each size, a zip holding one member of that many bytes (float32 noise, like DeepGraviLens' image arrays,
deflated at level 1) is written into a temporary folder; a fresh subprocess then extracts it with
extract_members (CRC-32, size and SHA-256 while streaming, the SHA-256 recorded in a lock) and reports its
peak RSS (VmHWM) and throughput. Target: peak memory independent of the member size.

    nice python benchmarks/bench_zip_extract.py [--gb 0.0625 2] [--tmp /tmp] [--stored]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
from deepred.fetch.archive_zip import extract_members
from deepred.fetch.pins import Lock
zip_path, dest, lock = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
rep = extract_members(zip_path, "des_deep_data", ["GROUP_1_ims_14.npy"], dest, lock=Lock(lock))
dt = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "peak_rss_mb": hwm / 1024, "size": rep["GROUP_1_ims_14.npy"]["size"]}))
"""


def write_member_zip(path: Path, nbytes: int, stored: bool) -> None:
    """One member des_deep_data/GROUP_1_ims_14.npy of nbytes, written block by block (zip64 when large)."""
    rng = np.random.default_rng(0)
    block = rng.normal(0, 1, (8 << 20) // 4).astype(np.float32).tobytes()  # 8 MiB of noise, reused
    comp = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression=comp, compresslevel=None if stored else 1) as zf:
        with zf.open("des_deep_data/GROUP_1_ims_14.npy", "w", force_zip64=True) as fh:
            left = nbytes
            while left > 0:
                fh.write(block[: min(left, len(block))])
                left -= len(block)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, nargs="+", default=[0.0625, 2.0], help="member sizes in GiB")
    p.add_argument("--tmp", default=None, help="folder for the temporary zips (default: the system's)")
    p.add_argument("--stored", action="store_true", help="store the member uncompressed (default: deflate level 1)")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "zip_extract.json"))
    args = p.parse_args(argv)
    rows = []
    for gb in args.gb:
        nbytes = int(gb * (1 << 30))
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_zip_") as td:
            td = Path(td)
            need = 2.2 * nbytes
            free = shutil.disk_usage(td).free
            if free < need:
                print(f"skip {gb} GiB: {free / 2**30:.1f} GiB free in {td}, need {need / 2**30:.1f}", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            write_member_zip(td / "dataset.zip", nbytes, args.stored)
            t_write = time.perf_counter() - t0
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(td / "dataset.zip"), str(td / "raw"), str(td / "pins.lock.yaml")],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
            assert r["size"] == nbytes
            row = {"member_gib": gb, "member_bytes": nbytes, "zip_bytes": (td / "dataset.zip").stat().st_size,
                   "compression": "stored" if args.stored else "deflate-1", "write_zip_s": round(t_write, 1),
                   "extract_s": round(r["seconds"], 1), "extract_mb_per_s": round(nbytes / 1e6 / r["seconds"], 1),
                   "peak_rss_mb": round(r["peak_rss_mb"], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"benchmark": "streaming zip extraction (deepred.fetch.archive_zip.extract_members)", "rows": rows}
    if len(rows) >= 2:
        out["peak_rss_ratio_largest_to_smallest"] = round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)
    from deepred.core.io import write_json

    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
