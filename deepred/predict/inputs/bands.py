"""Which model band a header value, file-name token or user's --band-map entry names."""

from __future__ import annotations

import re
from typing import Iterable

from deepred.predict.inputs.items import InferenceError

BAND_KEYWORDS = ("BAND", "FILTER", "FILTNAM", "FILTNAME", "FILTER1")
# Filter names recognized as a band suffix of a file name even when the model does not use that band
# (so `obj1_u.fits` next to a g,r,i,z model is an unused band file, not an object called "obj1_u").
COMMON_BANDS = ("u", "g", "r", "i", "z", "y", "j", "h", "k", "ks", "nuv", "fuv", "vis", "w1", "w2")


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


def header_band(header, bands: list[str], band_map: dict) -> tuple[str | None, str | None]:
    """(model band, 'KEY=value' that named it) from the first band keyword naming a band; (None, None)."""
    for key in BAND_KEYWORDS:
        if key in header:
            b = match_band(header[key], bands, band_map)
            if b is not None:
                return b, f"{key}={header[key]!r}"
    return None, None


def band_suffix(stem: str, bands: list[str], band_map: dict) -> tuple[str, str | None, str | None]:
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
