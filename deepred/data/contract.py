"""The data contract every later stage reads: one folder per dataset under data/processed/{dataset}/.

- catalog.parquet: one row per object with CATALOG_COLUMNS (plus optional magnitudes mag_{band},
  snr, z_source, high_prob_lens and any truth column a source provides).
- shards/images_{k:05d}.npy: float32 (n, bands, H, W), `rows_per_shard` rows (the last may be shorter),
  scaled as stats.json says; open them with np.load(..., mmap_mode="r").
- shards/masks_{k:05d}.npy: uint8 (n, H, W) true footprint of the central object, where the source knows it.
- stats.json: bands, cutout, pixel scale, scaling, split counts, per-band pixel statistics, provenance.
- rejects.parquet: objects left out (on_bad: skip) with the file and the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

CATALOG_COLUMNS = {
    "object_id": "string",  # unique per row
    "system_id": "string",  # all copies of one physical system share it; splits are by system
    "split": "string",  # train | val | test
    "shard": "int32",  # shard index k of shards/images_{k:05d}.npy
    "row": "int32",  # row within the shard
    "obj_class": "string",  # galaxy | no_lens | gg_lens | lensed_sn_ia | lensed_sn_cc | lens_candidate
    "survey": "string",  # survey name
    "quality_flag": "int16",  # 0 = clean; bit flags set by the source
}
SPLITS = ("train", "val", "test")


def shard_name(kind: str, k: int) -> str:
    return f"{kind}_{k:05d}.npy"


class DataError(ValueError):
    """Bad input: the message names the file, the object and the problem."""


@dataclass
class ProcessedDataset:
    """Read access to a normalized dataset folder (memory-mapped shards)."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    @cached_property
    def catalog(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "catalog.parquet")

    @cached_property
    def stats(self) -> dict:
        return json.loads((self.root / "stats.json").read_text())

    @property
    def bands(self) -> list[str]:
        return list(self.stats["bands"])

    def _shard(self, kind: str, k: int):
        cache = self.__dict__.setdefault("_mmaps", {})
        key = (kind, k)
        if key not in cache:
            path = self.root / "shards" / shard_name(kind, k)
            if not path.exists():
                raise DataError(f"{path}: shard missing (catalogue row points at it)")
            cache[key] = np.load(path, mmap_mode="r", allow_pickle=False)
        return cache[key]

    def images(self, rows: pd.DataFrame) -> np.ndarray:
        """float32 (n, bands, H, W) for catalogue rows, in their order."""
        return self._gather("images", rows)

    def masks(self, rows: pd.DataFrame) -> np.ndarray | None:
        if not self.stats.get("has_masks", False):
            return None
        return self._gather("masks", rows)

    def _gather(self, kind: str, rows: pd.DataFrame) -> np.ndarray:
        out = []
        for k, row in zip(rows["shard"].to_numpy(), rows["row"].to_numpy()):
            out.append(self._shard(kind, int(k))[int(row)])
        return np.stack(out) if out else np.empty((0,))

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split '{name}'; known: {', '.join(SPLITS)}")
        return self.catalog[self.catalog["split"] == name].reset_index(drop=True)


def test_set_rows(config: dict, test_set: str, processed_root: str | Path) -> pd.DataFrame:
    """The catalogue rows of a configured test set: the dataset's test split, narrowed by its query."""
    ts = config["test_sets"][test_set]
    cat = ProcessedDataset(processed_root).catalog
    rows = cat[cat["split"] == "test"]
    if ts.get("query"):
        rows = rows.query(ts["query"])
    if len(rows) == 0:
        raise DataError(f"test set '{test_set}': no rows in {processed_root} (query {ts.get('query')!r})")
    return rows.reset_index(drop=True)
