"""Redshifts for users' own cutouts: input readers, the trained-model adapter and streaming prediction.

The command line (`deepred predict`, deepred/cli.py) is a thin layer over `predict_cutouts`.

Inputs (all yield one `Item` per object, in input order, so memory does not grow with their number):
- a folder of FITS cutouts, either one file per band named `<id>_<band>.fits` (separator `_`, `-` or `.`;
  the header's FILTER/BAND keyword, when it names a band, must agree) or one file per object `<id>.fits`
  holding one 2-D image HDU per band (band from FILTER/BAND or EXTNAME) or one 3-D cube (bands, H, W);
- an NPY cube (N, bands, H, W), band order from `bands=` (default: the model's), read a batch at a time;
- a catalogue (CSV, Parquet or FITS table) with an id column and either a `file` column (one file per
  object) or `file_<band>` columns (one file per band); relative paths are taken from the catalogue's
  folder. The catalogue is read in chunks.

Pixels are expected in calibrated linear flux, as the training data before normalization (the raw images
of data/raw/{dataset}/); they get the scaling (method and per-band softening) recorded in the model's metadata
(deepred.data.normalize.scale_images), so predictions equal the pipeline's for the same pixels.
Objects that cannot be used (not a FITS image, wrong size, NaN pixels, a band missing) are not fatal:
they go to the rejects file with the file and the reason, and the others are written.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepred.data.normalize import SCALINGS, scale_images
from deepred.data.raw import read_rows
from deepred.io import atomic_path, sha256_file, write_json

log = logging.getLogger("deepred.inference")

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
CATALOG_SUFFIXES = (".csv", ".parquet", ".pq")
BAND_KEYWORDS = ("BAND", "FILTER", "FILTNAM", "FILTNAME", "FILTER1")
ID_COLUMNS = ("object_id", "id", "objid", "obj_id", "name")
FILE_COLUMNS = ("file", "path", "filename")
# Filter names recognized as a band suffix of a file name even when the model does not use that band
# (so `obj1_u.fits` next to a g,r,i,z model is an unused band file, not an object called "obj1_u").
COMMON_BANDS = ("u", "g", "r", "i", "z", "y", "j", "h", "k", "ks", "nuv", "fuv", "vis", "w1", "w2")
PIXEL_SCALE_RTOL = 0.02  # relative difference above which a pixel-scale mismatch is reported


class InferenceError(ValueError):
    """Unusable model or input as a whole; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------- models


@dataclass
class Predictor:
    """A trained model ready for raw cutouts: what it expects and a predict function on scaled pixels."""

    model_dir: Path
    kind: str  # neural | hogsvr | ensemble
    name: str
    dataset: str | None
    bands: list[str]
    cutout: int
    pixel_scale: float | None
    scaling: dict  # stats.json's scaling of the training data: method (+ asinh softening per band)
    head: str  # point | pdf
    grid: np.ndarray | None
    meta: dict
    predict_scaled: Callable[[np.ndarray], dict]  # scaled float32 (N,C,H,W) -> {z_pred, ...}
    device: str = "cpu"

    def predict_raw(self, images: np.ndarray) -> dict:
        """Scale raw-flux cutouts as in training, then predict."""
        return self.predict_scaled(scale_images(np.asarray(images, dtype=np.float32), self.scaling))


def available_models(results_dir: str | Path) -> list[str]:
    root = Path(results_dir) / "models"
    if not root.is_dir():
        return []
    return sorted(f"{m.name}/{d.name}" for m in root.iterdir() if m.is_dir() for d in m.iterdir()
                  if d.is_dir() and (d / "model.json").exists())


def resolve_model_dir(spec: str | Path, results_dir: str | Path = "results") -> Path:
    """A model folder given as a path, or as `{model}/{dataset}` under {results_dir}/models/."""
    p = Path(spec)
    candidates = [p, Path(results_dir) / "models" / p]
    for c in candidates:
        if c.is_dir() and (c / "model.json").exists():
            return c
    for c in candidates:
        if c.is_dir():
            raise InferenceError(f"{c}: not a trained model folder (no model.json; did its training job finish?)")
    known = available_models(results_dir)
    raise InferenceError(
        f"model '{spec}' not found: neither a folder nor {Path(results_dir) / 'models' / p}; "
        + (f"models under {results_dir}/models: {', '.join(known)}" if known else
           f"no trained models under {Path(results_dir) / 'models'} (run the pipeline, or pass --results-dir)")
    )


def _read_meta(model_dir: Path) -> dict:
    path = model_dir / "model.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InferenceError(f"{path}: unreadable model metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise InferenceError(f"{path}: expected a JSON object")
    return meta


def _scaling(value, where: str) -> dict:
    """The training data's scaling record, checked: a known method, and asinh's per-band softening."""
    method = value.get("method") if isinstance(value, dict) else None
    if method not in SCALINGS:
        raise InferenceError(f"{where}: scaling {value!r} is not one of {', '.join(SCALINGS)}")
    if method == "asinh" and not value.get("softening"):
        raise InferenceError(f"{where}: asinh scaling without its per-band softening; retrain on current data")
    return value


