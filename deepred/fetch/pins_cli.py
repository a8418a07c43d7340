"""`deepred pins update|verify`: the lock files of real-data downloads, managed from the command line.

verify checks the files present under data/raw against their locks (no network); update reads the archives'
published checksums (Zenodo's REST API) into the locks and records the SHA-256 of present files that have no
entry yet. The lock itself is deepred.fetch.pins.Lock.
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepred.contracts.config import ConfigError, load_config
from deepred.fetch.archive_zip import member_key
from deepred.fetch.checksums import DownloadError
from deepred.fetch.dataset import ZENODO_API, zenodo_file, zenodo_record
from deepred.fetch.download import DownloadSettings, FileSpec, verify_file
from deepred.fetch.layout import archive_name, archive_path, source_lock
from deepred.fetch.pins import Lock

log = logging.getLogger("deepred.fetch.pins")


def _real_datasets(config: dict, only: list[str] | None) -> list[str]:
    real = [d for d, ds in config["datasets"].items() if ds["source"]["kind"] != "simulate"]
    unknown = [d for d in only or [] if d not in config["datasets"]]
    if unknown:
        raise DownloadError(f"unknown dataset(s) {', '.join(unknown)}; the config has {', '.join(config['datasets'])}")
    return [d for d in real if not only or d in only]


def _planned(config: dict, dataset: str) -> list[tuple[str, Path, dict | None]]:
    """(lock key, local path, pin given in the config) of every file a dataset's source verifies."""

    src = config["datasets"][dataset]["source"]
    raw = Path(config["data_dir"]) / "raw" / dataset
    out = []
    arch = src.get("archive")
    if arch:
        name = archive_name(arch)
        pin = {k: arch[k] for k in ("size", "sha256", "md5") if arch.get(k) is not None} or None
        out.append((name, archive_path(raw, arch), pin))
        folder = str(arch.get("folder") or src.get("subset") or "")
        for f in src.get("files", []):
            out.append((member_key(name, folder, f["name"]), raw / f["name"], None))
        return out
    for f in list(src.get("files", [])) + ([src["manifest"]] if src.get("manifest") else []):
        pin = {k: f[k] for k in ("size", "sha256", "md5") if f.get(k) is not None}
        out.append((f["name"], raw / f["name"], pin if (pin.get("sha256") or pin.get("md5")) else None))
    return out


def verify_locks(config: dict, datasets: list[str] | None = None, *, rehash: bool = False, out=None) -> int:
    """Check every present file of the real datasets against its lock entry (or config pin); no network.
    Prints one line per file; returns the number of mismatches."""
    import sys


    out = out or sys.stdout
    bad = 0
    for d in _real_datasets(config, datasets):
        lock = Lock(source_lock(config["datasets"][d]["source"], d))
        for key, path, pin in _planned(config, d):
            entry = lock.get(key)
            if not path.is_file():
                state = "missing" + ("" if entry or pin else " (and not pinned yet)")
            elif entry is None and pin is None:
                state = f"not pinned (no entry in {lock.path}; recorded at first download)"
            else:
                try:
                    if entry is not None:
                        lock.verify(key, path, use_stamp=not rehash)
                    else:
                        verify_file(path, FileSpec(name=key, **pin), use_stamp=not rehash)
                    state = "ok"
                except DownloadError as exc:
                    bad += 1
                    state = f"MISMATCH: {exc}"
            print(f"{d}: {key}: {state}", file=out)
    return bad


def update_locks(config: dict, datasets: list[str] | None = None, out=None) -> int:
    """Refresh the locks from the archives: read each Zenodo record's published size/md5 (network) and pin
    them (a changed record replaces the entry and forgets its members, which are then extracted and locked
    again); record the SHA-256 of files already present that have no entry yet. Returns the number of
    files whose published checksum their local copy does not match."""
    import sys


    out = out or sys.stdout
    settings = DownloadSettings.from_config(config)
    api = (config.get("download") or {}).get("zenodo_api") or ZENODO_API
    records: dict[int, dict] = {}
    bad = 0
    for d in _real_datasets(config, datasets):
        src = config["datasets"][d]["source"]
        lock = Lock(source_lock(src, d))
        arch = src.get("archive")
        changed = False
        if arch and arch.get("zenodo"):
            name, rec = archive_name(arch), int(arch["zenodo"]["record"])
            if rec not in records:
                records[rec] = zenodo_record(rec, settings, api)
            pub = zenodo_file(records[rec], name, f"{api.rstrip('/')}/records/{rec}")
            entry = lock.get(name)
            same = entry is not None and entry.get("size") == pub["size"] and (entry.get("md5") or None) == pub["md5"]
            if not same:
                if entry is not None:
                    for k in lock.names():
                        if k.startswith(f"{name}!"):
                            lock.forget(k)
                    changed = True
                    print(f"{d}: {name}: the record changed (size/md5 {entry.get('size')}/{entry.get('md5')} -> "
                          f"{pub['size']}/{pub['md5']}); its entry and members' are replaced: delete the old "
                          f"copy under data/raw/ and download again", file=out)
                lock.record(name, {"url": pub["url"], "size": pub["size"], "md5": pub["md5"],
                                   "source": f"zenodo record {rec} (published md5), {api.rstrip('/')}/records/{rec}"})
            else:
                print(f"{d}: {name}: unchanged in record {rec}", file=out)
        for key, path, pin in _planned(config, d):
            # members are locked when extracted (from a verified archive), never from files found in place
            if changed or "!" in key or not path.is_file() or pin is not None:
                continue
            entry = lock.get(key)
            if entry is not None and entry.get("sha256"):
                continue
            try:
                lock.verify_or_record(key, path)
                print(f"{d}: {key}: recorded {lock.get(key)['sha256']}", file=out)
            except DownloadError as exc:
                bad += 1
                print(f"{d}: {key}: MISMATCH: {exc}", file=out)
    return bad


def cli(args) -> int:
    """`deepred pins update|verify` (deepred/cli.py)."""
    import sys

    logging.getLogger("deepred").setLevel(logging.INFO)
    try:
        config = load_config(args.configfile)
        if args.action == "verify":
            bad = verify_locks(config, args.dataset, rehash=args.rehash)
        else:
            bad = update_locks(config, args.dataset)
    except (DownloadError, ConfigError) as exc:
        print(f"deepred: error: {exc}", file=sys.stderr)
        return 1
    if bad:
        print(f"deepred: {bad} file(s) do not match their pins", file=sys.stderr)
    return 1 if bad else 0


def add_parser(sub) -> None:
    """The `pins` subcommand of the deepred CLI."""
    import argparse

    p = sub.add_parser(
        "pins", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="manage the lock files of verified downloads (config/pins/*.lock.yaml)",
        description="Lock files pin every real-data file by size and SHA-256 (commit them).\n"
                    "  verify: check the files present under data/raw against their locks (no network)\n"
                    "  update: read the archives' published checksums (Zenodo REST API) into the locks and\n"
                    "          record the SHA-256 of present files that have no entry yet",
        epilog="examples:\n  deepred pins update --configfile config/paper.yaml\n"
               "  deepred pins verify --configfile config/paper.yaml --dataset des_deep --rehash",
    )
    p.add_argument("action", choices=("update", "verify"))
    p.add_argument("--configfile", default="config.yaml", help="the pipeline config (default: config.yaml)")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable; default: every real one)")
    p.add_argument("--rehash", action="store_true", help="verify: hash every file again (ignore the verified stamps)")
    p.set_defaults(func=cli)
