"""Real-data downloads without Snakemake (on a login node, where compute nodes have no internet).

    python -m deepred.fetch --configfile config/paper.yaml [--dataset kids] [--offline]
    python -m deepred.fetch pin FOLDER     # file specs (name, size, sha256) of files placed by hand
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from deepred.contracts.config import ConfigError, load_config
from deepred.fetch.dataset import fetch_dataset
from deepred.fetch.download import DownloadError, DownloadSettings, pin_folder

log = logging.getLogger("deepred.fetch.download")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepred.fetch", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    pin = sub.add_parser("pin", help="print file specs (name, size, sha256) for files placed in a folder")
    pin.add_argument("folder")
    p.add_argument("--configfile", default="config.yaml")
    p.add_argument("--dataset", action="append", help="only these datasets (default: every real one)")
    p.add_argument("--offline", action="store_true", help="verify placed files only, no network")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.cmd == "pin":
        yaml.safe_dump(pin_folder(args.folder), sys.stdout, sort_keys=False)
        return 0
    try:
        config = load_config(args.configfile)
    except (ConfigError, OSError) as exc:  # one line, as every DeepRed command
        print(f"python -m deepred.fetch: error: {args.configfile}: {exc}", file=sys.stderr)
        return 2
    settings = DownloadSettings.from_config(config)
    settings.offline = settings.offline or args.offline
    datasets = args.dataset or [d for d, ds in config["datasets"].items() if ds["source"]["kind"] != "simulate"]
    failed = 0
    for d in datasets:
        try:
            fetch_dataset(config, d, Path(config["data_dir"]) / "raw" / d, settings)
        except DownloadError as exc:
            log.error("%s", exc)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
