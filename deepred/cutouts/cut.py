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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.pixels import pixel_problem
from deepred.contracts.processed import DataError
from deepred.core.io import write_json, write_parquet
from deepred.cutouts.providers import FluxScale, ImageRequest, MissingBand, ProviderError, WeightMap, read_decoded
from deepred.cutouts.resample import EdgeError, box_outline, pixel_area, resample, target_wcs
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

REJECT_COLUMNS = ["object_id", "file", "reason", "category", "category_fraction"]


class _ImageCache:
    """LRU of opened images (decoded SDSS frames, memory-mapped tiles), keyed by cache key; each entry is
    (image, WCS, flux factor, input pixel area), a companion's answer (`Provider.read_aux`), or the exception
    that made the file unusable."""

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
        k = (req.key, req.plane, req.band if req.role == "cat" else None)
        if k in self.items:
            self.items.move_to_end(k)
            return self.items[k]
        try:
            if req.role != "sci":
                val = self.provider.read_aux(self.root / req.key, req)
            else:
                image, wcs_in, factor = self._read(req)
                val = (image, wcs_in, factor, pixel_area(wcs_in))
        except (ProviderError, OSError) as exc:
            val = exc  # remembered: every target of this image is rejected with the same reason
        self.items[k] = val
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return val


@dataclass(frozen=True)
class Reject:
    """Why a target has no cutout: the reason, the cache key of the file it is about ("" for the target
    table) and a short category (its share of the targets is logged and written beside each reject)."""

    reason: str
    about: str = ""
    category: str = "other"


@dataclass(frozen=True)
class CutSettings:
    bands: list
    size: int
    pixel_scale: float
    method: str = "bilinear"
    margin: int = 3
    max_zero_fraction: float = 0.01  # exact zeros allowed in a band's footprint (a survey's no-data fill)


def cut_one(target: dict, reqs: dict, cache: _ImageCache, missing: dict,
            cs: CutSettings) -> tuple[np.ndarray | None, Reject | None]:
    """(cutout (bands, size, size), None) or (None, why not)."""
    wout = target_wcs(target["ra"], target["dec"], cs.size, cs.pixel_scale)
    area_out = (cs.pixel_scale / 3600.0) ** 2
    out = np.empty((len(cs.bands), cs.size, cs.size), np.float32)
    for j, b in enumerate(cs.bands):
        req = reqs.get(b)
        if req is None or isinstance(req, str):
            return None, Reject(f"band {b}: no coverage ({req or 'no image'})", "", "no_coverage")
        for r in (req, *req.companions):
            if r.key in missing:
                return None, Reject(f"band {b}: {missing[r.key]}", r.key, "download")
        got = cache.get(req)
        if isinstance(got, MissingBand):
            return None, Reject(f"band {b}: no coverage ({got})", req.key, "no_coverage")
        if isinstance(got, Exception):
            return None, Reject(f"band {b}: unusable image ({got})", req.key, "unusable_image")
        image, wcs_in, factor, area_in = got
        try:
            out[j] = resample(image, wcs_in, wout, cs.size, method=cs.method, margin=cs.margin,
                              area=area_out / area_in) * factor
        except EdgeError as exc:
            return None, Reject(f"band {b}: too close to the image edge ({exc})", req.key, "edge")
        for comp in req.companions:
            scale, why = _companion(cache.get(comp), comp, b, wout, cs.size)
            if why is not None:
                return None, why
            out[j] *= scale
    why = _pixel_reject(out, cs)
    return (out, None) if why is None else (None, why)


def _companion(got, comp: ImageRequest, band: str, wout, size: int) -> tuple[float, Reject | None]:
    """(flux factor, reject or None) from one companion file of a band: a zero-point offset, a weight map
    (zero weight under the footprint: no data) or a flag image (a flag in the central core: masked)."""
    if isinstance(got, Exception):
        return 1.0, Reject(f"band {band}: unusable {comp.role} file ({got})", comp.key, "unusable_image")
    if isinstance(got, FluxScale):
        return got.factor, None
    if isinstance(got, WeightMap):
        box = _box(got, wout, size, size)
        if box is None or not (box > 0).all():
            n = "outside the weight map" if box is None else f"{int((box <= 0).sum())} input pixels"
            return 1.0, Reject(f"band {band}: zero weight under the cutout ({n}: a gap, tile edge or dead area)",
                               comp.key, "zero_weight")
        return 1.0, None
    box = _box(got, wout, size, min(got.core_px, size))
    flagged = box is None or bool((box.astype(np.int64) & got.bits).any())
    if flagged:
        found = "outside the mask" if box is None else f"flags {sorted({int(v) for v in np.unique(box) if int(v) & got.bits})}"
        return 1.0, Reject(f"band {band}: masked at the centre ({found} in the central {got.core_px} px)", comp.key,
                           "masked")
    return 1.0, None


