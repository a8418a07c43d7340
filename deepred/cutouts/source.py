"""The catalogue-driven source (`source.kind: cutouts`): a target table in, Parquet + NPY shards out.

1. Targets: a table (CSV, Parquet or FITS, pinned among `source.files`) with an id, RA, Dec, the label(s)
   and optional extras (E(B-V), grade, class...), mapped to catalogue columns by `source.columns`.
2. Plan: the provider names, per target and band, the image that covers it (an SDSS frame by
   run/camcol/field, a KiDS tile by position, a service cutout by URL).
3. Fetch (`fetch_images`, rule `cutout_images`, a local rule run by `download_all`): every distinct image
   once, however many targets it holds, concurrently with a polite limit, resumable, cached under
   `data/raw/{dataset}/images/`, parsed, and verified against (or recorded in) the lock
   `config/pins/{dataset}.lock.yaml`. A stamp `images.fetched.json` lists what was fetched and what could not be.
4. Cut (`build_cutouts`, rule `cutouts`, offline): targets are visited grouped by image (an LRU cache keeps
   the few images in use decoded), each band is resampled onto one TAN grid centred on the target
   (deepred.cutouts.resample), in nanomaggies per output pixel; a target too close to an image edge, a
   band without coverage, or an unusable file go to `rejects.parquet` with the reason. Accepted cutouts are
   written a shard at a time (`cutouts/shards/images_{k}.npy`, float32 (n, bands, H, W)) with
   `cutouts/truth.parquet` (one row per accepted target, in shard order) and `cutouts/meta.json`.
5. Normalize reads that folder (`read_cutouts`) like any other raw source; its rejects are carried into
   `data/processed/{dataset}/rejects.parquet`.

Memory stays flat in the number of targets: besides the target table (a few hundred bytes per target),
one shard of cutouts and the cached images are held at a time.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from deepred.cutouts.fetch import Fetcher
from deepred.cutouts.providers import (
    PROVIDERS,
    ImageRequest,
    KiDSTiles,
    MissingBand,
    ProviderError,
    read_decoded,
    write_decoded,
)
from deepred.cutouts.resample import EdgeError, pixel_area, resample, target_wcs
from deepred.data.contract import DataError
from deepred.data.raw import RawChunk, RawSource
from deepred.dataset_fetch import source_lock
from deepred.download import DownloadError, DownloadSettings
from deepred.pins import Lock

log = logging.getLogger("deepred.cutouts")

FETCH_STAMP = "images.fetched.json"
OUT = "cutouts"
SURVEYS = {"sdss_frames": "SDSS", "kids_tiles": "KiDS", "cutout_service": "Legacy Surveys"}


# ------------------------------------------------------------------------------------------------ config
def raw_dir(config: dict, dataset: str) -> Path:
    return Path(config["data_dir"]) / "raw" / dataset


def cache_dir(config: dict, dataset: str) -> Path:
    src = config["datasets"][dataset]["source"]
    return Path(src["cache_dir"]) if src.get("cache_dir") else raw_dir(config, dataset) / "images"


def lock_path(config: dict, dataset: str) -> Path:
    """The source's lock file (deepred.dataset_fetch.source_lock: `source.lock`, else config/pins/<dataset>)."""
    return source_lock(config["datasets"][dataset]["source"], dataset)


def _specs(rdir: Path, src: dict):
    from deepred.data.readers._common import source_specs

    return source_specs(rdir, src)


def _verified_table(rdir: Path, src: dict, name: str, what: str, dataset: str) -> tuple[pd.DataFrame, Path]:
    from deepred.data.readers._common import read_table, spec_for, verified

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
        from deepred.data.readers._common import require_columns

        require_columns(tiles, ["tile", "ra", "dec"], tpath)
        return KiDSTiles(*args, tiles=tiles)
    return PROVIDERS[name](*args)


def load_targets(config: dict, dataset: str) -> tuple[pd.DataFrame, Path]:
    """The target table as catalogue columns: object_id, system_id, obj_class, ra, dec, mapped columns."""
    from deepred.data.readers._common import require_columns

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


