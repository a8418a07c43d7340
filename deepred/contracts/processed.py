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

import difflib
import functools
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.query import query_structure_problem, run_query
from deepred.core.io import sha256_file
from deepred.core.seeds import derive_seed

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
FEATURES_FILE = "photometry.parquet"  # the photometric features beside the catalogue (deepred.features.table)
SPLITS = ("train", "val", "test")
BAND_NAMES = ("u", "g", "r", "i", "z", "y", "Y")  # the schema's band enum

# Columns each source kind puts into the catalogue besides CATALOG_COLUMNS (name -> dtype), so a test set's
# query is checked when the config loads, before any job. tests/test_bad_inputs.py checks them against real
# simulator and reader output. A kind not listed here carries user columns: its queries are checked against
# the catalogue once it exists (test_set_rows).
_PER_BAND = {"mag_{b}": "float64", "mag_source_{b}": "float64", "neighbour_mag_{b}": "float64"}
_SIMULATED = {
    "z_lens": "float64", "z_source": "float64", "snr": "float64", "ebv": "float64", "is_lens": "bool",
    "theta_e": "float64", "sigma_v": "float64", "template": "object", "sed_type": "float64",
    "abs_mag_r": "float64", "r_eff_arcsec": "float64", "sersic_n": "float64", "axis_ratio": "float64",
    "arc_snr": "float64", "n_sn_images": "int16", "sn_mu_total": "float64", "psf_scale": "float64",
    "n_neighbours": "int16", **{k.format(b=b): t for k, t in _PER_BAND.items() for b in BAND_NAMES},
}
# The validation rows a PDF calibration needs (deepred.pdfs.calibration); the config check refuses a simulated
# dataset that cannot have them, since every PDF model's qp file depends on its calibration.
MIN_CALIBRATION_ROWS = 10

SOURCE_COLUMNS = {
    "simulate": _SIMULATED,  # + high_prob_lens for the kids preset (source_columns)
    "deepgravilens": {"z_lens": "float64", "z_source": "float64", "z_lens_raw": "float64",
                      "z_source_raw": "float64", "group": "int64", "copy": "int64"},
    "kids": {"z_lens": "float64", "ra": "float64", "dec": "float64", "grade": "object", "high_prob_lens": "bool"},
    "sdss": {"z_lens": "float64", "z_spec": "float64", "ebv": "float64"},
}


def source_columns(source: dict) -> dict[str, str] | None:
    """{column: dtype} of a source's catalogue (CATALOG_COLUMNS included); None where user columns pass through."""
    cols = SOURCE_COLUMNS.get(source["kind"])
    if cols is None:
        return None
    out = {**CATALOG_COLUMNS, **cols}
    if source["kind"] == "simulate" and source.get("preset") == "kids":
        out["high_prob_lens"] = "bool"
    return out


def query_problem(query: str, columns: dict[str, str] | list[str]) -> str | None:
    """Why `query` cannot run on a catalogue with these columns (None if it can): tried on an empty frame."""
    structure = query_structure_problem(query)
    if structure:
        return structure
    dtypes = columns if isinstance(columns, dict) else dict.fromkeys(columns, "float64")
    empty = pd.DataFrame({c: pd.Series(dtype="object" if t in ("string", "str") else t) for c, t in dtypes.items()})
    try:
        run_query(empty, query)
    except Exception as exc:  # pandas raises UndefinedVariableError, SyntaxError, TypeError, ... by case
        m = re.search(r"name '([^']+)' is not defined", str(exc))
        if m:
            close = difflib.get_close_matches(m.group(1), list(dtypes), n=3)
            return f"no catalogue column '{m.group(1)}'" + (f" (did you mean {', '.join(close)}?)" if close else "")
        return f"{type(exc).__name__}: {exc}"
    return None


def shard_name(kind: str, k: int) -> str:
    return f"{kind}_{k:05d}.npy"


class DataError(ValueError):
    """Bad input: the message names the file, the object and the problem."""