def _box(aux, wout, size: int, core: int) -> np.ndarray | None:
    """The input pixels of a companion map under the central `core` x `core` output pixels (None: off the map)."""
    x, y = box_outline(aux.wcs, wout, size, core)
    x0, x1 = int(np.floor(np.min(x) + 0.5)), int(np.floor(np.max(x) + 0.5)) + 1
    y0, y1 = int(np.floor(np.min(y) + 0.5)), int(np.floor(np.max(y) + 0.5)) + 1
    ny, nx = aux.data.shape
    if x0 < 0 or y0 < 0 or x1 > nx or y1 > ny:
        return None
    return np.asarray(aux.data[y0:y1, x0:x1])


def _pixel_reject(out: np.ndarray, cs: CutSettings) -> Reject | None:
    """The pixel contract (deepred.contracts.pixels) plus the share of exact zeros in each band's footprint."""
    if not np.isfinite(out).all():
        return Reject("non-finite pixels after resampling", "", "non_finite")
    problem = pixel_problem(out, cs.bands)
    if problem is None:
        zeros = (out == 0).reshape(len(cs.bands), -1).mean(axis=1)
        bad = [f"{b} ({z:.1%})" for b, z in zip(cs.bands, zeros) if z > cs.max_zero_fraction]
        if bad:
            problem = (f"exactly 0 over more than {cs.max_zero_fraction:.0%} of the footprint in band(s) "
                       f"{', '.join(bad)}: a survey's no-data fill, not a measured flux")
    return None if problem is None else Reject(problem, "", "no_data_pixels")


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
    cs = CutSettings(bands, size, provider.pixel_scale, method, int(src.get("margin_px", 3)),
                     float(src.get("max_zero_fraction", 0.01)))
    cut = functools.partial(cut_one, cache=cache, missing=missing, cs=cs)
    kept, rejects, n_shards = _cut_in_order(dataset, targets, order, provider, cut, tmp / "shards",
                                            int(ds.get("rows_per_shard", 512)), (cache.root, tpath))
    shares = _reject_shares(rejects, len(targets))
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
        "rejected_by_category": shares,
        "n_shards": n_shards,
        "seconds": round(seconds, 3),
        "images": fetched.get("n_images"),
        "lock": fetched.get("lock"),
    }
    _install(tmp, out_dir, truth, rejects, meta)
    log.info("%s: %d cutouts, %d rejected, %.1f cutouts/s", dataset, len(truth), len(rejects), len(order) / max(seconds, 1e-9))
    for category, share in shares.items():
        log.info("%s: rejected (%s): %d of %d targets (%.1f%%)", dataset, category, share["n"], len(targets),
                 100 * share["fraction"])
    return meta


def _reject_shares(rejects: list[dict], n_targets: int) -> dict:
    """category -> {n, fraction of the targets}; each reject row carries its category's fraction too."""
    counts: dict[str, int] = {}
    for r in rejects:
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    shares = {c: {"n": n, "fraction": round(n / max(n_targets, 1), 6)} for c, n in sorted(counts.items())}
    for r in rejects:
        r["category_fraction"] = shares[r["category"]]["fraction"]
    return shares


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
        image, why = cut(t, provider.requests(t))
        if image is None:
            rejects.append({"object_id": str(ids[i]), "file": str(root / why.about) if why.about else str(tpath),
                            "reason": why.reason, "category": why.category})
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
    write_parquet(tmp / "rejects.parquet", pd.DataFrame(rejects, columns=REJECT_COLUMNS))
    write_json(tmp / "meta.json", meta)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
