"""The `cutout_service` provider: any URL template answering a FITS image or cube (e.g. the Legacy Surveys viewer)."""

from __future__ import annotations

import math

import numpy as np

from deepred.cutouts.base import ImageRequest, MissingBand, Provider, ProviderError, celestial_wcs, read_fits_hdu

LEGACY_NATIVE_PIXSCALE = 0.262  # arcsec: the Legacy Surveys coadd bricks' pixel (imagine's MapLayer.pixscale)
LEGACY_LAYERS = ("ls-", "decals", "mzls", "dr")  # viewer layer names drawn from those bricks


class CutoutService(Provider):
    """A cutout service by URL template: one request per target answering a FITS image or a 3-D cube.

    Default: the DESI Legacy Surveys viewer's `fits-cutout` endpoint
    (https://www.legacysurvey.org/viewer, documented at https://www.legacysurvey.org/dr10/description/ and
    in the viewer's code, github.com/legacysurvey/imagine map/views.py): `?ra=&dec=&layer=ls-dr10&
    pixscale=0.262&bands=griz&size=N` returns one primary HDU holding a float32 cube (nbands, N, N) with a
    TAN WCS, `BANDS='griz'` and `BAND0..BANDn` naming each plane. What that code does, and how it is read:

    - values are the bricks' pixels Lanczos-interpolated and averaged (`MapLayer.render_into_wcs`,
      `RenderAccumulatorImage`), never rescaled by the requested pixscale: nanomaggies per *native* 0.262"
      pixel at any pixscale. `read` returns the factor (service pixel area / native pixel area) that makes
      them a flux per service pixel; the cube is then resampled onto the target grid like any other image.
      `native_pixscale` (default 0.262 for Legacy Surveys layers, else none) overrides it; null: the
      service's values already are a flux per its pixel;
    - `ls-dr10` is split at Dec 32.375 (`LegacySurveySplitLayer`): DR9-north has only g, r, z and parts of
      the south lack i, but every requested band stays in `BANDS`/`BAND<n>`, drawn as zeros
      (`np.maximum(weight, 1e-18)` with no brick). A plane exactly zero over the target is a `MissingBand`
      (a reject for that target), never data;
    - where no brick touches the cutout, `write_cutout` raises `NoOverlapError`, uncaught: Django answers
      HTTP 500 with its generic page (`<h1>Server Error (500)</h1>`, production has DEBUG = False and no
      500.html; with DEBUG on, a traceback page naming NoOverlapError). `permanent_answer` calls that "no
      data here", a reject at once (the next run asks again); other 5xx answers stay transient.
    """

    name = "cutout_service"
    DEFAULT_TEMPLATE = ("https://www.legacysurvey.org/viewer/fits-cutout?ra={ra:.6f}&dec={dec:.6f}&layer={layer}"
                        "&pixscale={pixscale}&bands={bands}&size={size}")
    NO_DATA_500 = (b"<h1>Server Error (500)</h1>", b"NoOverlapError")  # Django's generic / debug 500 page

    def requests(self, target):
        template = self.cfg.get("url_template") or self.DEFAULT_TEMPLATE
        margin = int(self.cfg.get("margin_px", 8))  # a few extra pixels for the resampling kernel
        url = template.format(ra=float(target["ra"]), dec=float(target["dec"]), layer=self.cfg.get("layer", "ls-dr10"),
                              pixscale=self.cfg.get("pixscale", self.pixel_scale), bands="".join(self.bands),
                              size=self.size + 2 * margin, id=target["object_id"])
        key = f"service/{_safe(str(target['object_id']))}.fits"
        return {b: ImageRequest(key=key, url=url, band=b, plane=i) for i, b in enumerate(self.bands)}

    def native_pixscale(self) -> float | None:
        """Arcsec of the pixel the service's values are per (None: per the service's own pixel)."""
        if "native_pixscale" in self.cfg:
            value = self.cfg["native_pixscale"]
            return float(value) if value else None
        template = self.cfg.get("url_template") or self.DEFAULT_TEMPLATE
        layer = str(self.cfg.get("layer", "ls-dr10"))
        return LEGACY_NATIVE_PIXSCALE if "{layer}" in template and layer.startswith(LEGACY_LAYERS) else None

    def permanent_answer(self, status: int, body: bytes) -> str | None:
        """A reject reason when an HTTP error answer means "no data at this position" (not retried)."""
        if status == 500 and any(marker in body for marker in self.NO_DATA_500):
            return ("no data at this position (HTTP 500 'Server Error (500)': the viewer's cutout view raises "
                    "NoOverlapError where no brick covers the target)")
        return None

    def _planes(self, header, data, path):
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise ProviderError(f"{path}: {data.ndim}-D data, expected a 2-D image or a 3-D cube")
        named = [str(header.get(f"BAND{i}", "")).strip() for i in range(data.shape[0])]
        if all(named):
            order = named
        elif header.get("BANDS") and len(str(header["BANDS"]).strip()) == data.shape[0]:
            order = list(str(header["BANDS"]).strip())
        else:
            order = list(self.bands)[: data.shape[0]]
        return data, order

    def check(self, path, request):
        data, header = read_fits_hdu(path, memmap=False)
        data, order = self._planes(header, data, path)
        if len(order) != data.shape[0]:
            raise ProviderError(f"{path}: {data.shape[0]} planes but bands {order}")
        celestial_wcs(header, path)
        # a band absent from the cube, or drawn as zeros, is not fatal: `read` makes it a reject

    def read(self, path, request):
        data, header = read_fits_hdu(path, memmap=False)
        data, order = self._planes(header, data, path)
        if request.band not in order:
            raise MissingBand(f"{path}: band {request.band} not in the cube (bands {order})")
        plane, wcs = data[order.index(request.band)], celestial_wcs(header, path)
        scale = math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0  # arcsec per service pixel
        if not np.any(self._footprint(plane, scale)):
            raise MissingBand(f"{path}: band {request.band}: no data (plane is all zero over the target: the "
                              "survey has no bricks in this band here)")
        native = self.native_pixscale()
        return plane, wcs, (scale / native) ** 2 if native else 1.0

    def _footprint(self, plane: np.ndarray, scale: float) -> np.ndarray:
        """The central part of a (target-centred) plane that the target grid covers."""
        half = 0.5 * self.size * self.pixel_scale / scale
        cy, cx = (plane.shape[0] - 1) / 2.0, (plane.shape[1] - 1) / 2.0
        y0, x0 = max(0, math.floor(cy - half)), max(0, math.floor(cx - half))
        return plane[y0: math.ceil(cy + half) + 1, x0: math.ceil(cx + half) + 1]


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)