def shard_record(path: str | Path) -> dict:
    """{"bytes", "sha256"} of a written shard, for stats.json's `shards` manifest."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def shard_problem(path: Path, record: dict | None, *, full: bool = True) -> str | None:
    """Why a shard does not match its manifest record (size always; SHA-256 when `full`); None if it does.

    The message says how to rebuild: `snakemake -f` on the catalogue reruns only that dataset's normalization."""
    if record is None:  # normalized before shards were recorded: nothing to compare
        return None
    rebuild = f"rebuild it with `snakemake -f {path.parent.parent / 'catalog.parquet'}`"
    if not path.is_file():
        return f"{path}: shard missing; {rebuild}"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{path}: {size} bytes, stats.json records {record['bytes']} (truncated or replaced); {rebuild}"
    if full:
        digest = sha256_file(path)
        if digest != record["sha256"]:
            return (f"{path}: SHA-256 {digest[:12]}... differs from stats.json's {record['sha256'][:12]}... "
                    f"(changed since normalization); {rebuild}")
    return None


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

    def shard(self, kind: str, k: int) -> np.ndarray:
        """One shard, memory-mapped, after checking its size and SHA-256 against stats.json (once per process)."""
        cache = self.__dict__.setdefault("_mmaps", {})
        key = (kind, k)
        if key not in cache:
            path = self.root / "shards" / shard_name(kind, k)
            if not path.exists():
                raise DataError(f"{path}: shard missing (catalogue row points at it)")
            problem = shard_problem(path, self.stats.get("shards", {}).get(path.name))
            if problem:
                raise DataError(problem)
            try:
                cache[key] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: not a readable NPY shard ({exc})") from exc
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
            out.append(self.shard(kind, int(k))[int(row)])
        return np.stack(out) if out else np.empty((0,))

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split '{name}'; known: {', '.join(SPLITS)}")
        return self.catalog[self.catalog["split"] == name].reset_index(drop=True)


def train_subset(rows: pd.DataFrame, n_systems: int | None, master_seed: int, dataset: str) -> pd.DataFrame:
    """The rows of `n_systems` systems of a dataset's training split, drawn by one seeded permutation of its system
    ids (the same for every model), so that a smaller subset is part of every larger one: a learning curve adds
    systems, it never swaps them. None: all rows."""
    if n_systems is None:
        return rows

    where = f"dataset '{dataset}' train split"
    systems = np.unique(rows["system_id"].to_numpy(dtype=str))
    if not 2 <= int(n_systems) <= len(systems):
        raise ValueError(f"{where}: {n_systems} training systems asked for, the split has {len(systems)} "
                         f"(need 2 <= n <= {len(systems)}); simulate more systems or ask for fewer")
    order = np.random.default_rng(derive_seed(master_seed, "train_subset", dataset)).permutation(len(systems))
    keep = set(systems[order[: int(n_systems)]])
    return rows[rows["system_id"].astype(str).isin(keep)].reset_index(drop=True)


@functools.lru_cache(maxsize=256)
def _shard_records(stats_path: str, mtime_ns: int, size: int, inode: int) -> dict:
    """stats.json's shard records, parsed once per version of the file: the workflow asks for them ~20 times per
    dataset while it builds the DAG (every job reading the shards), and the file carries the whole provenance."""
    return dict(json.loads(Path(stats_path).read_text()).get("shards", {}))


def damaged_shards(processed_root: str | Path) -> list[str]:
    """Size check of every shard stats.json records (stat calls only): what the workflow runs while it builds
    its DAG, so a truncated or missing shard stops a dry run instead of a training job. [] before normalization."""
    stats_path = Path(processed_root) / "stats.json"
    try:
        st = stats_path.stat()
    except FileNotFoundError:
        return []
    try:
        records = _shard_records(str(stats_path), st.st_mtime_ns, st.st_size, st.st_ino)
    except (ValueError, AttributeError) as exc:
        return [f"{stats_path}: not a JSON object ({exc}); rebuild it with "
                f"`snakemake -f {Path(processed_root) / 'catalog.parquet'}`"]
    shards = Path(processed_root) / "shards"
    return [p for name, rec in sorted(records.items()) if (p := shard_problem(shards / name, rec, full=False))]


def test_set_rows(config: dict, test_set: str, processed_root: str | Path) -> pd.DataFrame:
    """The catalogue rows of a configured test set: the dataset's test split, narrowed by its query."""
    ts = config["test_sets"][test_set]
    cat = ProcessedDataset(processed_root).catalog
    rows = cat[cat["split"] == "test"]
    if ts.get("query"):
        problem = query_problem(ts["query"], dict(cat.dtypes.astype(str)))
        if problem:
            raise DataError(f"config key 'test_sets.{test_set}.query' ({ts['query']!r}) on "
                            f"{Path(processed_root) / 'catalog.parquet'}: {problem}")
        rows = run_query(rows, ts["query"])
    if len(rows) == 0:
        raise DataError(f"test set '{test_set}': no rows in {processed_root} (query {ts.get('query')!r})")
    return rows.reset_index(drop=True)
