"""The `kids_tiles` provider: KiDS DR4 ugri coadd tiles, chosen by position and read memory-mapped."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepred.cutouts.base import ImageRequest, Provider, ProviderError, celestial_wcs, read_fits_hdu


class KiDSTiles(Provider):
    """KiDS DR4 ugri coadd tiles, chosen by position.

    Naming (https://kids.strw.leidenuniv.nl/DR4/format.php): `KiDS_DR4.0_R.R_D.D_F_TTT.fits`, R.R/D.D the
    tile centre in degrees with one decimal, F the filter (u, g, r, i), TTT the product (`sci` for the
    calibrated stacked image, `wei` weights, `msk` masks). A tile is about 1 deg x 1 deg at 0.2"/px (Kuijken
    et al. 2019, A&A 625, A2), ~20,000 px a side, so each band of a tile is ~1.5 GB: tiles are read
    memory-mapped, never whole. Access (the DR4 pages, https://kids.strw.leidenuniv.nl/DR4/): the KiDS
    website and the ESO archive serve the files; the URL is a template in the config (`url_template`, with {tile},
    {band} and {name}). Tile centres come from the tile list (`tiles`, a table with tile name, RA, Dec:
    the DR4 tile list of the access page), and a target takes the tile whose centre is nearest in the
    tangent plane. The ESO archive serves each tile under an archive id (ADP.<date>...), not under its name:
    columns `url_u`, `url_g`, ... in the tile list give each tile's download link and win over the template. Pixel values: ESO science data products carry `PHOTZP` (AB magnitude = -2.5 log10(pixel)
    + PHOTZP; ESO SDP standard, https://www.eso.org/sci/observing/phase3/p3sdpstd.pdf); they are converted
    to nanomaggies (zero point 22.5) with 10^(-0.4 (PHOTZP - 22.5)).
    """

    name = "kids_tiles"
    DEFAULT_TEMPLATE = "{base}/{name}"
    NAME = "KiDS_DR4.0_{tile}_{band}_sci.fits"

    def __init__(self, cfg, bands, size, pixel_scale, tiles: pd.DataFrame | None = None):
        super().__init__(cfg, bands, size, pixel_scale)
        if tiles is None or not len(tiles):
            raise ProviderError("kids_tiles: no tile list (provider.tiles names a table with tile, ra, dec)")
        self.tile_names = tiles["tile"].astype(str).to_numpy()
        # per-tile download links (`url_u`, `url_g`, ...: e.g. the ESO archive's ADP file URLs) win over the template
        self.tile_urls = {b: {t: str(u) for t, u in zip(self.tile_names, tiles[f"url_{b}"]) if isinstance(u, str) and u}
                          for b in bands if f"url_{b}" in tiles.columns}
        self.tile_ra = np.radians(tiles["ra"].to_numpy(float))
        self.tile_dec = np.radians(tiles["dec"].to_numpy(float))
        self.half = float(cfg.get("tile_half_size_deg", 0.5))

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

    def requests(self, target):
        tile, dist = self.nearest_tile(float(target["ra"]), float(target["dec"]))
        if tile is None or dist > self.half + 0.1:
            return {b: f"no KiDS tile within {self.half + 0.1:.2f} deg (nearest {tile} at {dist:.2f} deg)" for b in self.bands}
        template = self.cfg.get("url_template") or self.DEFAULT_TEMPLATE
        base = str(self.cfg.get("base_url", "")).rstrip("/")
        out = {}
        for b in self.bands:
            name = self.NAME.format(tile=tile, band=b)
            url = self.tile_urls.get(b, {}).get(tile) or template.format(base=base, tile=tile, band=b, name=name)
            out[b] = ImageRequest(key=f"tiles/{name}", url=url, band=b)
        return out

    def check(self, path, request):
        data, header = read_fits_hdu(path)
        if data.ndim != 2:
            raise ProviderError(f"{path}: {data.ndim}-D image, expected a 2-D coadd")
        celestial_wcs(header, path)
        self.flux_factor(header, path)

    def flux_factor(self, header, path):
        zp = header.get("PHOTZP")
        if zp is None:
            raise ProviderError(f"{path}: no PHOTZP keyword: cannot put the tile in nanomaggies")
        return float(10 ** (-0.4 * (float(zp) - 22.5)))
