"""Step 4 of the catalogue-driven source (deepred.cutouts.source): cut every target from the cached images.

Targets are visited grouped by image (an LRU cache keeps the few images in use decoded); each band is
resampled onto one TAN grid centred on the target; rejects carry their reason; accepted cutouts are written
a shard at a time.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError
from deepred.core.io import write_json, write_parquet
from deepred.cutouts.providers import ImageRequest, MissingBand, ProviderError, read_decoded
from deepred.cutouts.resample import EdgeError, pixel_area, resample, target_wcs
from deepred.cutouts.targets import (
    OUT,
    SURVEYS,
    _target_dict,
    cache_dir,
    load_targets,
    lock_path,
    make_provider,
    raw_dir,
)
from deepred.fetch.layout import FETCH_STAMP
from deepred.fetch.pins import Lock

log = logging.getLogger("deepred.cutouts")


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
    ds = config["datasets"][dataset]
    src = ds["source"]
    bands, size = list(ds["bands"]), int(ds["cutout"])
    out_dir = Path(out_dir or raw_dir(config, dataset) / OUT)
    fetched = _read_stamp(Path(stamp or raw_dir(config, dataset) / FETCH_STAMP))
    missing = dict(fetched.get("missing") or {})
    targets, tpath = load_targets(config, dataset)
    provider = make_provider(config, dataset)
    method = src.get("interpolation", "bilinear")
    order = _image_order(targets, provider)
    lock = Lock(lock_path(config, dataset)) if provider.decodes and src.get("keep_decoded", True) else None
    cache = _ImageCache(provider, cache_dir(config, dataset), int(src.get("image_cache", 16)), lock)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    t0 = time.monotonic()
    cut = functools.partial(cut_one, cache=cache, missing=missing, bands=bands, size=size,
                            pixel_scale=provider.pixel_scale, method=method, margin=int(src.get("margin_px", 3)))
    kept, rejects, n_shards = _cut_in_order(dataset, targets, order, provider, cut, tmp / "shards",
                                            int(ds.get("rows_per_shard", 512)), (cache.root, tpath))
    truth = _kept_truth(targets, kept)
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
        "n_shards": n_shards,
        "seconds": round(seconds, 3),
        "images": fetched.get("n_images"),
        "lock": fetched.get("lock"),
    }
    _install(tmp, out_dir, truth, rejects, meta)
    log.info("%s: %d cutouts, %d rejected, %.1f cutouts/s", dataset, len(truth), len(rejects), len(order) / max(seconds, 1e-9))
    return meta


def _read_stamp(stamp: Path) -> dict:
    """The fetch stamp (what fetch_images fetched and what it could not); an error when it is missing."""
    if not stamp.is_file():
        raise DataError(f"{stamp}: missing; fetch the images first (rule cutout_images / download_all)")
    return json.loads(stamp.read_text())


def _image_order(targets: pd.DataFrame, provider) -> np.ndarray:
    """Target indices grouped by their first image, so each image is decoded once (stable: ties keep the table
    order). Requests are recomputed per target when cutting (cheap) rather than held for all targets (memory
    flat in N)."""
    pcols = provider.required_columns()
    first = [next((r.key for r in provider.requests(_target_dict(t, pcols)).values() if isinstance(r, ImageRequest)), "")
             for t in targets.itertuples(index=False)]
    return np.argsort(np.asarray(first, dtype=object), kind="stable")


def _cut_in_order(dataset: str, targets: pd.DataFrame, order, provider, cut, shard_dir: Path, rows_per_shard: int,
                  files: tuple[Path, Path]) -> tuple[list, list, int]:
    """Cut the targets in `order` with `cut` (cut_one with its settings), saving full shards into shard_dir.

    Returns (kept: [(target index, shard, row)], rejects: [{object_id, file, reason}], number of shards);
    files = (image cache folder, target table): a reject names the image it is about, else the target table."""
    root, tpath = files
    ids, ra, dec = targets["object_id"].to_numpy(), targets["ra"].to_numpy(float), targets["dec"].to_numpy(float)
    pvals = {c: targets[f"P_{c}"].to_numpy() for c in provider.required_columns()}
    kept, rejects, buf = [], [], []
    k = 0

    def flush():
        nonlocal k, buf
        if buf:
            np.save(shard_dir / f"images_{k:05d}.npy", np.stack(buf), allow_pickle=False)
            k += 1
            buf = []

    for n_done, i in enumerate(order, 1):
        t = {"object_id": ids[i], "ra": ra[i], "dec": dec[i], **{c: v[i] for c, v in pvals.items()}}
        image, reason, about = cut(t, provider.requests(t))
        if image is None:
            rejects.append({"object_id": str(ids[i]), "file": str(root / about) if about else str(tpath),
                            "reason": reason})
        else:
            kept.append((int(i), k, len(buf)))
            buf.append(image)
            if len(buf) == rows_per_shard:
                flush()
        if n_done % 5000 == 0:
            log.info("%s: %d/%d targets cut (%d rejected)", dataset, n_done, len(order), len(rejects))
    flush()
    return kept, rejects, k


def _kept_truth(targets: pd.DataFrame, kept: list) -> pd.DataFrame:
    """One truth row per accepted target, in shard order, with its shard and row (provider columns left out)."""
    truth_cols = [c for c in targets.columns if not c.startswith("P_")]
    idx = [i for i, _, _ in kept]
    truth = targets.iloc[idx][truth_cols].reset_index(drop=True)
    truth["shard"] = np.array([s for _, s, _ in kept], np.int32)
    truth["row"] = np.array([r for _, _, r in kept], np.int32)
    return truth


def _install(tmp: Path, out_dir: Path, truth: pd.DataFrame, rejects: list, meta: dict) -> None:
    """Write truth, rejects and meta beside the shards in tmp, then put tmp in out_dir's place."""
    write_parquet(tmp / "truth.parquet", truth)
    write_parquet(tmp / "rejects.parquet", pd.DataFrame(rejects, columns=["object_id", "file", "reason"]))
    write_json(tmp / "meta.json", meta)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