def _training_stats(meta: dict, model_dir: Path) -> dict:
    """stats.json of the training data, when the model's metadata does not carry what we need."""
    inputs = (meta.get("provenance") or {}).get("inputs") or {}
    for p in inputs:
        if Path(p).name == "stats.json" and Path(p).exists():
            return json.loads(Path(p).read_text())
    return {}


def _kind(model_dir: Path, meta: dict) -> str:
    if meta.get("model") == "hogsvr" or (model_dir / "model.npz").exists():
        return "hogsvr"
    if (model_dir / "model.safetensors").exists():
        return "neural"
    if "members" in meta or str(meta.get("model", "")).startswith("ensemble"):
        return "ensemble"
    raise InferenceError(
        f"{model_dir}: unknown model format (neither model.safetensors, model.npz nor an ensemble's model.json)"
    )


def _auto_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device '{device}' requested but no CUDA GPU is available")
    return device


def _load_neural(model_dir: Path, device: str, batch_size: int):
    from deepred.models.checkpoint import load_trained  # the models area's loader; verifies the SHA-256

    try:
        trained = load_trained(model_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise InferenceError(f"{model_dir}: cannot load the trained model: {exc}") from exc
    if device != "cpu":
        trained.net.to(device)
    return trained.meta, (lambda x: trained.predict(x, batch_size=batch_size))


def _load_hogsvr(model_dir: Path):
    from deepred.hogsvr import HogSVRError, HogSVRModel

    try:
        model = HogSVRModel.load(model_dir)
    except HogSVRError as exc:
        raise InferenceError(str(exc)) from exc
    return lambda x: {"z_pred": model.predict_images(x)}


def _load_ensemble(model_dir: Path, device: str, batch_size: int):
    """deepred.ensemble's model; its members are loaded once here (EnsembleModel.predict reloads them per call)."""
    from deepred.ensemble import load_ensemble
    from deepred.models.checkpoint import load_trained

    try:
        ens = load_ensemble(model_dir)
        members = [load_trained((model_dir / ens.meta["member_dirs"][m]).resolve()) for m in ens.members]
    except (OSError, ValueError, KeyError) as exc:
        raise InferenceError(f"{model_dir}: cannot load the ensemble: {exc}") from exc
    for t in members:
        if device != "cpu":
            t.net.to(device)
        if [t.meta.get("bands"), t.meta.get("cutout")] != [ens.meta.get("bands"), ens.meta.get("cutout")]:
            raise InferenceError(f"{model_dir}: member {t.model_dir} takes bands {t.meta.get('bands')} and "
                                 f"{t.meta.get('cutout')} px, the ensemble {ens.meta.get('bands')} and "
                                 f"{ens.meta.get('cutout')} px")

    def predict(x):
        z = np.stack([t.predict(x, batch_size=batch_size)["z_pred"] for t in members], axis=1)
        return {"z_pred": ens.combine(z)}

    return ens.meta, predict


def load_predictor(spec: str | Path, results_dir: str | Path = "results", device: str | None = "auto",
                   batch_size: int = 256) -> Predictor:
    """Resolve and load a trained model (neural network, HOG+SVR or ensemble) for raw cutouts."""
    model_dir = resolve_model_dir(spec, results_dir)
    meta = _read_meta(model_dir)
    kind = _kind(model_dir, meta)
    device = _auto_device(device) if kind != "hogsvr" else "cpu"
    if kind == "neural":
        meta, fn = _load_neural(model_dir, device, batch_size)
    elif kind == "hogsvr":
        fn = _load_hogsvr(model_dir)
    else:
        meta, fn = _load_ensemble(model_dir, device, batch_size)
    stats = _training_stats(meta, model_dir)
    where = str(model_dir / "model.json")
    for key in ("bands", "cutout"):
        if key not in meta and key not in stats:
            raise InferenceError(f"{where}: no '{key}' recorded; cannot check inputs against the training data")
    scaling = meta.get("scaling", stats.get("scaling"))
    if scaling is None:
        raise InferenceError(f"{where}: no 'scaling' recorded; cannot scale cutouts as in training")
    grid = meta.get("grid")
    head = meta.get("head") or ("pdf" if grid is not None else "point")
    ps = meta.get("pixel_scale", stats.get("pixel_scale"))
    return Predictor(
        model_dir=model_dir,
        kind=kind,
        name=str(meta.get("model", model_dir.parent.name)),
        dataset=meta.get("dataset", stats.get("dataset")),
        bands=[str(b) for b in meta.get("bands", stats.get("bands"))],
        cutout=int(meta.get("cutout", stats.get("cutout"))),
        pixel_scale=None if ps is None else float(ps),
        scaling=_scaling(scaling, where),
        head=head,
        grid=None if grid is None else np.asarray(grid, dtype=np.float64),
        meta=meta,
        predict_scaled=fn,
        device=device,
    )


# ---------------------------------------------------------------------------------------------- bands


def parse_band_map(pairs: Iterable[str] | None) -> dict[str, str]:
    """['HSC-G=g', ...] -> {'hsc-g': 'g'} (header/file values are matched case-insensitively)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InferenceError(f"--band-map '{pair}': expected VALUE=BAND, e.g. HSC-G=g")
        k, v = pair.split("=", 1)
        out[k.strip().lower()] = v.strip()
    return out


def match_band(value, bands: list[str], band_map: dict[str, str] | None = None) -> str | None:
    """The model band a header value or file-name token names, or None.

    'g', 'G', 'g DECam SDSS c0001 4720.0 1520.0' (DECam), 'HSC-G' all give 'g' for bands g,r,i,z:
    an exact match first, then the only band among the value's tokens."""
    if value is None:
        return None
    v = str(value).strip()
    band_map = band_map or {}
    if v.lower() in band_map:
        return band_map[v.lower()]
    lower = {b.lower(): b for b in bands}
    if v.lower() in lower:
        return lower[v.lower()]
    hits = {lower[t] for t in re.split(r"[^A-Za-z0-9]+", v.lower()) if t in lower}
    return hits.pop() if len(hits) == 1 else None


# ---------------------------------------------------------------------------------------------- FITS


def header_pixel_scale(header) -> float | None:
    """Arcsec per pixel from PIXSCALE-like keywords, a CD matrix or CDELT (degrees), else None."""
    for key in ("PIXSCALE", "PIXSCAL1", "PIXSCAL", "SECPIX", "SECPIX1"):
        if key in header:
            try:
                return abs(float(header[key]))
            except (TypeError, ValueError):
                pass
    try:
        if "CD1_1" in header:
            det = header["CD1_1"] * header.get("CD2_2", 0.0) - header.get("CD1_2", 0.0) * header.get("CD2_1", 0.0)
            return math.sqrt(abs(det)) * 3600.0 or None
        if "CDELT1" in header:
            c1, c2 = float(header["CDELT1"]), float(header.get("CDELT2", header["CDELT1"]))
            pc = header.get("PC1_1", 1.0) * header.get("PC2_2", 1.0) - header.get("PC1_2", 0.0) * header.get("PC2_1", 0.0)
            unit = {"deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0}.get(str(header.get("CUNIT1", "deg")).strip(), 3600.0)
            return math.sqrt(abs(c1 * c2 * pc)) * unit or None
    except (TypeError, ValueError):
        return None
    return None


def _header_band(header, bands, band_map):
    for key in BAND_KEYWORDS:
        if key in header:
            b = match_band(header[key], bands, band_map)
            if b is not None:
                return b, f"{key}={header[key]!r}"
    return None, None


class _Reject(Exception):
    """One object cannot be used; the message is the reason in the rejects file."""


def _image_hdus(path: Path):
    """(hdul, [image HDUs with data]) of a FITS file; _Reject when it is not a FITS image."""
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError, TypeError) as exc:
        raise _Reject(f"not a readable FITS file ({exc})") from None
    try:
        imgs = [h for h in hdul if h.is_image and h.data is not None and h.data.size > 0]
    except (OSError, ValueError, TypeError) as exc:
        hdul.close()
        raise _Reject(f"unreadable FITS data ({exc})") from None
    if not imgs:
        kinds = ", ".join(f"{h.name or i} ({type(h).__name__}{'' if h.data is not None else ', no data'})"
                          for i, h in enumerate(hdul))
        hdul.close()
        raise _Reject(f"not a FITS image: no HDU holds image data (HDUs: {kinds})")
    return hdul, imgs


def _cube_band_names(header, n: int) -> list[str] | None:
    for prefix in ("BAND", "FILTER"):
        names = [header.get(f"{prefix}{k}") for k in range(1, n + 1)]
        if all(v is not None for v in names):
            return [str(v) for v in names]
    return None


def read_object_fits(path: Path, bands: list[str], band_order: list[str] | None, band_map: dict):
    """One object's bands from a multi-extension file (2-D HDU per band) or a 3-D cube: ((C,H,W), scale)."""
    hdul, imgs = _image_hdus(path)
    try:
        if len(imgs) == 1 and imgs[0].data.ndim == 3:
            cube = np.asarray(imgs[0].data, dtype=np.float32)
            names = _cube_band_names(imgs[0].header, cube.shape[0]) or band_order
            if names is None:
                if cube.shape[0] != len(bands):
                    raise _Reject(f"3-D cube with {cube.shape[0]} planes and no BAND1..BAND{cube.shape[0]} "
                                  f"keywords; give the plane order with --bands")
                names = bands
            if len(names) != cube.shape[0]:
                raise _Reject(f"3-D cube has {cube.shape[0]} planes but {len(names)} band names ({', '.join(names)})")
            planes = {}
            for name, plane in zip(names, cube):
                b = match_band(name, bands, band_map)
                if b is not None:
                    planes[b] = plane
            scale = header_pixel_scale(imgs[0].header)
        else:
            planes, scale = {}, None
            for k, h in enumerate(imgs):
                if h.data.ndim != 2:
                    raise _Reject(f"HDU {k} ({h.name}) is {h.data.ndim}-D; expected one 2-D image per band")
                b, _ = _header_band(h.header, bands, band_map)
                if b is None and h.name not in ("", "PRIMARY"):
                    b = match_band(h.name, bands, band_map)
                if b is None and band_order is not None and k < len(band_order):
                    b = match_band(band_order[k], bands, band_map)
                if b is None:
                    continue
                if b in planes:
                    raise _Reject(f"band {b} appears twice (HDU {k})")
                planes[b] = np.asarray(h.data, dtype=np.float32)
                scale = scale or header_pixel_scale(h.header)
            if scale is None:
                scale = header_pixel_scale(hdul[0].header)
        missing = [b for b in bands if b not in planes]
        if missing:
            found = ", ".join(sorted(planes)) or "none of the model's bands"
            raise _Reject(f"band(s) {', '.join(missing)} missing (found {found}; bands are read from "
                          f"FILTER/BAND keywords or EXTNAME, or give their order with --bands)")
        return _stack([planes[b] for b in bands]), scale
    finally:
        hdul.close()


def read_band_fits(path: Path, band: str, bands: list[str], band_map: dict):
    """One band of one object: (H, W) float32 and the pixel scale; the header must not name another band."""
    hdul, imgs = _image_hdus(path)
    try:
        h = imgs[0]
        if h.data.ndim != 2:
            raise _Reject(f"image is {h.data.ndim}-D {tuple(h.data.shape)}; a per-band file holds one 2-D image")
        hb, said = _header_band(h.header, bands, band_map)
        if hb is None and h is not hdul[0]:
            hb, said = _header_band(hdul[0].header, bands, band_map)
        if hb is not None and hb != band:
            raise _Reject(f"header {said} names band {hb} but the file name says {band}")
        scale = header_pixel_scale(h.header) or header_pixel_scale(hdul[0].header)
        return np.asarray(h.data, dtype=np.float32), scale
    finally:
        hdul.close()


def _stack(planes: list[np.ndarray]) -> np.ndarray:
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise _Reject(f"bands differ in size: {sorted(shapes)}")
    return np.stack(planes).astype(np.float32, copy=False)


def _strip_fits_suffix(name: str) -> str | None:
    low = name.lower()
    for s in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if low.endswith(s):
            return name[: -len(s)]
    return None


# ---------------------------------------------------------------------------------------------- items


@dataclass
class Item:
    """One object from an input: its pixels in the model's band order, or the reason it was rejected."""

    object_id: str
    file: str
    image: np.ndarray | None = None  # float32 (C, H, W), raw flux
    pixel_scale: float | None = None
    reason: str | None = None


def _item_from(object_id: str, file: str, read: Callable[[], tuple[np.ndarray, float | None]]) -> Item:
    try:
        image, scale = read()
    except _Reject as r:
        return Item(object_id, file, reason=str(r))
    return Item(object_id, file, image=image, pixel_scale=scale)


def _band_suffix(stem: str, bands: list[str], band_map: dict) -> tuple[str, str | None, str | None]:
    """Split `<id><sep><band>` -> (id, model band or None, token); (stem, None, None) without a band suffix."""
    m = re.match(r"^(.+)[_.\-]([A-Za-z0-9]+)$", stem)
    if not m:
        return stem, None, None
    oid, token = m.group(1), m.group(2)
    b = match_band(token, bands, band_map)
    if b is not None and (token.lower() == b.lower() or token.lower() in band_map):
        return oid, b, token
    if token.lower() in COMMON_BANDS or token.lower() in band_map:
        return oid, None, token  # a band file the model does not use
    return stem, None, None


_DIR = "/"  # token marking a per-object subfolder in scan_fits_folder's entries (never a file-name token)


def scan_fits_folder(folder: Path, bands: list[str], band_map: dict) -> list[tuple[str, list]]:
    """[(object id, [(id, band, token, file name), ...]), ...] sorted by id: only names, no pixels."""
    entries = []
    others = 0
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith("."):
                entries.append((e.name, "", _DIR, e.name))  # one object per subfolder, bands from headers
                continue
            stem = _strip_fits_suffix(e.name) if e.is_file() else None
            if stem is None:
                others += not e.name.startswith(".")
                continue
            oid, band, token = _band_suffix(stem, bands, band_map)
            entries.append((oid, band or "", token or "", e.name))
    if others:
        log.info("%s: %d entries that are not FITS files (%s) ignored", folder, others, "/".join(FITS_SUFFIXES))
    if not entries:
        raise InferenceError(f"{folder}: no FITS files ({', '.join(FITS_SUFFIXES)})")
    entries.sort()
    return [(oid, list(group)) for oid, group in itertools.groupby(entries, key=lambda e: e[0])]


def iter_fits_folder(folder: Path, groups: list, bands: list[str], band_order: list[str] | None, band_map: dict,
                     unused: set | None = None) -> Iterator[Item]:
    """Objects of a folder of FITS cutouts (groups from scan_fits_folder), in id order."""
    for oid, group in groups:
        if any(g[2] == _DIR for g in group):
            if len(group) > 1:
                yield Item(oid, str(folder / oid), reason="both a subfolder and FITS files for this id")
            else:
                yield _object_dir_item(oid, folder / oid, bands, band_map, unused)
            continue
        per_band = [g for g in group if g[2]]
        whole = [g for g in group if not g[2]]
        if whole and per_band:
            yield Item(oid, str(folder / whole[0][3]),
                       reason=f"both a per-object file and per-band files ({per_band[0][3]}, ...) for this id")
            continue
        if whole:
            path = folder / whole[0][3]
            yield _item_from(oid, str(path), lambda p=path: read_object_fits(p, bands, band_order, band_map))
            continue
        files = {}
        for _, band, token, name in per_band:
            if not band:
                if unused is not None:
                    unused.add(token)
                continue
            if band in files:
                files[band] = None  # duplicate
            else:
                files[band] = folder / name
        yield _per_band_item(oid, files, bands, band_map, folder)


def _object_dir_item(oid: str, sub: Path, bands: list[str], band_map: dict, unused: set | None) -> Item:
    """A subfolder holding one object's per-band files, any names: the band from FILTER/BAND, else the name."""
    from astropy.io import fits

    files: dict = {}
    for path in sorted(p for p in sub.iterdir() if p.is_file() and _strip_fits_suffix(p.name) is not None):
        band = None
        try:
            with fits.open(path, memmap=False) as hdul:
                for h in hdul:
                    band = _header_band(h.header, bands, band_map)[0]
                    if band or h.is_image and h.header.get("NAXIS", 0) > 0:
                        break
        except (OSError, ValueError, TypeError) as exc:
            return Item(oid, str(path), reason=f"not a readable FITS file ({exc})")
        if band is None:
            stem = _strip_fits_suffix(path.name)
            band = match_band(stem, bands, band_map) or _band_suffix(stem, bands, band_map)[1]
        if band is None:
            if unused is not None and len(unused) < 20:  # a sample for the log, not one entry per object
                unused.add(f"{sub.name}/{path.name}")
            continue
        files[band] = None if band in files else path
    return _per_band_item(oid, files, bands, band_map, sub)


def _per_band_item(oid: str, files: dict, bands: list[str], band_map: dict, where: Path) -> Item:
    dup = [b for b, p in files.items() if p is None]
    if dup:
        return Item(oid, str(where), reason=f"several files for band(s) {', '.join(dup)}")
    missing = [b for b in bands if b not in files]
    if missing:
        have = ", ".join(f"{b} ({Path(p).name})" for b, p in files.items()) or "none"
        return Item(oid, str(where), reason=f"band(s) {', '.join(missing)} missing (have {have})")
    planes, scale = [], None
    for b in bands:
        try:
            plane, s = read_band_fits(Path(files[b]), b, bands, band_map)
        except _Reject as r:
            return Item(oid, str(files[b]), reason=str(r))
        planes.append(plane)
        scale = scale or s
    try:
        return Item(oid, str(files[bands[0]]), image=_stack(planes), pixel_scale=scale)
    except _Reject as r:
        return Item(oid, str(files[bands[0]]), reason=str(r))


def npy_count(path: Path) -> int:
    return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])


