"""KiDS DR4 tiles as the survey writes them: coadd, weight map, flag image and the multi-band catalogue.

Each fact, and where it comes from (never from our reader):

- File names `KiDS_DR4.0_R.R_D.D_F_TTT.fits`, TTT = `sci` (calibrated stacked image), `wei` (weight frame),
  `msk` (flag image of areas affected by bright stars); the multi-band catalogue per tile
  `KiDS_DR4.0_R.R_D.D_ugriZYJHKs_cat.fits`: the DR4 format page, https://kids.strw.leidenuniv.nl/DR4/format.php
  (naming convention and the product table). KiDS names tiles `KIDS_R.R_D.D` (DR3/DR4 format pages:
  "the tile KIDS_140.0_0.5"); THELI products write `KIDS_140p0_m0p5`.
- 0.2"/px, ~1 deg tiles: Kuijken et al. 2019, A&A 625, A2. (Fixture tiles are a few hundred pixels.)
- Zero point: the ESO Phase-3 standard asks for `PHOTZP` (AB = -2.5 log10(pixel) + PHOTZP;
  https://www.eso.org/sci/observing/phase3/p3sdpstd.pdf); Astro-WISE coadds carry `ZEROPNT`, 0 for regridded
  coadds whose pixels are scaled to zero point 0 (LensTractor's kids.py, as quoted in issue 28). No DR4
  header was available here, so `header_style` writes either form, or neither ("bare"), and the tests make
  the reader cope with the first two and stop on the third.
- `DMAG_U/G/R/I`: per-tile zero-point offsets in the *primary header* of the multi-band catalogue (read
  there by KiDS-Legacy analysis code, lshuns' dmag script: `fits.open(cat)[0].header['DMAG_U']`); magnitudes
  are `DMAG - 2.5 log10(flux)` on top of the image zero point (the same author's simulation comparison),
  so a source of AB magnitude m has pixel sum 10^(-0.4 (m - ZP - DMAG)).
- SWarp writes 0 into the coadd where the weight is 0 (its documented fill for pixels without data), and the
  weight frame holds 0 there: `gaps` writes both.
- Flag images are integer bit masks, non-zero in bright-star areas (DR4 format page); `masks` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from survey_formats import SKY_NOISE, render, tan_wcs

KIDS_BANDS = ("u", "g", "r", "i")
SCALE = 0.2


def kids_tile_name(ra: float, dec: float) -> str:
    return f"{ra:.1f}_{dec:.1f}"


def _sci_header(w: WCS, band: str, name: str, style: str, zp: float) -> fits.Header:
    hdr = w.to_header()
    hdr["FILTER"] = band
    hdr["OBJECT"] = f"KIDS_{name}"
    if style == "eso":
        hdr["PRODCATG"] = "SCIENCE.IMAGE"
        hdr["PHOTZP"] = (zp, "AB mag = -2.5 log10(pixel) + PHOTZP")
    elif style == "astrowise":
        hdr["ZEROPNT"] = (0.0, "regridded coadd: pixels scaled to zero point 0")
    return hdr


def _pixel_scale_of(style: str, zp: float, dmag: float) -> float:
    """Pixel units per nanomaggy: AB = -2.5 log10(pixel) + ZP + DMAG and AB = 22.5 - 2.5 log10(nanomaggies)."""
    zero = {"eso": zp, "astrowise": 0.0}.get(style, zp)
    return float(10 ** (0.4 * (zero + dmag - 22.5)))


def _write_band(folder: Path, name: str, band: str, w: WCS, img: np.ndarray, style: str, zp: float,
                gaps: list, masks: list, size: int) -> None:
    weight = np.ones((size, size), np.float32)
    flags = np.zeros((size, size), np.int16)
    yy, xx = np.mgrid[:size, :size]
    for ra, dec, radius_px in gaps:  # no data: weight 0 and SWarp's 0 in the coadd
        x, y = w.world_to_pixel_values(ra, dec)
        hole = (xx - x) ** 2 + (yy - y) ** 2 <= radius_px**2
        weight[hole], img[hole] = 0.0, 0.0
    for ra, dec, radius_px, value in masks:
        x, y = w.world_to_pixel_values(ra, dec)
        flags[(xx - x) ** 2 + (yy - y) ** 2 <= radius_px**2] |= value
    hdr = _sci_header(w, band, name, style, zp)
    fits.PrimaryHDU(img.astype(np.float32), header=hdr).writeto(folder / f"KiDS_DR4.0_{name}_{band}_sci.fits")
    whdr = w.to_header()
    whdr["PRODCATG"] = "ANCILLARY.WEIGHTMAP"
    fits.PrimaryHDU(weight, header=whdr).writeto(folder / f"KiDS_DR4.0_{name}_{band}_wei.fits")
    mhdr = w.to_header()
    mhdr["PRODCATG"] = "ANCILLARY.MASK"
    fits.PrimaryHDU(flags, header=mhdr).writeto(folder / f"KiDS_DR4.0_{name}_{band}_msk.fits")


def _write_catalogue(folder: Path, name: str, dmag: dict) -> None:
    """The tile's multi-band catalogue: DMAG_<BAND> in the primary header, sources in a binary table."""
    primary = fits.PrimaryHDU()
    for b, v in dmag.items():
        primary.header[f"DMAG_{b.upper()}"] = (v, f"zero-point offset {b}")
    table = fits.BinTableHDU.from_columns([fits.Column(name="ID", format="30A", array=np.array([f"KiDS J{name}"])),
                                           fits.Column(name="MAG_GAAP_r", format="E", array=np.array([20.0]))])
    fits.HDUList([primary, table]).writeto(folder / f"KiDS_DR4.0_{name}_ugriZYJHKs_cat.fits")


def write_kids_dr4(root: str | Path, tiles: list[tuple[float, float]], sources: list[dict], size: int = 400,
                   header_style: str = "eso", zp: float = 30.0, dmag: dict | None = None, gaps=(), masks=(),
                   noise: float = SKY_NOISE, seed: int = 0) -> pd.DataFrame:
    """root/tiles/: per tile and band the sci, wei and msk files, per tile the catalogue; returns the tile
    list (tile as KiDS writes it, `KIDS_R.R_D.D`, ra, dec). `sources` are in nanomaggies; each band is on its
    own slightly shifted and rotated grid. gaps: (ra, dec, radius px); masks: (ra, dec, radius px, flag)."""
    folder = Path(root) / "tiles"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dmag = dict(dmag or {b: 0.0 for b in KIDS_BANDS})
    rows = []
    for ra0, dec0 in tiles:
        name = kids_tile_name(ra0, dec0)
        rows.append({"tile": f"KIDS_{name}", "ra": ra0, "dec": dec0})
        for b in KIDS_BANDS:
            off = rng.uniform(-1.0, 1.0, 2) / 3600.0
            w = tan_wcs(ra0 + off[0], dec0 + off[1], (size, size), SCALE, rng.uniform(-0.3, 0.3))
            img = render(w, (size, size), sources, SCALE, noise, rng) * _pixel_scale_of(header_style, zp, dmag[b])
            _write_band(folder, name, b, w, img, header_style, zp, list(gaps), list(masks), size)
        _write_catalogue(folder, name, dmag)
    return pd.DataFrame(rows)
