"""The `kids_tiles` provider: KiDS DR4 ugri coadd tiles, their weights, masks and zero-point offsets.

What the files are (each fact with its source):

- Naming (https://kids.strw.leidenuniv.nl/DR4/format.php): `KiDS_DR4.0_R.R_D.D_F_TTT.fits`, R.R/D.D the tile
  centre in degrees with one decimal, F the filter (u, g, r, i), TTT the product: `sci` the calibrated stacked
  image, `wei` its weight map, `msk` its flag image (bright-star areas: saturation, spikes, haloes). The
  per-tile multi-band catalogue is `KiDS_DR4.0_R.R_D.D_ugriZYJHKs_cat.fits`. KiDS itself names tiles
  `KIDS_R.R_D.D` (the DR3/DR4 format pages) and, in THELI products, `KIDS_RpR_DpD` / `..._mDpD`: both are
  accepted in the tile list and turned into the file-name form.
- A tile is about 1 deg x 1 deg at 0.2"/px (Kuijken et al. 2019, A&A 625, A2), ~20,000 px a side, ~1.5 GB
  per band: tiles are read memory-mapped, never whole.
- Access (https://kids.strw.leidenuniv.nl/DR4/access.php): the ESO archive serves each file under an archive
  id (ADP.<date>...), the KiDS pages serve catalogues, not images by name. So the tile list carries the links
  (`url_<band>` for `sci`, `url_<band>_wei`, `url_<band>_msk`, `url_cat`), or `base_url` names a mirror
  serving the files by name (`url_template`, default `{base}/{name}`). With neither, the provider refuses.
- Calibration. AB magnitude = -2.5 log10(pixel) + ZP + DMAG_<band>:
  - ZP is `PHOTZP` where the header has it (the ESO Phase-3 science-data-product standard,
    https://www.eso.org/sci/observing/phase3/p3sdpstd.pdf), else the Astro-WISE coadd keyword `ZEROPNT` (0 for
    regridded coadds, whose pixels are scaled to zero point 0), else `provider.zero_point` from the config.
    No DR4 header could be read from here to say which one the released files carry: the first tile fetched
    is checked before any other download, and the run stops, naming the zero-point cards it found, when none
    of the three is there (deepred.cutouts.source.fetch_images).
  - DMAG_U/G/R/I are the DR4 per-tile zero-point offsets, stored in the primary header of the tile's
    multi-band catalogue (read there by KiDS's own analysis code, e.g. the KiDS-Legacy image simulations
    of S.-S. Li, which write GAaP magnitudes as DMAG - 2.5 log10(flux)). `provider.dmag: false` leaves them out.
- Weights and masks. SWarp writes 0, not NaN, into the coadd where the weight is 0 (gaps, tile edges), so
  a cutout there looks like data: a target whose footprint has zero weight in any band, or whose central
  core (`provider.core_px` output pixels) is flagged in the mask, is rejected with the reason. DR4 flag
  values are bit masks; any non-zero flag counts (`provider.mask_bits` narrows it).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd

from deepred.cutouts.base import (
    CalibrationError,
    FlagMap,
    FluxScale,
    ImageRequest,
    Provider,
    ProviderError,
    WeightMap,
    celestial_wcs,
    read_fits_hdu,
    read_fits_header,
)

log = logging.getLogger("deepred.cutouts.kids")

PRODUCTS = ("wei", "msk", "cat")  # companions of each band's `sci` coadd fetched by default
_TILE = re.compile(r"^(\d{1,3}\.\d)_(-?\d{1,2}\.\d)$")
_THELI = re.compile(r"^(\d{1,3})p(\d)_(m?)(\d{1,2})p(\d)$")


def tile_name(raw: str) -> str:
    """`R.R_D.D` from a tile name as KiDS writes it: `R.R_D.D`, `KIDS_R.R_D.D` or THELI's `KIDS_RpR_mDpD`."""
    name = re.sub(r"^kids_", "", str(raw).strip(), flags=re.IGNORECASE)
    m = _THELI.match(name)
    if m:
        name = f"{m[1]}.{m[2]}_{'-' if m[3] else ''}{m[4]}.{m[5]}"
    if not _TILE.match(name):
        raise ProviderError(f"kids_tiles: tile name {raw!r} is not R.R_D.D (e.g. 140.0_-0.5, KIDS_140.0_-0.5)")
    return name


