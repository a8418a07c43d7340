"""Catalogue-driven cutouts without Snakemake.

    python -m deepred.cutouts fetch --configfile config/paper.yaml --dataset sdss   # on a login node
    python -m deepred.cutouts cut   --configfile config/paper.yaml --dataset sdss   # anywhere, offline
"""

from __future__ import annotations

import argparse
import logging
import sys

from deepred.contracts.config import ConfigError, load_config
from deepred.contracts.processed import DataError
from deepred.cutouts.source import build_cutouts, fetch_images
from deepred.fetch.checksums import DownloadError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepred.cutouts", description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["fetch", "cut"])
    p.add_argument("--configfile", default="config.yaml")
    p.add_argument("--dataset", action="append", help="only these datasets (default: every `cutouts` source)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.configfile)
        names = args.dataset or [d for d, ds in config["datasets"].items() if ds["source"]["kind"] == "cutouts"]
        for d in names:
            (fetch_images if args.step == "fetch" else build_cutouts)(config, d)
    except (ConfigError, DataError, DownloadError, OSError) as exc:  # one line naming the key or file
        print(f"python -m deepred.cutouts: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