# ------------------------------------------------------------------------------------------------- fetch
def fetch_images(config: dict, dataset: str, stamp: str | Path | None = None) -> dict:
    """Download (or verify in the cache) every image the targets need; write the stamp; return it."""
    from deepred.io import write_json

    src = config["datasets"][dataset]["source"]
    targets, _ = load_targets(config, dataset)
    provider = make_provider(config, dataset)
    wanted: dict[str, ImageRequest] = {}  # distinct images only (targets' requests are not all held at once)
    cols = provider.required_columns()
    for row in targets.itertuples(index=False):
        for r in provider.requests(_target_dict(row, cols)).values():
            if isinstance(r, ImageRequest):
                wanted.setdefault(r.key, r)
    lock = Lock(lock_path(config, dataset))
    root = cache_dir(config, dataset)
    after = None
    if provider.decodes and src.get("keep_decoded", True):
        def after(key, path, entry, checked):
            if read_decoded(root, key, entry.get("sha256")) is not None:
                return
            data, header = checked if checked is not None else provider.check(path, None)
            write_decoded(root, key, entry["sha256"], data, header)

    fetcher = Fetcher(root, lock, _settings(config), max_connections=int(src.get("max_connections", 4)),
                      delay_s=float(src.get("request_delay_s", 0.0)), check=provider.check, after=after)
    t0 = time.monotonic()
    # new entries are written to the lock once, when the batch ends (also after an error), not once per image
    with lock.batch():
        outcomes = fetcher.fetch_all(wanted)
    fatal = [o for o in outcomes.values() if o.fatal]
    if fatal and src.get("download_failures", "error") == "reject":
        for o in fatal:  # their targets become rejects with this reason; the next run asks again
            log.warning("%s: %s (its targets are rejected)", o.key, o.problem)
        fatal = []
    if fatal:
        listed = "; ".join(o.problem for o in fatal[:5])
        raise DownloadError(f"dataset '{dataset}': {len(fatal)} of {len(wanted)} images could not be fetched "
                            f"({listed}{' ...' if len(fatal) > 5 else ''}); rerun to resume")
    unavailable = [o for o in outcomes.values() if o.path is None]
    if wanted and len(unavailable) == len(wanted):  # a wrong base URL or template, not a few missing images
        raise DownloadError(f"dataset '{dataset}': none of the {len(wanted)} images could be fetched (first: "
                            f"{unavailable[0].problem}); check source.provider's base_url / url_template")
    record = {
        "dataset": dataset,
        "provider": provider.name,
        "lock": str(lock_path(config, dataset)),
        "n_images": len(wanted),
        "n_downloaded": sum(o.downloaded for o in outcomes.values()),
        "seconds": round(time.monotonic() - t0, 3),
        "missing": {k: o.problem for k, o in sorted(outcomes.items()) if o.path is None},
    }
    log.info("%s: %d images (%d downloaded, %d unavailable) in %.1f s", dataset, record["n_images"],
             record["n_downloaded"], len(record["missing"]), record["seconds"])
    write_json(stamp or raw_dir(config, dataset) / FETCH_STAMP, record)
    return record


# --------------------------------------------------------------------------------------------------- cut
class _ImageCache:
    """LRU of opened images (decoded SDSS frames, memory-mapped tiles), keyed by cache key; each entry is
    (image, WCS, flux factor, input pixel area) or the exception that made the image unusable."""

    def __init__(self, provider, root: Path, size: int, lock=None):
        self.provider, self.root, self.size, self.lock = provider, root, max(1, size), lock
        self.items: OrderedDict[str, object] = OrderedDict()

    def _read(self, req: ImageRequest):
        if self.provider.decodes and self.lock is not None:
            entry = self.lock.get(req.key) or {}
            got = read_decoded(self.root, req.key, entry.get("sha256"))
            if got is not None:  # the decoded copy of exactly this (locked) file, memory-mapped
                data, wcs_in = got
                return data, wcs_in, 1.0
        return self.provider.read(self.root / req.key, req)

    def get(self, req: ImageRequest):
        k = (req.key, req.plane)
        if k in self.items:
            self.items.move_to_end(k)
            return self.items[k]
        try:
            image, wcs_in, factor = self._read(req)
            val = (image, wcs_in, factor, pixel_area(wcs_in))
        except (ProviderError, OSError) as exc:
            val = exc  # remembered: every target of this image is rejected with the same reason
        self.items[k] = val
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return val


