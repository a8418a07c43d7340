"""Decoded copies of compressed images (SDSS frames): HDU0 as a memory-mappable .npy beside the cache, its WCS
keywords in a .json, tagged with the SHA-256 of the compressed file it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepred.core.io import atomic_path, write_npy
from deepred.cutouts.base import celestial_wcs

DECODED_DIR = "decoded"
WCS_PREFIXES = ("WCSAXES", "CTYPE", "CRVAL", "CRPIX", "CDELT", "CUNIT", "CD1_", "CD2_", "PC1_", "PC2_", "CROTA",
                "LONPOLE", "LATPOLE", "RADESYS", "RADECSYS", "EQUINOX", "EPOCH", "PV1_", "PV2_", "A_", "B_", "AP_",
                "BP_", "NAXIS")


def decoded_path(root: Path, key: str) -> Path:
    name = key[:-4] if key.endswith(".bz2") else key[:-3] if key.endswith(".gz") else key
    return Path(root) / DECODED_DIR / (name[:-5] if name.endswith(".fits") else name)


def wcs_cards(header) -> dict:
    """Only the WCS keywords of a header (a WCS built from them is ~50x cheaper than from a full SDSS header)."""
    out = {}
    for k in header.keys():
        if k.startswith(WCS_PREFIXES):
            v = header[k]
            out[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def write_decoded(root: Path, key: str, sha256: str, data: np.ndarray, header) -> Path:
    """HDU0 of a compressed file as `<name>.npy` (float32, memory-mappable) + `<name>.json` (its WCS keywords and
    the SHA-256 of the compressed source), both written atomically; returns the .npy path."""
    import json

    base = decoded_path(root, key)
    npy = base.with_name(base.name + ".npy")
    write_npy(npy, np.asarray(data, dtype=np.float32))
    with atomic_path(base.with_name(base.name + ".json")) as tmp:
        tmp.write_text(json.dumps({"source_sha256": sha256, "wcs": wcs_cards(header)}))
    return npy


def read_decoded(root: Path, key: str, sha256: str | None):
    """(memory-mapped image, celestial WCS) of the decoded copy when it came from `sha256`, else None."""
    import json

    from astropy.io import fits

    base = decoded_path(root, key)
    meta, npy = base.with_name(base.name + ".json"), base.with_name(base.name + ".npy")
    if not sha256 or not meta.is_file() or not npy.is_file():
        return None
    try:
        rec = json.loads(meta.read_text())
        if rec.get("source_sha256") != sha256:
            return None
        data = np.load(npy, mmap_mode="r", allow_pickle=False)
        cards = rec["wcs"]
        w = _simple_wcs(cards)
        return data, (w if w is not None else celestial_wcs(fits.Header(cards), npy))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _simple_wcs(c: dict):
    """A 2-D celestial WCS set directly from its keywords (no header parsing: ~20x cheaper), or None when the
    header has distortion terms (SIP, PV) or more axes: the caller then builds it from a full Header."""
    from astropy.wcs import WCS

    if any(k.startswith(("A_", "B_", "AP_", "BP_", "PV")) for k in c) or int(c.get("NAXIS", 2)) != 2:
        return None
    w = WCS(naxis=2)
    w.wcs.ctype = [c["CTYPE1"], c["CTYPE2"]]
    w.wcs.crval = [float(c["CRVAL1"]), float(c["CRVAL2"])]
    w.wcs.crpix = [float(c["CRPIX1"]), float(c["CRPIX2"])]
    if "CD1_1" in c or "CD2_2" in c:
        w.wcs.cd = [[float(c.get("CD1_1", 0.0)), float(c.get("CD1_2", 0.0))],
                    [float(c.get("CD2_1", 0.0)), float(c.get("CD2_2", 0.0))]]
    else:
        w.wcs.cdelt = [float(c.get("CDELT1", 1.0)), float(c.get("CDELT2", 1.0))]
        w.wcs.pc = [[float(c.get("PC1_1", 1.0)), float(c.get("PC1_2", 0.0))],
                    [float(c.get("PC2_1", 0.0)), float(c.get("PC2_2", 1.0))]]
    w.wcs.cunit = [c.get("CUNIT1", "deg"), c.get("CUNIT2", "deg")]
    for key, attr in (("RADESYS", "radesys"), ("RADECSYS", "radesys")):
        if key in c:
            setattr(w.wcs, attr, str(c[key]))
    if "EQUINOX" in c:
        w.wcs.equinox = float(c["EQUINOX"])
    for key, attr in (("LONPOLE", "lonpole"), ("LATPOLE", "latpole")):
        if key in c:
            setattr(w.wcs, attr, float(c[key]))
    w.wcs.set()
    if "NAXIS1" in c and "NAXIS2" in c:
        w.pixel_shape = (int(c["NAXIS1"]), int(c["NAXIS2"]))
    return w
