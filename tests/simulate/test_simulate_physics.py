"""Physics of the simulated surveys: redshift enters the pixels through distances, SEDs and lensing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepred.simulate import draw_catalog, get_preset, lensing, sed
from deepred.simulate.render import Renderer

SDSS_COLOURS = Path(__file__).resolve().parents[3] / "shared" / "data" / "sdss_galaxy_colors.npy"
if not SDSS_COLOURS.exists():
    SDSS_COLOURS = Path("/work/shared/data/sdss_galaxy_colors.npy")


def _noiseless(preset, cat, bands, cutout=45, **zero):
    part = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in cat.items()}
    for comp in zero:  # e.g. src=True: render without the lensed source
        for b in bands:
            part[f"flux_{comp}_{b}"] = np.zeros_like(part[f"flux_{comp}_{b}"])
    return Renderer(get_preset(preset), bands, cutout).render(part, None, noise=False)


def _half_light_radius(img, pix):
    """Radius (arcsec) around the cutout centre enclosing half of the cutout's flux."""
    h = img.shape[-1]
    yy, xx = np.mgrid[:h, :h] - h // 2
    r = np.hypot(xx, yy).ravel()
    order = np.argsort(r)
    out = []
    for im in img.reshape(len(img), -1):
        c = np.cumsum(im[order])
        out.append(r[order][np.searchsorted(c, 0.5 * c[-1])] * pix)
    return np.array(out)


def test_same_galaxy_shrinks_and_fades_with_redshift():
    """One galaxy (fixed luminosity and physical size) placed at increasing z: size and flux fall."""
    cat = draw_catalog("des_deep", 8, 1, ["r"], class_fractions={"no_lens": 1.0})
    z = np.array([0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.1])
    cat["z_lens"] = z
    cat["abs_mag_lens"] = np.full(8, -22.0)
    cat["sed_lens"] = np.zeros(8)
    cat["re_lens"] = sed.kpc_to_arcsec(np.full(8, 8.0), z)  # 8 kpc at every redshift
    cat["n_lens"], cat["q_lens"], cat["psf_scale"] = np.full(8, 4.0), np.ones(8), np.full(8, 0.01)
    cat["x0"] = cat["y0"] = np.zeros(8)
    cat["flux_lens_r"] = 10 ** (-0.4 * (sed.galaxy_mag(cat["sed_lens"], z, -22.0, "decam2014-r") - 22.5))
    model = _noiseless("des_deep", cat, ["r"])["model"][:, 0]
    flux = model.sum(axis=(1, 2))
    rh = _half_light_radius(model, get_preset("des_deep").pixel_scale)
    assert np.all(np.diff(flux) < 0)
    assert np.all(np.diff(rh) <= 1e-9) and rh[0] > 2 * rh[-1]


def test_simulated_sample_median_size_and_flux_fall_with_redshift():
    cat = draw_catalog("lsst_wide", 400, 2, ["r"], class_fractions={"no_lens": 1.0})
    model = _noiseless("lsst_wide", cat, ["r"])["model"][:, 0]
    rh = _half_light_radius(model, 0.2)
    flux = model.sum(axis=(1, 2))
    edges = np.quantile(cat["z_lens"], [0, 0.25, 0.5, 0.75, 1.0])
    idx = np.clip(np.searchsorted(edges, cat["z_lens"], side="right") - 1, 0, 3)
    med_r = [np.median(rh[idx == k]) for k in range(4)]
    med_f = [np.median(flux[idx == k]) for k in range(4)]
    assert np.all(np.diff(med_r) < 0), med_r
    assert np.all(np.diff(med_f) < 0), med_f


def test_colours_redden_with_redshift():
    """An elliptical's g-r reddens as the 4000 A break moves through g into r (k-correction)."""
    z = np.array([0.05, 0.15, 0.3, 0.45])
    gr = sed.galaxy_mag(0.0, z, -21.0, "decam2014-g") - sed.galaxy_mag(0.0, z, -21.0, "decam2014-r")
    assert np.all(np.diff(gr) > 0)


def test_k_correction_table_matches_speclite():
    import astropy.units as u
    import speclite.filters

    rest = sed._template_flambda("Sbc")
    m_ref = sed.ab_mag(sed._WAVE, rest, sed.REST_REFERENCE)[0]
    rest = rest * 10 ** (0.4 * m_ref)  # M_r = 0 at 10 pc, as the tables
    z = 0.7
    obs = rest / (1 + z) * 10 ** (-0.4 * sed.distance_modulus(z))
    filt = speclite.filters.load_filter("decam2014-i")
    expected = filt.get_ab_magnitude(obs * u.erg / u.s / u.cm**2 / u.AA, sed._WAVE * (1 + z) * u.AA)
    table = np.interp(z, sed.Z_GRID, sed.magnitude_table("Sbc", "decam2014-i"))
    assert table == pytest.approx(expected, abs=0.01)


