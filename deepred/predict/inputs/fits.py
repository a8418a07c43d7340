"""FITS cutouts of one object: a file per object (one 2-D HDU per band, or a 3-D cube) or a file per band.

Bands are read from FILTER/BAND-like keywords (deepred.predict.inputs.bands), EXTNAME, or the user's --bands order;
the pixel scale from PIXSCALE-like keywords, a CD matrix or CDELT. A problem with one object is a Reject.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepred.contracts.table_io import FITS_SUFFIXES
from deepred.predict.inputs.bands import header_band, match_band
from deepred.predict.inputs.items import Item, Reject


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


def strip_fits_suffix(name: str) -> str | None:
    """The file name without its FITS suffix (the longest that fits: `x.fits.gz` -> `x`), else None."""
    low = name.lower()
    for s in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if low.endswith(s):
            return name[: -len(s)]
    return None


def image_hdus(path: Path):
    """(hdul, [image HDUs with data]) of a FITS file; Reject when it is not a FITS image."""
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError, TypeError) as exc:
        raise Reject(f"not a readable FITS file ({exc})") from None
    try:
        imgs = [h for h in hdul if h.is_image and h.data is not None and h.data.size > 0]
    except (OSError, ValueError, TypeError) as exc:
        hdul.close()
        raise Reject(f"unreadable FITS data ({exc})") from None
    if not imgs:
        kinds = ", ".join(f"{h.name or i} ({type(h).__name__}{'' if h.data is not None else ', no data'})"
                          for i, h in enumerate(hdul))
        hdul.close()
        raise Reject(f"not a FITS image: no HDU holds image data (HDUs: {kinds})")
    return hdul, imgs


def _cube_band_names(header, n: int) -> list[str] | None:
    for prefix in ("BAND", "FILTER"):
        names = [header.get(f"{prefix}{k}") for k in range(1, n + 1)]
        if all(v is not None for v in names):
            return [str(v) for v in names]
    return None


def _cube_planes(hdu, bands: list[str], band_order: list[str] | None, band_map: dict):
    """{band: plane} of a 3-D cube (bands, H, W), plane names from BANDk/FILTERk or --bands, and its scale."""
    cube = np.asarray(hdu.data, dtype=np.float32)
    names = _cube_band_names(hdu.header, cube.shape[0]) or band_order
    if names is None:
        if cube.shape[0] != len(bands):
            raise Reject(f"3-D cube with {cube.shape[0]} planes and no BAND1..BAND{cube.shape[0]} "
                         f"keywords; give the plane order with --bands")
        names = bands
    if len(names) != cube.shape[0]:
        raise Reject(f"3-D cube has {cube.shape[0]} planes but {len(names)} band names ({', '.join(names)})")
    planes = {}
    for name, plane in zip(names, cube):
        b = match_band(name, bands, band_map)
        if b is not None:
            planes[b] = plane
    return planes, header_pixel_scale(hdu.header)


def _hdu_planes(hdul, imgs: list, bands: list[str], band_order: list[str] | None, band_map: dict):
    """{band: plane} of a multi-extension file (one 2-D HDU per band: keyword, EXTNAME or --bands), and its scale."""
    planes, scale = {}, None
    for k, h in enumerate(imgs):
        if h.data.ndim != 2:
            raise Reject(f"HDU {k} ({h.name}) is {h.data.ndim}-D; expected one 2-D image per band")
        b, _ = header_band(h.header, bands, band_map)
        if b is None and h.name not in ("", "PRIMARY"):
            b = match_band(h.name, bands, band_map)
        if b is None and band_order is not None and k < len(band_order):
            b = match_band(band_order[k], bands, band_map)
        if b is None:
            continue
        if b in planes:
            raise Reject(f"band {b} appears twice (HDU {k})")
        planes[b] = np.asarray(h.data, dtype=np.float32)
        scale = scale or header_pixel_scale(h.header)
    return planes, scale if scale is not None else header_pixel_scale(hdul[0].header)


def read_object_fits(path: Path, bands: list[str], band_order: list[str] | None, band_map: dict):
    """One object's bands from a multi-extension file (2-D HDU per band) or a 3-D cube: ((C,H,W), scale)."""
    hdul, imgs = image_hdus(path)
    try:
        if len(imgs) == 1 and imgs[0].data.ndim == 3:
            planes, scale = _cube_planes(imgs[0], bands, band_order, band_map)
        else:
            planes, scale = _hdu_planes(hdul, imgs, bands, band_order, band_map)
        missing = [b for b in bands if b not in planes]
        if missing:
            found = ", ".join(sorted(planes)) or "none of the model's bands"
            raise Reject(f"band(s) {', '.join(missing)} missing (found {found}; bands are read from "
                         f"FILTER/BAND keywords or EXTNAME, or give their order with --bands)")
        return stack_planes([planes[b] for b in bands]), scale
    finally:
        hdul.close()


def read_band_fits(path: Path, band: str, bands: list[str], band_map: dict):
    """One band of one object: (H, W) float32 and the pixel scale; the header must not name another band."""
    hdul, imgs = image_hdus(path)
    try:
        h = imgs[0]
        if h.data.ndim != 2:
            raise Reject(f"image is {h.data.ndim}-D {tuple(h.data.shape)}; a per-band file holds one 2-D image")
        hb, said = header_band(h.header, bands, band_map)
        if hb is None and h is not hdul[0]:
            hb, said = header_band(hdul[0].header, bands, band_map)
        if hb is not None and hb != band:
            raise Reject(f"header {said} names band {hb} but the file name says {band}")
        scale = header_pixel_scale(h.header) or header_pixel_scale(hdul[0].header)
        return np.asarray(h.data, dtype=np.float32), scale
    finally:
        hdul.close()


def stack_planes(planes: list[np.ndarray]) -> np.ndarray:
    """(C, H, W) float32 of same-size planes; Reject naming the sizes otherwise."""
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise Reject(f"bands differ in size: {sorted(shapes)}")
    return np.stack(planes).astype(np.float32, copy=False)


def per_band_item(oid: str, files: dict, bands: list[str], band_map: dict, where: Path) -> Item:
    """The item of one object from {band: file} (None marks a band given twice); `where` names the object."""
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
        except Reject as r:
            return Item(oid, str(files[b]), reason=str(r))
        planes.append(plane)
        scale = scale or s
    try:
        return Item(oid, str(files[bands[0]]), image=stack_planes(planes), pixel_scale=scale)
    except Reject as r:
        return Item(oid, str(files[bands[0]]), reason=str(r))
