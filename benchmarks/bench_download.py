"""Benchmark the real-data path (issue 8). Output: results/benchmarks/download.json.

1. Download throughput: a 200 MB file fetched by deepred.fetch.download.fetch from a loopback HTTP server with Range
   support (tests/realformats.RangeServer), end to end: transfer, SHA-256 verification, rename. Target >= 100 MB/s.
2. SDSS streaming: a Pasquet-form cube (N, 64, 64, 5) + label table normalized through read_sdss in a fresh
   subprocess per size; peak RSS (VmHWM) at 20,000 objects at most 1.2x that at 5,000.

    nice python benchmarks/bench_download.py [--mb 200] [--sizes 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # realformats: the fixture writers and the loopback server

from realformats import RangeServer, file_specs, write_sdss  # noqa: E402

from deepred.fetch.download import DownloadSettings, FileSpec, fetch  # noqa: E402

CHILD = r"""
import json, sys, time
from deepred.data.normalize import normalize
from deepred.data.readers import read_sdss
from deepred.fetch.download import pin_folder
raw, out = sys.argv[1], sys.argv[2]
src = {"kind": "sdss", "cube": "cube.npy", "labels": "labels.csv", "files": pin_folder(raw)}
cfg = {"bands": ["u", "g", "r", "i", "z"], "cutout": 64, "label_column": "z_lens", "label_range": [0, 0.4],
       "splits": {"train": 0.7, "val": 0.15, "test": 0.15}, "scaling": "asinh", "rows_per_shard": 512,
       "on_bad": "error"}
t0 = time.perf_counter()
normalize(read_sdss(raw, src, "sdss"), "sdss", cfg, out, seed=1)
hwm_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])  # ru_maxrss survives exec
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": hwm_kb / 1024}))
"""


def bench_throughput(tmp: Path, mb: int, reps: int = 3) -> dict:
    src = tmp / "served"
    src.mkdir()
    with open(src / "big.bin", "wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    size = mb << 20
    runs = []
    with RangeServer(src) as srv:
        spec = FileSpec.from_config(file_specs(src, srv.url)[0])
        for _ in range(reps):
            (tmp / "raw" / "big.bin").unlink(missing_ok=True)
            t0, c0 = time.perf_counter(), time.process_time()  # process time: client and server threads
            fetch(spec, tmp / "raw" / "big.bin", DownloadSettings(progress_min_mb=1e9))
            runs.append({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})
        # Resume check at scale: cut at 40%, fetch again, count bytes the server sent.
        (tmp / "raw" / "big.bin").unlink()
        first = len(srv.requests)
        srv.cut("big.bin", int(size * 0.4))
        fetch(spec, tmp / "raw" / "big.bin", DownloadSettings(retries=2, backoff_s=0, progress_min_mb=1e9))
        sent = sum(r["sent"] for r in srv.requests[first:])
    rates = sorted(size / 1e6 / r["seconds"] for r in runs)
    return {
        "file_mb": size / 1e6,
        "runs": runs,
        "mb_per_s_end_to_end": {"best": rates[-1], "median": rates[len(rates) // 2], "worst": rates[0]},
        "mb_per_cpu_s": size / 1e6 / min(r["cpu_seconds"] for r in runs),
        "target": ">= 100 MB/s (transfer + SHA-256 verification + rename)",
        "resume_bytes_sent_over_file_size": sent / size,
    }


def bench_sdss(tmp: Path, sizes: list[int]) -> dict:
    rows = []
    for n in sizes:
        raw, out = tmp / f"sdss{n}", tmp / f"out{n}"
        write_sdss(raw, n)
        res = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(out)], check=True, capture_output=True,
                             text=True, cwd=ROOT)
        rec = {"n_objects": n, **json.loads(res.stdout.strip().splitlines()[-1])}
        rec["objects_per_s"] = n / rec["seconds"]
        rows.append(rec)
        print(rec, flush=True)
        for p in (raw, out):
            subprocess.run(["rm", "-rf", str(p)], check=True)
    return {"runs": rows, "rss_ratio_largest_to_smallest": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"],
            "target": "ratio <= 1.2"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3, help="download repetitions (the machine may be shared)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "download.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"download": bench_throughput(Path(tmp), args.mb, args.reps)}
        print(result, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["sdss_normalize"] = bench_sdss(Path(tmp), args.sizes)
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
