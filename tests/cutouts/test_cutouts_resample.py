"""The target grid and the resampling: the fast bilinear path gives reproject_interp's numbers, the anchor-grid
coordinates the full transform's, and every method keeps centres and aperture fluxes (a rotated, rescaled,
offset input; the output in flux per output pixel)."""

from __future__ import annotations

import numpy as np
import pytest
from reproject import reproject_interp
from survey_formats import aperture_flux, centroid, render, tan_wcs

from deepred.cutouts.resample import METHODS, EdgeError, _to_input_pixels, area_ratio, resample, target_wcs

SHAPE, CUT = (200, 260), 48


def _scene(rot=23.0, scale=0.45, kind="point"):
    w = tan_wcs(35.0 + 2 / 3600, -4.0 - 1 / 3600, SHAPE, scale, rot)
    ra, dec = 35.0 + 3.3 / 3600, -4.0 + 5.1 / 3600
    src = [{"ra": ra, "dec": dec, "flux": 400.0, "kind": kind, "r_e": 1.0}]
    return w, render(w, SHAPE, src, scale), ra, dec, src


def test_bilinear_is_reproject_interp_times_the_area_ratio():
    w, img, ra, dec, _ = _scene()
    wout = target_wcs(ra, dec, CUT, 0.396)
    ours = resample(img, w, wout, CUT, method="bilinear")
    ref, _ = reproject_interp((img.astype(np.float64), w), wout, shape_out=(CUT, CUT), order="bilinear")
    assert np.allclose(ours, ref * area_ratio(w, wout), rtol=1e-5, atol=1e-6 * ref.max())


def test_anchor_grid_matches_the_full_transform():
    w, img, ra, dec, _ = _scene()
    wout = target_wcs(ra, dec, 64, 0.396)
    x8, y8 = _to_input_pixels(w, wout, 64)
    x1, y1 = _to_input_pixels(w, wout, 64, step=1)
    assert max(np.abs(x8 - x1).max(), np.abs(y8 - y1).max()) < 1e-5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["point", "sersic"])
def test_every_method_centres_and_conserves_flux(method, kind):
    w, img, ra, dec, src = _scene(kind=kind)
    wout = target_wcs(ra, dec, CUT, 0.396)
    out = resample(img, w, wout, CUT, method=method)
    truth = render(wout, (CUT, CUT), src, 0.396)  # the same sky drawn directly on the output grid
    assert aperture_flux(out, 10) == pytest.approx(aperture_flux(truth, 10), rel=0.01)
    if kind == "point":
        cx, cy = centroid(out)
        assert abs(cx - (CUT - 1) / 2) < 0.1 and abs(cy - (CUT - 1) / 2) < 0.1


def test_edge_and_masked_pixels_raise():
    w, img, ra, dec, _ = _scene()
    corner = w.pixel_to_world_values(5, 5)
    with pytest.raises(EdgeError, match="input pixels"):
        resample(img, w, target_wcs(*corner, CUT, 0.396), CUT)
    img[100:110, 120:140] = np.nan
    centre = w.pixel_to_world_values(130, 105)
    with pytest.raises(EdgeError, match="NaN"):
        resample(img, w, target_wcs(*centre, CUT, 0.396), CUT)