def test_sie_matches_lenstronomy():
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo
    from lenstronomy.LensModel.Profiles.sie import SIE
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    rng = np.random.default_rng(0)
    x, y = rng.uniform(-2, 2, (2, 50))
    e1, e2 = phi_q2_ellipticity(0.7, 0.6)
    ax, ay = SIE().derivatives(x, y, 1.2, e1, e2)
    mx, my, pot = lensing.sie_deflection(x, y, 1.2, 0.6, 0.7)
    np.testing.assert_allclose(mx, ax, atol=1e-6)
    np.testing.assert_allclose(my, ay, atol=1e-6)
    np.testing.assert_allclose(pot, SIE().function(x, y, 1.2, e1, e2), atol=1e-6)
    theta = LensCosmo(0.5, 1.5, FlatLambdaCDM(H0=70, Om0=0.3)).sis_sigma_v2theta_E(250.0)
    assert lensing.einstein_radius(250.0, 0.5, 1.5) == pytest.approx(theta, rel=1e-4)


def test_image_positions_match_lenstronomy():
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    lens = {k: np.array([v]) for k, v in dict(x=0.0, y=0.0, theta_e=1.1, q=0.7, phi=0.4, g1=0.02, g2=-0.01).items()}
    ix, iy, mu, _ = lensing.solve_images(np.array([0.12]), np.array([0.05]), lens)
    lm = LensModel(["SIE", "SHEAR"])
    e1, e2 = phi_q2_ellipticity(0.4, 0.7)
    kw = [{"theta_E": 1.1, "e1": e1, "e2": e2, "center_x": 0, "center_y": 0}, {"gamma1": 0.02, "gamma2": -0.01}]
    lx, ly = LensEquationSolver(lm).image_position_from_source(0.12, 0.05, kw, min_distance=0.02, search_window=5)
    ours = sorted(zip(np.round(ix[0][np.isfinite(ix[0])], 3), np.round(iy[0][np.isfinite(iy[0])], 3)))
    theirs = sorted(zip(np.round(lx, 3), np.round(ly, 3)))
    assert len(ours) == len(theirs) == 4
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    lmu = lm.magnification(lx, ly, kw)
    np.testing.assert_allclose(sorted(np.abs(mu[0][np.isfinite(mu[0])])), sorted(np.abs(lmu)), rtol=1e-2)


def test_lensed_classes_show_arcs_and_multiple_images():
    cat = draw_catalog("des_deep", 120, 4, ["g", "r", "i", "z"],
                       class_fractions={"no_lens": 0.0, "gg_lens": 0.5, "lensed_sn_ia": 0.5, "lensed_sn_cc": 0.0})
    cat["psf_scale"] = np.full(120, 0.05)  # near-perfect seeing: test the lensing geometry, not the PSF
    full = _noiseless("des_deep", cat, list("griz"))
    lens_only = _noiseless("des_deep", cat, list("griz"), src=True, sn=True)
    arcs = (full["model"] - lens_only["model"]).sum(axis=1)  # lensed light only
    pix = get_preset("des_deep").pixel_scale
    yy, xx = (np.mgrid[:45, :45] - 22) * pix
    r = np.hypot(xx[None] - cat["x0"][:, None, None], yy[None] - cat["y0"][:, None, None])
    gg = cat["obj_class"] == "gg_lens"
    # the source sits within 0.7 theta_E of the lens centre, yet its light lands on the Einstein ring:
    # the flux-weighted mean radius of the lensed light is ~theta_E and beyond the source's own offset
    r_mean = (arcs * r).sum(axis=(1, 2)) / arcs.sum(axis=(1, 2))
    ratio = r_mean[gg] / cat["theta_e"][gg]
    offset = np.hypot(cat["beta_x"], cat["beta_y"])[gg] / cat["theta_e"][gg]
    assert 0.8 < np.median(ratio) < 1.4, np.median(ratio)
    assert np.mean(ratio > offset) > 0.9
    # magnification: lensed sources appear brighter than unlensed
    src_flux = cat["flux_src_r"][gg]
    lensed_flux = (full["model"][:, 1] - lens_only["model"][:, 1]).sum(axis=(1, 2))[gg]
    assert np.median(lensed_flux / src_flux) > 2.0
    sn = cat["obj_class"] == "lensed_sn_ia"
    assert np.mean(full["n_images"][sn] >= 2) > 0.8  # multiply imaged supernovae
    # the footprint mask includes the arcs
    arc_pix = arcs > 0.2 * arcs.max(axis=(1, 2), keepdims=True)
    assert (full["masks"][gg][arc_pix[gg]] == 1).mean() > 0.95