class KiDSTiles(Provider):
    """KiDS DR4 ugri coadd tiles chosen by position, with their companions; see the module docstring."""

    name = "kids_tiles"
    DEFAULT_TEMPLATE = "{base}/{name}"
    NAME = "KiDS_DR4.0_{tile}_{band}_{product}.fits"
    CAT_NAME = "KiDS_DR4.0_{tile}_ugriZYJHKs_cat.fits"

    def __init__(self, cfg, bands, size, pixel_scale, tiles: pd.DataFrame | None = None):
        super().__init__(cfg, bands, size, pixel_scale)
        if tiles is None or not len(tiles):
            raise ProviderError("kids_tiles: no tile list (provider.tiles names a table with tile, ra, dec)")
        self.tile_names = np.array([tile_name(t) for t in tiles["tile"]], dtype=object)
        self.products = [p for p in cfg.get("products", PRODUCTS) if p != "cat" or cfg.get("dmag", True)]
        self.links = _links(tiles, self.tile_names)
        self.base = str(cfg.get("base_url", "")).rstrip("/")
        self._refuse_unreachable(bands)
        self.tile_ra = np.radians(tiles["ra"].to_numpy(float))
        self.tile_dec = np.radians(tiles["dec"].to_numpy(float))
        self.half = float(cfg.get("tile_half_size_deg", 0.5))

    def _refuse_unreachable(self, bands) -> None:
        """Without a mirror (base_url), every file needs its link in the tile list."""
        template = str(self.cfg.get("url_template") or "")
        if self.base or (template and "{base}" not in template):
            return
        cols = [f"url_{b}" for b in bands] + [f"url_{b}_{p}" for b in bands for p in self.products if p != "cat"]
        cols += ["url_cat"] if "cat" in self.products else []
        missing = [c for c in cols if c not in self.links]
        if missing:
            raise ProviderError(
                f"kids_tiles: no base_url and the tile list has no {', '.join(missing)} column(s): the KiDS website "
                "serves catalogues, not images by name; give each file's ESO archive link in the tile list, or the "
                "base_url of a mirror serving KiDS_DR4.0_<tile>_<band>_<sci|wei|msk>.fits")

    def nearest_tile(self, ra: float, dec: float) -> tuple[str | None, float]:
        """(tile, max(|xi|, |eta|) in degrees) of the tile whose centre is nearest in the tangent plane."""
        a, d = math.radians(ra), math.radians(dec)
        cosc = np.sin(self.tile_dec) * math.sin(d) + np.cos(self.tile_dec) * math.cos(d) * np.cos(a - self.tile_ra)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.cos(d) * np.sin(a - self.tile_ra) / cosc
            eta = (np.cos(self.tile_dec) * math.sin(d) - np.sin(self.tile_dec) * math.cos(d) * np.cos(a - self.tile_ra)) / cosc
        dist = np.where(cosc > 0, np.degrees(np.maximum(np.abs(xi), np.abs(eta))), np.inf)
        i = int(np.argmin(dist))
        return (self.tile_names[i] if np.isfinite(dist[i]) else None), float(dist[i])

    def _request(self, tile: str, band: str, product: str, column: str) -> ImageRequest:
        name = (self.CAT_NAME.format(tile=tile) if product == "cat"
                else self.NAME.format(tile=tile, band=band, product=product))
        template = self.cfg.get("url_template") or self.DEFAULT_TEMPLATE
        url = self.links.get(column, {}).get(tile) or template.format(base=self.base, tile=tile, band=band, name=name)
        return ImageRequest(key=f"tiles/{name}", url=url, band=band, role=product)

    def requests(self, target):
        tile, dist = self.nearest_tile(float(target["ra"]), float(target["dec"]))
        if tile is None or dist > self.half + 0.1:
            return {b: f"no KiDS tile within {self.half + 0.1:.2f} deg (nearest {tile} at {dist:.2f} deg)" for b in self.bands}
        out = {}
        for b in self.bands:
            companions = tuple(self._request(tile, b, p, "url_cat" if p == "cat" else f"url_{b}_{p}")
                               for p in self.products)
            out[b] = replace(self._request(tile, b, "sci", f"url_{b}"), companions=companions)
        return out

    # ---------------------------------------------------------------------------------------------- files
    def check(self, path, request):
        role = getattr(request, "role", "sci")
        if role == "cat":  # one catalogue serves every band: fetched once, checked for each band's offset
            header = read_fits_header(path)
            for band in self.bands:
                self.dmag(header, path, band)
            return
        data, header = read_fits_hdu(path)
        if data.ndim != 2:
            raise ProviderError(f"{path}: {data.ndim}-D image, expected a 2-D {role} map")
        celestial_wcs(header, path)
        np.asarray(data[-1])  # touch the last row: a short file fails here
        if role == "sci":
            self.zero_point(header, path)

    def zero_point(self, header, path) -> float:
        """PHOTZP, else ZEROPNT, else provider.zero_point; CalibrationError naming what the header has."""
        for key in ("PHOTZP", "ZEROPNT"):
            if header.get(key) is not None:
                return float(header[key])
        if self.cfg.get("zero_point") is not None:
            return float(self.cfg["zero_point"])
        found = {k: header[k] for k in header if re.search(r"ZP|ZERO|MAGZ|PHOT", k)}
        raise CalibrationError(
            f"{path}: no PHOTZP or ZEROPNT keyword (zero-point-like cards found: {found or 'none'}); cannot put the "
            "tile in nanomaggies. If you know the coadds' zero point, set provider.zero_point")

    def dmag(self, header, path, band: str) -> float:
        key = f"DMAG_{band.upper()}"
        if header.get(key) is None:
            found = sorted(k for k in header if k.startswith("DMAG"))
            raise CalibrationError(f"{path}: no {key} card in the primary header (DMAG cards: {found or 'none'}); "
                                   "set provider.dmag: false to cut without the DR4 per-tile offsets")
        return float(header[key])

    def flux_factor(self, header, path):
        return float(10 ** (-0.4 * (self.zero_point(header, path) - 22.5)))

    def read_aux(self, path, request):
        if request.role == "cat":
            return FluxScale(float(10 ** (-0.4 * self.dmag(read_fits_header(path), path, request.band))))
        data, header = read_fits_hdu(path)
        wcs = celestial_wcs(header, path)
        if request.role == "wei":
            return WeightMap(data, wcs)
        return FlagMap(data, wcs, int(self.cfg.get("mask_bits", -1)), int(self.cfg.get("core_px", 9)))


def _links(tiles: pd.DataFrame, names) -> dict[str, dict[str, str]]:
    """column -> {tile: url} for the tile list's per-file link columns (url_<band>[_wei|_msk], url_cat)."""
    return {c: {t: str(u) for t, u in zip(names, tiles[c]) if isinstance(u, str) and u}
            for c in tiles.columns if str(c).startswith("url_")}
