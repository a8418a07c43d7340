"""Verdicts of slow pre-flight checks, cached under `.snakemake/` so that only the first Snakemake call after an
edit pays for them (the network builds, the simulator presets)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from deepred.core.io import write_text


def cached_check(cache_dir: str | Path | None, name: str, key: str, check: Callable[[], None], ok: str) -> None:
    """Run `check` (it raises on a problem) unless a stamp `<name>-ok-<key>` says it passed for this key."""
    stamp = Path(cache_dir) / f"{name}-ok-{key}" if cache_dir is not None else None
    if stamp is not None and stamp.is_file():
        return
    check()
    if stamp is not None:
        write_text(stamp, ok + "\n")