def iter_npy(path: Path, bands: list[str], band_order: list[str] | None, band_map: dict,
             ids: Iterator[str] | None = None, chunk: int = 256) -> Iterator[Item]:
    """Rows of an NPY cube (N, bands, H, W), read `chunk` rows at a time with plain file I/O.

    The cube's shape and bands are checked now (InferenceError), the rows are read as the items are."""
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{path}: not a readable NPY array ({exc})") from exc
    if mm.ndim != 4:
        raise InferenceError(f"{path}: array of shape {mm.shape}; expected (N, bands, H, W)")
    order = band_order or bands
    if len(order) != mm.shape[1]:
        raise InferenceError(
            f"{path}: {mm.shape[1]} bands per cutout but the band order has {len(order)} ({', '.join(order)}); "
            "give the cube's band order with --bands"
        )
    idx = {}
    for k, name in enumerate(order):
        b = match_band(name, bands, band_map)
        if b is not None:
            idx[b] = k
    missing = [b for b in bands if b not in idx]
    if missing:
        raise InferenceError(f"{path}: band(s) {', '.join(missing)} missing (cube bands: {', '.join(order)})")
    return _npy_items(path, mm, [idx[b] for b in bands], ids, chunk)


def _npy_items(path: Path, mm: np.ndarray, take: list[int], ids: Iterator[str] | None, chunk: int) -> Iterator[Item]:
    for start in range(0, mm.shape[0], chunk):
        stop = min(start + chunk, mm.shape[0])
        block = read_rows(mm, start, stop)[:, take].astype(np.float32, copy=False)
        for i in range(stop - start):
            oid = next(ids) if ids is not None else str(start + i)
            yield Item(str(oid), f"{path}[{start + i}]", image=block[i])


