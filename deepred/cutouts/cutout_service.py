"""The `cutout_service` provider: any URL template answering a FITS image or cube (e.g. the Legacy Surveys viewer)."""

from __future__ import annotations

from deepred.cutouts.base import ImageRequest, MissingBand, Provider, ProviderError, celestial_wcs, read_fits_hdu


class CutoutService(Provider):
    """A cutout service by URL template: one request per target answering a FITS image or a 3-D cube.

    Default: the DESI Legacy Surveys viewer's `fits-cutout` endpoint
    (https://www.legacysurvey.org/viewer, documented at https://www.legacysurvey.org/dr10/description/ and
    in the viewer's code, github.com/legacysurvey/imagine map/views.py): `?ra=&dec=&layer=ls-dr10&
    pixscale=0.262&bands=griz&size=N` returns one primary HDU holding a float32 cube (nbands, N, N) in
    nanomaggies per pixel with a TAN WCS, `BANDS='griz'` and `BAND0..BANDn` naming each plane.
    The cube is resampled onto the target grid like any other image (a no-op up to rounding when the
    service's grid is already the target grid).
    """

    name = "cutout_service"
    DEFAULT_TEMPLATE = ("https://www.legacysurvey.org/viewer/fits-cutout?ra={ra:.6f}&dec={dec:.6f}&layer={layer}"
                        "&pixscale={pixscale}&bands={bands}&size={size}")

    def requests(self, target):
        template = self.cfg.get("url_template") or self.DEFAULT_TEMPLATE
        margin = int(self.cfg.get("margin_px", 8))  # a few extra pixels for the resampling kernel
        url = template.format(ra=float(target["ra"]), dec=float(target["dec"]), layer=self.cfg.get("layer", "ls-dr10"),
                              pixscale=self.cfg.get("pixscale", self.pixel_scale), bands="".join(self.bands),
                              size=self.size + 2 * margin, id=target["object_id"])
        key = f"service/{_safe(str(target['object_id']))}.fits"
        return {b: ImageRequest(key=key, url=url, band=b, plane=i) for i, b in enumerate(self.bands)}

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
        missing = [b for b in self.bands if b not in order]
        if len(order) != data.shape[0]:
            raise ProviderError(f"{path}: {data.shape[0]} planes but bands {order}")
        celestial_wcs(header, path)
        if missing:
            # not fatal: those bands become rejects for this target
            return

    def read(self, path, request):
        data, header = read_fits_hdu(path, memmap=False)
        data, order = self._planes(header, data, path)
        if request.band not in order:
            raise MissingBand(f"{path}: band {request.band} not in the cube (bands {order})")
        return data[order.index(request.band)], celestial_wcs(header, path), 1.0


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)
