"""Targets of the catalogue-driven source: where its files go, its provider, the target table and the plan.

See deepred.cutouts.source for the pipeline (fetch, cut, read back) these steps serve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError
from deepred.cutouts.providers import PROVIDERS, ImageRequest, KiDSTiles
from deepred.fetch.download import DownloadSettings
from deepred.fetch.layout import source_lock
from deepred.fetch.source_files import read_table, require_columns, source_specs, spec_for, verified

OUT = "cutouts"
SURVEYS = {"sdss_frames": "SDSS", "kids_tiles": "KiDS", "cutout_service": "Legacy Surveys"}


def raw_dir(config: dict, dataset: str) -> Path:
    return Path(config["data_dir"]) / "raw" / dataset


def cache_dir(config: dict, dataset: str) -> Path:
    src = config["datasets"][dataset]["source"]
    return Path(src["cache_dir"]) if src.get("cache_dir") else raw_dir(config, dataset) / "images"


def lock_path(config: dict, dataset: str) -> Path:
    """The source's lock file (deepred.fetch.dataset.source_lock: `source.lock`, else config/pins/<dataset>)."""
    return source_lock(config["datasets"][dataset]["source"], dataset)


def _specs(rdir: Path, src: dict):
    return source_specs(rdir, src)


def _verified_table(rdir: Path, src: dict, name: str, what: str, dataset: str) -> tuple[pd.DataFrame, Path]:
    path = verified(rdir, spec_for(_specs(rdir, src), name, what, dataset))
    return read_table(path), path


def make_provider(config: dict, dataset: str):
    ds = config["datasets"][dataset]
    src = ds["source"]
    pcfg = dict(src["provider"])
    name = pcfg["name"]
    if name not in PROVIDERS:
        raise DataError(f"dataset '{dataset}': unknown provider '{name}' (known: {', '.join(PROVIDERS)})")
    scale = float(src.get("pixel_scale") or pcfg.get("pixscale") or {"sdss_frames": 0.396, "kids_tiles": 0.2}.get(name, 0.262))
    args = (pcfg, list(ds["bands"]), int(ds["cutout"]), scale)
    if name == "kids_tiles":
        tiles, tpath = _verified_table(raw_dir(config, dataset), src, pcfg["tiles"], "tile list", dataset)

        require_columns(tiles, ["tile", "ra", "dec"], tpath)
        return KiDSTiles(*args, tiles=tiles)
    return PROVIDERS[name](*args)


def load_targets(config: dict, dataset: str) -> tuple[pd.DataFrame, Path]:
    """The target table as catalogue columns: object_id, system_id, obj_class, ra, dec, mapped columns."""
    ds = config["datasets"][dataset]
    src = ds["source"]
    table, path = _verified_table(raw_dir(config, dataset), src, src["targets"], "target table", dataset)
    idc, rac, decc = src.get("id_column", "id"), src.get("ra_column", "ra"), src.get("dec_column", "dec")
    columns = dict(src.get("columns") or {ds["label_column"]: "z"})
    grade_col = src.get("grade_column")
    provider_cols = PROVIDERS[src["provider"]["name"]].columns_for(src["provider"])
    require_columns(table, [idc, rac, decc, *columns.values(), *provider_cols, *([grade_col] if grade_col else [])], path)
    grades = dict(src.get("grades") or {})
    if grade_col and grades.get("keep") is not None:
        keep = table[grade_col].astype(str).str.strip().isin([str(g) for g in grades["keep"]])
        table = table[keep.to_numpy()].reset_index(drop=True)
    if len(table) == 0:
        raise DataError(f"{path}: no targets (after the grade selection {grades.get('keep')})")
    ids = table[idc].astype(str)
    if ids.duplicated().any():
        raise DataError(f"{path}: duplicate {idc} {ids[ids.duplicated()].iloc[0]!r}")
    ra = pd.to_numeric(table[rac], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(table[decc], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (ra >= 0) & (ra < 360) & (np.abs(dec) <= 90))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: object {ids.iloc[i]}: RA/Dec ({ra[i]}, {dec[i]}) out of range")
    out = pd.DataFrame({"object_id": ids.to_numpy(), "system_id": ids.to_numpy(),
                        "obj_class": str(src.get("obj_class", "galaxy")), "ra": ra, "dec": dec})
    for dest, col in columns.items():
        vals = table[col]
        out[dest] = pd.to_numeric(vals, errors="coerce").to_numpy(float) if vals.dtype.kind in "biuf" or dest.startswith("z") else vals.to_numpy()
    if grade_col:
        g = table[grade_col].astype(str).str.strip()
        out["grade"] = g.to_numpy()
        out["high_prob_lens"] = g.isin([str(x) for x in grades.get("high_prob", ["A"])]).to_numpy()
    for c in provider_cols:
        out[f"P_{c}"] = table[c].to_numpy()
    return out, path


def _target_dict(row, provider_cols) -> dict:
    d = {"object_id": row.object_id, "ra": row.ra, "dec": row.dec}
    for c in provider_cols:
        d[c] = getattr(row, f"P_{c}")
    return d


def plan(targets: pd.DataFrame, provider) -> list[dict[str, ImageRequest | str]]:
    cols = provider.required_columns()
    return [provider.requests(_target_dict(r, cols)) for r in targets.itertuples(index=False)]


def _settings(config: dict) -> DownloadSettings:
    return DownloadSettings.from_config(config)