def read_ids(path: Path) -> Iterator[str]:
    """One object id per line (a header line `object_id`/`id` is skipped)."""
    with open(path) as fh:
        for k, line in enumerate(fh):
            s = line.strip().split(",")[0]
            if k == 0 and s.lower() in ID_COLUMNS:
                continue
            if s:
                yield s


def checked_ids(ids_file: Path, n: int, cube: Path) -> Iterator[str]:
    """The ids of an NPY cube's rows: exactly one per row and unique, or an InferenceError (a short, long or
    repeating list would put predictions under the wrong names)."""
    if not ids_file.is_file():
        raise InferenceError(f"{ids_file}: ids file not found")
    ids = list(read_ids(ids_file))
    if len(ids) != n:
        raise InferenceError(f"{ids_file}: {len(ids)} ids for the {n} cutouts of {cube}; give exactly one id per row")
    seen: set[str] = set()
    dupes = sorted({i for i in ids if i in seen or seen.add(i)})
    if dupes:
        raise InferenceError(f"{ids_file}: {len(dupes)} duplicate id(s), e.g. {', '.join(dupes[:5])}; ids must be unique")
    return iter(ids)


def _catalog_chunks(path: Path, chunk: int) -> Iterator[pd.DataFrame]:
    low = path.name.lower()
    if low.endswith(".csv"):
        yield from pd.read_csv(path, chunksize=chunk, dtype=str, keep_default_na=False)
    elif low.endswith((".parquet", ".pq")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            yield batch.to_pandas()
    else:
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            tables = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
            if not tables:
                raise InferenceError(f"{path}: no table HDU (a FITS catalogue needs a binary table)")
            data = tables[0].data
            for start in range(0, len(data), chunk):
                rows = data[start:start + chunk]
                yield pd.DataFrame({c: _fits_col(rows[c]) for c in tables[0].columns.names})


def _fits_col(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "SU":
        return np.char.strip(arr.astype(str))
    return arr


def catalog_count(path: Path) -> int | None:
    low = path.name.lower()
    if low.endswith((".parquet", ".pq")):
        return pq.ParquetFile(path).metadata.num_rows
    if low.endswith(".csv"):
        with open(path, "rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    return None


def _catalog_layout(columns, bands, band_map, id_column, path) -> tuple[str, str | None, dict]:
    cols = {c.lower(): c for c in columns}
    if id_column:
        if id_column not in columns:
            raise InferenceError(f"{path}: no id column '{id_column}'; columns: {', '.join(columns)}")
        idc = id_column
    else:
        idc = next((cols[c] for c in ID_COLUMNS if c in cols), None)
        if idc is None:
            raise InferenceError(f"{path}: no id column (one of {', '.join(ID_COLUMNS)}, or --id-column); "
                                 f"columns: {', '.join(columns)}")
    filec = next((cols[c] for c in FILE_COLUMNS if c in cols), None)
    per_band = {}
    for c in columns:
        m = re.match(r"^(?:file|path|filename)[_\-](.+)$", c, flags=re.I)
        if m:
            b = match_band(m.group(1), bands, band_map)
            if b is not None:
                per_band[b] = c
    if filec is None and not per_band:
        raise InferenceError(
            f"{path}: no cutout column: need 'file' (one FITS file per object) or 'file_<band>' columns "
            f"({', '.join('file_' + b for b in bands)}); columns: {', '.join(columns)}"
        )
    if filec is None:
        missing = [b for b in bands if b not in per_band]
        if missing:
            raise InferenceError(
                f"{path}: band(s) {', '.join(missing)} missing: no column "
                f"{', '.join('file_' + b for b in missing)} (have {', '.join(per_band.values())})"
            )
    return idc, filec, per_band


def _catalog_columns(path: Path) -> list[str]:
    low = path.name.lower()
    try:
        if low.endswith(".csv"):
            return list(pd.read_csv(path, nrows=0).columns)
        if low.endswith((".parquet", ".pq")):
            return list(pq.ParquetFile(path).schema_arrow.names)
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            tables = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
            if not tables:
                raise InferenceError(f"{path}: no table HDU (a FITS catalogue needs a binary table)")
            return list(tables[0].columns.names)
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as exc:
        if isinstance(exc, InferenceError):
            raise
        raise InferenceError(f"{path}: unreadable catalogue ({exc})") from exc


def iter_catalog(path: Path, bands: list[str], band_order: list[str] | None, band_map: dict,
                 id_column: str | None = None, chunk: int = 1024) -> Iterator[Item]:
    """Objects of a catalogue pointing at FITS cutouts, read `chunk` rows at a time.

    The columns are checked now (InferenceError naming the missing band column), the rows as items are read."""
    layout = _catalog_layout(_catalog_columns(path), bands, band_map, id_column, path)
    return _catalog_items(path, layout, bands, band_order, band_map, chunk)


def _catalog_items(path, layout, bands, band_order, band_map, chunk) -> Iterator[Item]:
    base = path.parent
    idc, filec, per_band = layout
    n = 0
    for df in _catalog_chunks(path, chunk):
        n += len(df)
        for rec in df.to_dict("records"):
            oid = str(rec[idc])
            if filec is not None:
                p = _resolve(base, rec[filec])
                if p is None:
                    yield Item(oid, str(path), reason=f"empty '{filec}' entry in the catalogue")
                    continue
                yield _item_from(oid, str(p), lambda p=p: read_object_fits(p, bands, band_order, band_map))
            else:
                files = {}
                empty = [b for b in bands if _resolve(base, rec[per_band[b]]) is None]
                if empty:
                    yield Item(oid, str(path), reason=f"band(s) {', '.join(empty)} missing: empty "
                               f"{', '.join(per_band[b] for b in empty)} in the catalogue")
                    continue
                files = {b: _resolve(base, rec[per_band[b]]) for b in bands}
                yield _per_band_item(oid, files, bands, band_map, path)
    if n == 0:
        log.warning("%s: the catalogue has no rows", path)


def _resolve(base: Path, value) -> Path | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    p = Path(str(value).strip()).expanduser()
    return p if p.is_absolute() else base / p


def open_input(path: str | Path, bands: list[str], band_order: list[str] | None = None,
               band_map: dict | None = None, id_column: str | None = None, ids_file: str | Path | None = None,
               unused: set | None = None) -> tuple[Iterator[Item], int | None, str]:
    """(items, number of objects when cheap to know, kind) for a folder, NPY cube, catalogue or FITS file."""
    path = Path(path)
    band_map = band_map or {}
    if not path.exists():
        raise InferenceError(f"{path}: input not found")
    if path.is_dir():
        groups = scan_fits_folder(path, bands, band_map)
        return iter_fits_folder(path, groups, bands, band_order, band_map, unused), len(groups), "fits folder"
    low = path.name.lower()
    if low.endswith(".npy"):
        n = npy_count(path)
        ids = checked_ids(Path(ids_file), n, path) if ids_file else None
        return iter_npy(path, bands, band_order, band_map, ids), n, "npy cube"
    if low.endswith(CATALOG_SUFFIXES):
        return iter_catalog(path, bands, band_order, band_map, id_column), catalog_count(path), "catalogue"
    if _strip_fits_suffix(path.name) is not None:
        from astropy.io import fits

        try:
            with fits.open(path, memmap=True) as hdul:
                is_table = any(isinstance(h, (fits.BinTableHDU, fits.TableHDU)) for h in hdul) and not any(
                    h.is_image and h.header.get("NAXIS", 0) > 0 for h in hdul)
        except (OSError, ValueError) as exc:
            raise InferenceError(f"{path}: not a readable FITS file ({exc})") from exc
        if is_table:
            with fits.open(path, memmap=True) as hdul:
                n = next(int(h.header.get("NAXIS2", 0)) for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU)))
            return iter_catalog(path, bands, band_order, band_map, id_column), n, "catalogue"
        oid = _strip_fits_suffix(path.name)
        item = _item_from(oid, str(path), lambda: read_object_fits(path, bands, band_order, band_map))
        return iter([item]), 1, "fits file"
    raise InferenceError(
        f"{path}: unknown input type; give a folder of FITS cutouts, an .npy cube, "
        f"or a catalogue (.csv, .parquet, FITS table)"
    )


# ---------------------------------------------------------------------------------------------- output


class _Writer:
    """Streams result batches to Parquet (one row group per batch) or CSV (appends), atomically."""

    def __init__(self, path: Path, fmt: str, columns: list[str], metadata: dict[str, str]):
        self.path, self.fmt, self.columns, self.n = path, fmt, columns, 0
        self._ctx = atomic_path(path)
        self.tmp = self._ctx.__enter__()
        if fmt == "parquet":
            fields = [pa.field("object_id", pa.string())]
            fields += [pa.field(c, pa.float64()) for c in columns if c not in ("object_id", "pdf")]
            if "pdf" in columns:
                fields.append(pa.field("pdf", pa.list_(pa.float32())))
            self.schema = pa.schema(fields, metadata={k.encode(): v.encode() for k, v in metadata.items()})
            self.pq = pq.ParquetWriter(self.tmp, self.schema)
        else:
            self.fh = open(self.tmp, "w", newline="")
            self.fh.write(",".join(columns) + "\n")

    def write(self, df: pd.DataFrame) -> None:
        self.n += len(df)
        if self.fmt == "parquet":
            self.pq.write_table(pa.Table.from_pandas(df[self.columns], schema=self.schema, preserve_index=False))
        else:
            if "pdf" in df:
                df = df.assign(pdf=[" ".join(f"{v:.6g}" for v in p) for p in df["pdf"]])
            df[self.columns].to_csv(self.fh, header=False, index=False, lineterminator="\n")

    def close(self, ok: bool = True) -> None:
        if self.fmt == "parquet":
            self.pq.close()
        else:
            self.fh.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def output_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    low = path.name.lower()
    if low.endswith(".csv"):
        return "csv"
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    raise InferenceError(f"{path}: cannot tell the output format from the name; use .parquet or .csv, or --format")


def rejects_path_for(out: Path) -> Path:
    name = out.name
    for s in (".parquet", ".pq", ".csv"):
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    return out.with_name(name + ".rejects.csv")


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class Summary:
    n_ok: int = 0
    n_rejected: int = 0
    output: str = ""
    rejects: str = ""
    seconds: float = 0.0
    pixel_scales: dict = field(default_factory=dict)  # mismatched scale -> count

    def as_dict(self) -> dict:
        return {"n_ok": self.n_ok, "n_rejected": self.n_rejected, "output": self.output, "rejects": self.rejects,
                "seconds": round(self.seconds, 3), "pixel_scale_mismatches": self.pixel_scales}


def _check_item(item: Item, cutout: int, bands: list[str], crop: bool) -> Item:
    if item.reason is not None:
        return item
    img = item.image
    h, w = img.shape[-2:]
    if (h, w) != (cutout, cutout):
        if crop and h >= cutout and w >= cutout:
            y0, x0 = (h - cutout) // 2, (w - cutout) // 2
            img = img[:, y0:y0 + cutout, x0:x0 + cutout]
        else:
            hint = " (--crop center-crops larger cutouts)" if h >= cutout and w >= cutout else ""
            item.reason = f"cutout is {h}x{w} px; the model takes {cutout}x{cutout}{hint}"
            item.image = None
            return item
    finite = np.isfinite(img)
    if not finite.all():
        bad = [b for b, ok in zip(bands, finite.reshape(len(bands), -1).all(axis=1)) if not ok]
        item.reason = f"{int((~finite).sum())} non-finite pixels (NaN or inf) in band(s) {', '.join(bad)}"
        item.image = None
        return item
    item.image = np.ascontiguousarray(img, dtype=np.float32)
    return item


def predict_cutouts(predictor: Predictor, items: Iterable[Item], out: str | Path, *, fmt: str | None = None,
                    rejects: str | Path | None = None, with_pdf: bool = False, batch_size: int = 256,
                    total: int | None = None, pixel_scale: float | None = None, crop: bool = False,
                    progress: bool = True, provenance_extra: dict | None = None) -> Summary:
    """Stream items through the model: good ones to `out` (row groups / CSV appends), bad ones to rejects."""
    import time

    from tqdm import tqdm

    from deepred.predict import PDF_GRID_KEY, PDF_SUMMARY  # the pipeline's prediction contract
    from deepred.provenance import provenance

    t0 = time.perf_counter()
    out = Path(out)
    fmt = output_format(out, fmt)
    rejects = Path(rejects) if rejects else rejects_path_for(out)
    pdf_model = predictor.head == "pdf" and predictor.grid is not None
    columns = ["object_id", "z_pred"] + (list(PDF_SUMMARY) if pdf_model else [])
    if with_pdf:
        if not pdf_model:
            raise InferenceError(f"{predictor.model_dir}: --pdf asked, but this model ({predictor.name}) gives "
                                 "point estimates only")
        columns.append("pdf")
    metadata = {"deepred_model": json.dumps({"model_dir": str(predictor.model_dir), "model": predictor.name,
                                             "dataset": predictor.dataset, "bands": predictor.bands})}
    if pdf_model:
        metadata[PDF_GRID_KEY] = json.dumps([float(g) for g in predictor.grid])
    writer = _Writer(out, fmt, columns, metadata)
    rej_ctx = atomic_path(rejects)
    rej_tmp = rej_ctx.__enter__()
    rej_fh = open(rej_tmp, "w", newline="")
    rej_fh.write("object_id,file,reason\n")
    summary = Summary(output=str(out), rejects=str(rejects))
    seen_scale: dict = {}
    ids, images = [], []
    ok = False

    def reject(item: Item):
        summary.n_rejected += 1
        if summary.n_rejected <= 10:
            log.warning("rejected %s (%s): %s", item.object_id, item.file, item.reason)
        elif summary.n_rejected == 11:
            log.warning("more rejects: see %s", rejects)
        pd.DataFrame([[item.object_id, item.file, item.reason]]).to_csv(
            rej_fh, header=False, index=False, lineterminator="\n")

    def flush():
        if not ids:
            return
        res = predictor.predict_raw(np.stack(images))
        df = pd.DataFrame({"object_id": ids, "z_pred": np.asarray(res["z_pred"], dtype=np.float64).reshape(-1)})
        if pdf_model:
            for c in PDF_SUMMARY:
                df[c] = np.asarray(res[c], dtype=np.float64).reshape(-1)
        if with_pdf:
            df["pdf"] = list(np.asarray(res["pdf"], dtype=np.float32))
        writer.write(df)
        summary.n_ok += len(ids)
        ids.clear()
        images.clear()

    def check_scale(item: Item):
        s = pixel_scale if pixel_scale is not None else item.pixel_scale
        ref = predictor.pixel_scale
        if s is None or ref is None:
            if "unknown" not in seen_scale:
                seen_scale["unknown"] = True
                why = ("the model records none" if ref is None else
                       f"{item.file} has no PIXSCALE/CD/CDELT keywords; give --pixel-scale to check it")
                log.info("pixel scale not checked: %s", why)
            return
        if abs(s - ref) > PIXEL_SCALE_RTOL * ref:
            key = f"{s:.4g}"
            if key not in summary.pixel_scales:
                log.warning('pixel scale %.4g"/px (%s) differs from the training data\'s %.4g"/px (%s): '
                            "predictions may be biased; resample the cutouts to the training scale",
                            s, item.file, ref, predictor.dataset)
            summary.pixel_scales[key] = summary.pixel_scales.get(key, 0) + 1

    bar = tqdm(total=total, unit="cutout", disable=not progress, desc=f"{predictor.name} predict", mininterval=1.0)
    try:
        for item in items:
            item = _check_item(item, predictor.cutout, predictor.bands, crop)
            if item.reason is not None:
                reject(item)
            else:
                check_scale(item)
                ids.append(item.object_id)
                images.append(item.image)
                if len(ids) >= batch_size:
                    flush()
            bar.update(1)
        flush()
        ok = True
    finally:
        bar.close()
        rej_fh.close()
        writer.close(ok)
        rej_ctx.__exit__(None, None, None) if ok else rej_ctx.__exit__(RuntimeError, RuntimeError(), None)
    summary.seconds = time.perf_counter() - t0
    weights = predictor.model_dir / ("model.safetensors" if predictor.kind == "neural" else "model.npz")
    prov = provenance(None, [])
    prov.update({
        "model_dir": str(predictor.model_dir),
        "model": predictor.name,
        "trained_on": predictor.dataset,
        "weights_sha256": sha256_file(weights) if weights.exists() else None,
        "summary": summary.as_dict(),
        "pdf_grid": None if not pdf_model else [float(g) for g in predictor.grid],
        **(provenance_extra or {}),
    })
    write_json(out.with_name(out.name + ".provenance.json"), prov)
    return summary