def cut_one(target: dict, reqs: dict, cache: _ImageCache, missing: dict, bands: list[str], size: int,
            pixel_scale: float, method: str, margin: int) -> tuple[np.ndarray | None, str | None, str]:
    """(cutout (bands, size, size) or None, reject reason or None, the file the reason is about)."""
    wout = target_wcs(target["ra"], target["dec"], size, pixel_scale)
    area_out = (pixel_scale / 3600.0) ** 2
    out = np.empty((len(bands), size, size), np.float32)
    for j, b in enumerate(bands):
        req = reqs.get(b)
        if req is None or isinstance(req, str):
            return None, f"band {b}: no coverage ({req or 'no image'})", ""
        if req.key in missing:
            return None, f"band {b}: {missing[req.key]}", req.key
        got = cache.get(req)
        if isinstance(got, MissingBand):
            return None, f"band {b}: no coverage ({got})", req.key
        if isinstance(got, Exception):
            return None, f"band {b}: unusable image ({got})", req.key
        image, wcs_in, factor, area_in = got
        try:
            out[j] = resample(image, wcs_in, wout, size, method=method, margin=margin,
                              area=area_out / area_in) * factor
        except EdgeError as exc:
            return None, f"band {b}: too close to the image edge ({exc})", req.key
    if not np.isfinite(out).all():
        return None, "non-finite pixels after resampling", ""
    return out, None, ""