@pytest.mark.skipif(not SDSS_COLOURS.exists(), reason="needs /work/shared/data/sdss_galaxy_colors.npy (project data)")
def test_sdss_colour_redshift_relation_matches_real_galaxies():
    """Median g-r and r-i of the sdss preset in redshift bins vs 50,000 real SDSS objects
    (GALAXY, r <= 17.8, z < 0.4). Tolerance: 0.15 mag per bin, in bins with >= 100 real and >= 50 simulated."""
    real = np.load(SDSS_COLOURS, allow_pickle=False)
    real = real[(real["spec_class"] == b"GALAXY") & (real["r"] <= 17.8) & (real["redshift"] < 0.4)]
    cat = draw_catalog("sdss", 3000, 7, ["g", "r", "i"])
    assert np.all(cat["mag_r"] - 2.285 * cat["ebv"] <= 17.8 + 1e-9) and np.all(cat["z_lens"] < 0.4)
    checked = 0
    for lo, hi in [(0.0, 0.05), (0.05, 0.1), (0.1, 0.15), (0.15, 0.2), (0.2, 0.3), (0.3, 0.4)]:
        s = (cat["z_lens"] >= lo) & (cat["z_lens"] < hi)
        rr = (real["redshift"] >= lo) & (real["redshift"] < hi)
        if s.sum() < 50 or rr.sum() < 100:
            continue
        checked += 1
        for a, b in (("g", "r"), ("r", "i")):
            sim = np.median(cat[f"mag_{a}"][s] - cat[f"mag_{b}"][s])
            obs = np.median(real[a][rr] - real[b][rr])
            assert abs(sim - obs) < 0.15, f"z in [{lo},{hi}): median {a}-{b} sim {sim:.3f} vs real {obs:.3f}"
    assert checked >= 4
    # the redshift distribution is main-sample-like too (real median z = 0.083)
    assert abs(np.median(cat["z_lens"]) - np.median(real["redshift"])) < 0.03


@pytest.mark.parametrize("preset", ["des_wide", "sdss"])
def test_point_source_width_is_the_survey_seeing(preset):
    """A nearly point-like galaxy comes out with the preset's seeing (FWHM from surveycodex) in each band;
    with epoch-to-epoch seeing the co-add's width lies between the best and worst epoch."""
    p = get_preset(preset)
    bands = ["g", "r", "i"]
    cat = draw_catalog(preset, 4, 1, bands, neighbours=False)
    cat["re_lens"] = np.full(4, 0.005)
    cat["x0"] = cat["y0"] = np.zeros(4)
    cat["psf_scale"] = np.ones(4)
    cat["seeing_epochs"] = np.ones((4, p.epochs))
    cat["seeing_epochs"][1] = np.linspace(0.8, 1.25, p.epochs)
    model = _noiseless(preset, cat, bands, cutout=45)["model"]
    for j, b in enumerate(bands):
        prof = model[0, j, 22, :]
        above = np.nonzero(prof >= 0.5 * prof.max())[0]
        # FWHM by linear interpolation of the half-maximum crossings
        lo, hi = above[0], above[-1]
        left = lo - (prof[lo] - 0.5 * prof.max()) / (prof[lo] - prof[lo - 1])
        right = hi + (prof[hi] - 0.5 * prof.max()) / (prof[hi] - prof[hi + 1])
        fwhm = (right - left) * p.pixel_scale
        expected = p.bands[b].psf_fwhm * (1.0 if p.psf_kind == "gaussian" else 1.03)  # the wing widens the core
        assert fwhm == pytest.approx(expected, rel=0.1), (b, fwhm, expected)
        if p.epochs > 1:  # peak per unit flux: between the best (0.8x) and worst (1.25x) epoch's
            peak = [model[i, j].max() / model[i, j].sum() for i in (0, 1)]
            assert peak[0] / 1.25**2 < peak[1] < peak[0] / 0.8**2
            assert abs(peak[1] / peak[0] - 1.0) > 0.01  # and the co-add differs from single seeing
