"""Normalization: a RawSource -> the data contract (catalog.parquet, NPY shards, stats.json, rejects).

Streams: objects are validated, scaled and written one shard at a time, so peak memory is a few
shards whatever the dataset size. Splits are assigned per system by a seeded hash of system_id, so
every copy of a system (rotations, mirrors, epochs) lands in the same split.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.pixels import MAX_ABS_PIXEL, pixel_problem
from deepred.contracts.processed import CATALOG_COLUMNS, SPLITS, DataError, shard_name, shard_record
from deepred.contracts.raw import RawChunk, RawSource
from deepred.core.io import write_json, write_parquet
from deepred.core.provenance import provenance

log = logging.getLogger("deepred.normalize")

SCALINGS = ("asinh", "minmax", "none")


def assign_splits(system_ids, fractions: dict, seed: int) -> np.ndarray:
    """Deterministic split per system: a seeded hash of the id mapped to [0, 1) against the fractions."""
    edges = np.cumsum([fractions[s] for s in SPLITS])
    out = np.empty(len(system_ids), dtype=object)
    for i, sid in enumerate(system_ids):
        digest = hashlib.blake2b(f"{seed}:{sid}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "little") / 2**64
        out[i] = SPLITS[min(int(np.searchsorted(edges, u, side="right")), len(SPLITS) - 1)]
    return out


SOFTENING_SAMPLE = 2048  # objects (the first, in source order) used to estimate each band's sky noise
BORDER = 4  # pixels of the cutout frame used as sky


def border_sigma(images: np.ndarray) -> np.ndarray:
    """Per image and band sky noise, 1.4826 * MAD over the cutout's outer frame: shape (n, bands)."""
    frame = np.ones(images.shape[-2:], dtype=bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    sky = images[..., frame]
    med = np.median(sky, axis=-1, keepdims=True)
    return 1.4826 * np.median(np.abs(sky - med), axis=-1)


def estimate_softening(source: RawSource, band_idx: list[int], rows: int) -> list[float]:
    """Asinh softening per band: the median sky noise of the first SOFTENING_SAMPLE objects.

    One constant per band for the whole dataset (Lupton et al. 1999 asinh magnitudes), so the ratio of
    two bands' pixels, the colour, survives scaling; a per-image noise estimate would scramble it.
    """
    sigmas, seen = [], 0
    for chunk in source.chunks(rows):
        images = chunk.images[:, band_idx].astype(np.float64)
        ok = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        sigmas.append(border_sigma(images[ok]))
        seen += len(images)
        if seen >= SOFTENING_SAMPLE:
            break
    sigma = np.median(np.concatenate(sigmas), axis=0) if sigmas else np.zeros(len(band_idx))
    # A noiseless band (MAD 0, e.g. a simulation without noise) falls back to a tiny positive constant.
    return [float(v) if v > 0 else 1e-6 for v in sigma]


def scale_images(images: np.ndarray, scaling: dict) -> np.ndarray:
    """Scale cutouts as stats.json's `scaling` says ({"method": ..., "softening": [per band]}).

    asinh: arcsinh(x / b_band), b the dataset's sky noise per band (linear near the sky, logarithmic in
    bright cores, colours kept). minmax: (x - min) / (max - min) over all bands jointly, per image, as
    DeepGraviLens' published processing. none: unchanged.
    """
    method = scaling.get("method") if isinstance(scaling, dict) else None
    images = np.asarray(images, dtype=np.float32)
    if method == "asinh":
        soft = np.asarray(scaling.get("softening") or [], dtype=np.float32)
        if soft.shape != (images.shape[1],):
            raise ValueError(f"asinh scaling needs one softening per band ({images.shape[1]}), got {soft.tolist()}")
        return np.arcsinh(images / soft[None, :, None, None]).astype(np.float32)
    if method == "minmax":
        lo = images.min(axis=(1, 2, 3), keepdims=True)
        hi = images.max(axis=(1, 2, 3), keepdims=True)
        return ((images - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
    if method == "none":
        return images
    raise ValueError(f"unknown scaling {scaling!r}; known methods: {', '.join(SCALINGS)}")


def unscale_images(images: np.ndarray, scaling: dict) -> np.ndarray:
    """Undo scale_images where it is invertible (asinh, none): back to calibrated flux."""
    method = scaling.get("method")
    if method == "asinh":
        soft = np.asarray(scaling["softening"], dtype=np.float64)
        return (np.sinh(np.asarray(images, dtype=np.float64)) * soft[None, :, None, None]).astype(np.float32)
    if method == "none":
        return np.asarray(images, dtype=np.float32)
    raise ValueError(f"scaling {method!r} is not invertible (per-image minmax loses the flux scale)")


def scaling_for_bands(scaling: dict, bands: list[str], chosen: list[str]) -> dict:
    """The scaling record restricted to `chosen` bands, in their order (per-band softening reindexed)."""
    out = dict(scaling)
    if "softening" in scaling:
        out["softening"] = [scaling["softening"][bands.index(b)] for b in chosen]
    return out


class _ShardSink:
    """Buffers accepted objects and writes full shards into a temporary folder."""

    def __init__(self, folder: Path, rows_per_shard: int, with_masks: bool):
        self.folder, self.rows, self.with_masks = folder, rows_per_shard, with_masks
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.k = 0
        self.manifest: dict[str, dict] = {}  # shard file -> {bytes, sha256}, into stats.json

    def position(self) -> tuple[int, int]:
        """(shard, row) the next object will get."""
        return self.k, len(self.images)

    def add(self, image: np.ndarray, mask: np.ndarray | None):
        self.images.append(image)
        if self.with_masks:
            self.masks.append(mask)
        if len(self.images) == self.rows:
            self.flush()

    def flush(self):
        if not self.images:
            return
        names = [shard_name("images", self.k)] + ([shard_name("masks", self.k)] if self.with_masks else [])
        np.save(self.folder / names[0], np.stack(self.images), allow_pickle=False)
        if self.with_masks:
            np.save(self.folder / names[1], np.stack(self.masks).astype(np.uint8))
        for name in names:
            self.manifest[name] = shard_record(self.folder / name)
        self.images, self.masks = [], []
        self.k += 1


def _band_index(source: RawSource, bands: list[str], origin: str) -> list[int]:
    missing = [b for b in bands if b not in source.bands]
    if missing:
        raise DataError(
            f"{origin}: band(s) {', '.join(missing)} missing; the source has {', '.join(source.bands)}"
        )
    return [source.bands.index(b) for b in bands]


def _check_chunk(chunk: RawChunk, source: RawSource, cutout: int, label: str) -> None:
    """Whole-chunk problems (wrong shapes, missing columns) are never skippable."""
    shape = chunk.images.shape
    if chunk.images.ndim != 4 or shape[1] != len(source.bands) or shape[2:] != (cutout, cutout):
        raise DataError(
            f"{chunk.origin}: images have shape {shape}, expected (n, {len(source.bands)}, {cutout}, {cutout}) "
            f"for bands {source.bands}"
        )
    if len(chunk.truth) != shape[0]:
        raise DataError(f"{chunk.origin}: {shape[0]} images but {len(chunk.truth)} truth rows")
    for col in ("object_id", "system_id", "obj_class", label):
        if col not in chunk.truth.columns:
            raise DataError(f"{chunk.origin}: truth table has no column '{col}'")
    if chunk.masks is not None and chunk.masks.shape != (shape[0], cutout, cutout):
        raise DataError(f"{chunk.origin}: masks have shape {chunk.masks.shape}, expected ({shape[0]}, {cutout}, {cutout})")


class _Normalizer:
    """The streaming pass of `normalize`: screens each chunk's objects, scales them, places them in shards and
    accumulates the catalogue rows, the rejects and the training pixels' per-band moments."""

    def __init__(self, source: RawSource, dataset: str, ds_cfg: dict, tmp: Path, seed: int, scaling: dict,
                 band_idx: list[int]):
        self.source, self.dataset, self.ds_cfg, self.tmp, self.seed = source, dataset, ds_cfg, tmp, seed
        self.scaling, self.band_idx = scaling, band_idx
        self.bands, self.cutout, self.label = list(ds_cfg["bands"]), int(ds_cfg["cutout"]), ds_cfg["label_column"]
        self.lo, self.hi = ds_cfg["label_range"]
        self.skip = ds_cfg.get("on_bad", "error") == "skip"
        self.max_abs_pixel = float(ds_cfg.get("max_abs_pixel", MAX_ABS_PIXEL))
        self.rows_per_shard = int(ds_cfg.get("rows_per_shard", 512))
        self.sink: _ShardSink | None = None
        self.has_masks = None
        self.parts: list[pd.DataFrame] = []
        self.rejects = list(source.rejects)  # the source's own rejects first (e.g. cutout edges)
        self.seen: set[str] = set()
        self.band_sum = np.zeros(len(self.bands))
        self.band_sq = np.zeros(len(self.bands))
        self.n_pix = 0
        self.done = 0

    def screen(self, chunk: RawChunk, images: np.ndarray) -> np.ndarray:
        """Keep-mask of a chunk's objects: a duplicate id, a non-finite pixel or a label out of range stops the
        run naming the object, or (on_bad: skip) moves it to the rejects."""
        labels = pd.to_numeric(chunk.truth[self.label], errors="coerce").to_numpy(dtype=float)
        keep = np.ones(len(chunk.truth), dtype=bool)
        for i, oid in enumerate(chunk.truth["object_id"].astype(str)):
            reason = None
            if oid in self.seen:
                reason = "duplicate object_id"
            elif problem := pixel_problem(images[i], self.bands, self.max_abs_pixel):
                reason = problem
            elif not np.isfinite(labels[i]) or not self.lo <= labels[i] <= self.hi:
                reason = f"label {self.label}={labels[i]} outside [{self.lo}, {self.hi}]"
            if reason:
                if not self.skip:
                    raise DataError(f"{chunk.origin}: object {oid}: {reason}")
                self.rejects.append({"object_id": oid, "file": chunk.origin, "reason": reason})
                keep[i] = False
            else:
                self.seen.add(oid)
        return keep

    def add(self, chunk: RawChunk) -> None:
        _check_chunk(chunk, self.source, self.cutout, self.label)
        if self.sink is None:
            self.has_masks = chunk.masks is not None
            self.sink = _ShardSink(self.tmp, self.rows_per_shard, self.has_masks)
        images = chunk.images[:, self.band_idx]
        keep = self.screen(chunk, images)
        truth = chunk.truth[keep].reset_index(drop=True)
        scaled = scale_images(images[keep], self.scaling)
        masks = chunk.masks[keep] if self.has_masks else None
        splits = assign_splits(truth["system_id"].astype(str).to_numpy(), self.ds_cfg["splits"], self.seed)
        shard_col, row_col = [], []
        for i in range(len(truth)):
            k, r = self.sink.position()
            shard_col.append(k)
            row_col.append(r)
            self.sink.add(scaled[i], None if masks is None else masks[i])
        train = splits == "train"
        if train.any():
            self.band_sum += scaled[train].sum(axis=(0, 2, 3), dtype=np.float64)
            self.band_sq += (scaled[train].astype(np.float64) ** 2).sum(axis=(0, 2, 3))
            self.n_pix += int(train.sum()) * self.cutout * self.cutout
        part = truth.copy()
        part["split"] = splits
        part["shard"] = np.asarray(shard_col, dtype=np.int32)
        part["row"] = np.asarray(row_col, dtype=np.int32)
        part["survey"] = self.source.survey
        if "quality_flag" not in part:
            part["quality_flag"] = 0
        self.parts.append(part)
        self.done += len(images)
        log.info("%s: %d/%d objects normalized", self.dataset, self.done, self.source.n_objects)

    def catalog(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """The catalogue in the contract's dtypes and its split counts; an empty split stops the run."""
        if self.sink is None:
            raise DataError(f"{self.dataset}: the source holds no objects")
        self.sink.flush()
        catalog = pd.concat(self.parts, ignore_index=True)
        for col, dtype in CATALOG_COLUMNS.items():
            catalog[col] = catalog[col].astype(dtype)
        counts = {s: int((catalog["split"] == s).sum()) for s in SPLITS}
        empty = [s for s, n in counts.items() if n == 0]
        if empty:
            raise DataError(
                f"{self.dataset}: split(s) {', '.join(empty)} empty after normalization ({counts}); "
                "add objects or change the split fractions"
            )
        return catalog, counts

    def stats(self, catalog: pd.DataFrame, counts: dict[str, int], config) -> dict:
        mean = self.band_sum / max(self.n_pix, 1)
        std = np.sqrt(np.maximum(self.band_sq / max(self.n_pix, 1) - mean**2, 0))
        train_labels = catalog.loc[catalog["split"] == "train", self.label].to_numpy(dtype=float)
        return {
            "dataset": self.dataset,
            "bands": self.bands,
            "cutout": self.cutout,
            "pixel_scale": self.source.pixel_scale,
            "survey": self.source.survey,
            "label_column": self.label,
            "label_range": [self.lo, self.hi],
            "scaling": self.scaling,
            "band_mean": mean.tolist(),  # of the scaled train pixels
            "band_std": std.tolist(),
            "label_train_median": float(np.median(train_labels)),
            "label_train_min": float(train_labels.min()),
            "label_train_max": float(train_labels.max()),
            "n_objects": int(len(catalog)),
            "n_rejected": len(self.rejects),
            "split_counts": counts,
            "rows_per_shard": self.rows_per_shard,
            "n_shards": self.sink.k,
            "shards": self.sink.manifest,  # size and SHA-256 of every shard: readers and the workflow check them
            "has_masks": bool(self.has_masks),
            "source_meta": self.source.meta,
            "provenance": provenance(config, self.source.inputs),
        }


def _scaling_record(source: RawSource, ds_cfg: dict, band_idx: list[int]) -> dict:
    scaling = {"method": ds_cfg.get("scaling", "asinh"), "per_image": ds_cfg.get("scaling") == "minmax"}
    if scaling["method"] == "asinh":
        scaling["softening"] = estimate_softening(source, band_idx, int(ds_cfg.get("rows_per_shard", 512)))
        scaling["softening_from"] = f"median border-frame sky noise of the first {SOFTENING_SAMPLE} objects"
    return scaling


def normalize(source: RawSource, dataset: str, ds_cfg: dict, out_dir: str | Path, seed: int, config=None) -> dict:
    """Write the data contract for one dataset into out_dir; return the stats dict. Shards are written into a
    temporary folder and the old outputs are replaced only once every object has passed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    band_idx = _band_index(source, list(ds_cfg["bands"]), str(source.inputs[0]) if source.inputs else dataset)
    scaling = _scaling_record(source, ds_cfg, band_idx)
    tmp = out_dir / ".shards.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        run = _Normalizer(source, dataset, ds_cfg, tmp, seed, scaling, band_idx)
        for chunk in source.chunks(run.rows_per_shard):
            run.add(chunk)
        catalog, counts = run.catalog()
        stats = run.stats(catalog, counts, config)
        final = out_dir / "shards"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        write_parquet(out_dir / "rejects.parquet", pd.DataFrame(run.rejects, columns=["object_id", "file", "reason"]))
        write_parquet(out_dir / "catalog.parquet", catalog)
        write_json(out_dir / "stats.json", stats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %d objects in %d shards, splits %s, %d rejected", dataset, len(catalog), run.sink.k, counts,
             len(run.rejects))
    return stats