def build_cutouts(config: dict, dataset: str, out_dir: str | Path | None = None, stamp: str | Path | None = None) -> dict:
    """Cut every target from the cached images into `out_dir` (default data/raw/{dataset}/cutouts)."""
    from deepred.io import write_json, write_parquet

    ds = config["datasets"][dataset]
    src = ds["source"]
    bands, size = list(ds["bands"]), int(ds["cutout"])
    out_dir = Path(out_dir or raw_dir(config, dataset) / OUT)
    stamp = Path(stamp or raw_dir(config, dataset) / FETCH_STAMP)
    if not stamp.is_file():
        raise DataError(f"{stamp}: missing; fetch the images first (rule cutout_images / download_all)")
    fetched = json.loads(stamp.read_text())
    missing = dict(fetched.get("missing") or {})
    targets, tpath = load_targets(config, dataset)
    provider = make_provider(config, dataset)
    method = src.get("interpolation", "bilinear")
    margin = int(src.get("margin_px", 3))
    rows = int(ds.get("rows_per_shard", 512))
    pcols = provider.required_columns()
    rows_iter = targets.itertuples(index=False)
    # Visit targets grouped by image so each is decoded once (stable: ties keep the table order). Requests
    # are recomputed per target in the loop (cheap) rather than held for all targets (memory flat in N).
    first = [next((r.key for r in provider.requests(_target_dict(t, pcols)).values() if isinstance(r, ImageRequest)), "")
             for t in rows_iter]
    order = np.argsort(np.asarray(first, dtype=object), kind="stable")
    del first
    ids, ra, dec = targets["object_id"].to_numpy(), targets["ra"].to_numpy(float), targets["dec"].to_numpy(float)
    pvals = {c: targets[f"P_{c}"].to_numpy() for c in pcols}
    lock = Lock(lock_path(config, dataset)) if provider.decodes and src.get("keep_decoded", True) else None
    cache = _ImageCache(provider, cache_dir(config, dataset), int(src.get("image_cache", 16)), lock)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    truth_cols = [c for c in targets.columns if not c.startswith("P_")]
    kept, rejects, buf = [], [], []
    k = 0
    t0 = time.monotonic()

    def flush():
        nonlocal k, buf
        if buf:
            np.save(tmp / "shards" / f"images_{k:05d}.npy", np.stack(buf), allow_pickle=False)
            k += 1
            buf = []

    for n_done, i in enumerate(order, 1):
        t = {"object_id": ids[i], "ra": ra[i], "dec": dec[i], **{c: v[i] for c, v in pvals.items()}}
        cut, reason, about = cut_one(t, provider.requests(t), cache, missing, bands, size, provider.pixel_scale,
                                     method, margin)
        if cut is None:
            rejects.append({"object_id": str(ids[i]), "file": str(cache.root / about) if about else str(tpath),
                            "reason": reason})
        else:
            kept.append((int(i), k, len(buf)))
            buf.append(cut)
            if len(buf) == rows:
                flush()
        if n_done % 5000 == 0:
            log.info("%s: %d/%d targets cut (%d rejected)", dataset, n_done, len(order), len(rejects))
    flush()
    idx = [i for i, _, _ in kept]
    truth = targets.iloc[idx][truth_cols].reset_index(drop=True)
    truth["shard"] = np.array([s for _, s, _ in kept], np.int32)
    truth["row"] = np.array([r for _, _, r in kept], np.int32)
    seconds = time.monotonic() - t0
    meta = {
        "kind": "cutouts",
        "provider": provider.name,
        "bands": bands,
        "cutout": size,
        "pixel_scale": provider.pixel_scale,
        "survey": str(src.get("survey") or SURVEYS.get(provider.name, provider.name)),
        "flux_unit": "nanomaggy per output pixel",
        "interpolation": method,
        "targets": str(src["targets"]),
        "n_targets": int(len(targets)),
        "n_cut": int(len(truth)),
        "n_rejected": len(rejects),
        "n_shards": k,
        "seconds": round(seconds, 3),
        "images": fetched.get("n_images"),
        "lock": fetched.get("lock"),
    }
    write_parquet(tmp / "truth.parquet", truth)
    write_parquet(tmp / "rejects.parquet", pd.DataFrame(rejects, columns=["object_id", "file", "reason"]))
    write_json(tmp / "meta.json", meta)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("%s: %d cutouts, %d rejected, %.1f cutouts/s", dataset, len(truth), len(rejects), len(order) / max(seconds, 1e-9))
    return meta


# ------------------------------------------------------------------------------------- raw-source adapter
def read_cutouts(folder: str | Path) -> RawSource:
    """The cut folder as a RawSource for deepred.data.normalize (rejects carried along)."""
    folder = Path(folder)
    for name in ("truth.parquet", "meta.json", "rejects.parquet"):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: missing (run the cutouts rule first)")
    meta = json.loads((folder / "meta.json").read_text())
    truth = pd.read_parquet(folder / "truth.parquet")
    rejects = pd.read_parquet(folder / "rejects.parquet").to_dict("records")
    shards = sorted((folder / "shards").glob("images_*.npy"))
    if len(shards) != meta["n_shards"]:
        raise DataError(f"{folder / 'shards'}: {len(shards)} shards, meta.json says {meta['n_shards']}")

    groups = truth.groupby("shard").indices

    def chunks(rows: int) -> Iterator[RawChunk]:
        for k, path in enumerate(shards):
            images = np.load(path, allow_pickle=False)
            part = truth.iloc[groups.get(k, [])].sort_values("row")
            if len(part) != len(images):
                raise DataError(f"{path}: {len(images)} cutouts, truth.parquet lists {len(part)} for shard {k}")
            yield RawChunk(truth=part.drop(columns=["shard", "row"]).reset_index(drop=True), images=images,
                           masks=None, origin=str(path))

    return RawSource(
        bands=list(meta["bands"]),
        pixel_scale=float(meta["pixel_scale"]),
        survey=str(meta["survey"]),
        n_objects=int(len(truth)),
        chunks=chunks,
        inputs=[folder / "truth.parquet", folder / "meta.json"],
        meta=meta,
        rejects=rejects,
    )
