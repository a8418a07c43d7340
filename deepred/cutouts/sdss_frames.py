"""The `sdss_frames` provider: SDSS DR17 calibrated frames (one file per run/camcol/field and band)."""

from __future__ import annotations

from deepred.cutouts.base import ImageRequest, Provider, ProviderError, celestial_wcs, read_fits_hdu


class SDSSFrames(Provider):
    """SDSS DR17 calibrated frames, one file per run/camcol/field and band.

    Data model (https://data.sdss.org/datamodel/files/BOSS_PHOTOOBJ/frames/RERUN/RUN/CAMCOL/frame.html):
    `frame-[ugriz]-[0-9]{6}-[1-6]-[0-9]{4}.fits.bz2` (filter, zero-padded run, camcol, zero-padded field),
    bzip2-compressed; HDU0 is the calibrated, sky-subtracted 2048 x 1489 image in nanomaggies per pixel
    with a TAN WCS in its header (corrected to the asTrans astrometry); HDU1 the calibration vector, HDU2
    the sky, HDU3 the astrometry (asTrans) table: all already applied to HDU0, so only HDU0 is read.
    Path on the DR17 SAS: https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/{run}/{camcol}/ (rerun 301;
    https://www.sdss4.org/dr17/imaging/images/ "Corrected Frames"). The five bands of one field are NOT
    aligned pixel to pixel (each filter crosses the sky at its own time and carries its own WCS), so every
    band is resampled onto the target grid through its own WCS.
    """

    name = "sdss_frames"
    DEFAULT_BASE = "https://data.sdss.org/sas/dr17/eboss/photoObj/frames"
    PATTERN = "{rerun}/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"

    @classmethod
    def columns_for(cls, cfg):
        return [cfg.get("run_column", "run"), cfg.get("camcol_column", "camcol"), cfg.get("field_column", "field")]

    def requests(self, target):
        try:
            run = int(target[self.cfg.get("run_column", "run")])
            camcol = int(target[self.cfg.get("camcol_column", "camcol")])
            field = int(target[self.cfg.get("field_column", "field")])
        except (TypeError, ValueError):
            return {b: "no run/camcol/field in the target table" for b in self.bands}
        if not (1 <= camcol <= 6 and run > 0 and field >= 0):
            return {b: f"run/camcol/field {run}/{camcol}/{field} out of range" for b in self.bands}
        base = str(self.cfg.get("base_url") or self.DEFAULT_BASE).rstrip("/")
        rerun = int(self.cfg.get("rerun", 301))
        out = {}
        for b in self.bands:
            key = self.PATTERN.format(rerun=rerun, run=run, camcol=camcol, field=field, band=b)
            out[b] = ImageRequest(key=key, url=f"{base}/{key}", band=b)
        return out

    # Decompressing a bzip2 frame costs ~0.1 s per MB of image (1-1.5 s for a 2048 x 1489 frame, measured by
    # benchmarks/bench_cutouts.py), far more than cutting it. The check at download decodes it anyway, so
    # its HDU0 is kept decoded (an .npy, memory-mapped when cutting, + its WCS keywords) beside the cache,
    # tagged with the SHA-256 of the .bz2 it came from (source.keep_decoded, default true; 4x the disk).
    decodes = True

    def check(self, path, request):
        data, header = read_fits_hdu(path, hdu_index=0, memmap=False)
        if data.ndim != 2:
            raise ProviderError(f"{path}: HDU0 is {data.ndim}-D, expected the 2-D frame")
        celestial_wcs(header, path)
        return data, header

    def read(self, path, request):
        data, header = read_fits_hdu(path, hdu_index=0, memmap=False)  # already nanomaggies per pixel
        return data, celestial_wcs(header, path), 1.0
