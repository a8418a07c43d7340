"""Redshifted SEDs through survey filters: apparent magnitude = M_r(rest) + DM(z) + K(z), tabulated once.

Galaxy templates are galsim's Coleman-Wu-Weedman SEDs (CWW_{E,Sbc,Scd,Im}_ext); supernovae use a
blackbody (with UV line-blanketing for type Ia). Filter curves come from speclite. The tables hold, per
template, band and redshift, the apparent AB magnitude of an object whose rest-frame absolute magnitude in
SDSS r is 0, so m_b(z) = M_r + table(z) (distance modulus, K-correction and colours in one number).
Distances: astropy FlatLambdaCDM(H0=70, Om0=0.3), as DeepGraviLens.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import speclite.filters
from astropy.cosmology import FlatLambdaCDM

COSMO = FlatLambdaCDM(H0=70.0, Om0=0.3)
GALAXY_TEMPLATES = ("E", "Sbc", "Scd", "Im")
SN_TEMPLATES = ("SN_Ia", "SN_CC")
TEMPLATES = GALAXY_TEMPLATES + SN_TEMPLATES
Z_GRID = np.round(np.arange(0.0, 3.0001, 0.01), 6)  # tabulation grid; lookups interpolate linearly
REST_REFERENCE = "sdss2010-r"  # absolute magnitudes are rest-frame SDSS r
_C_ANGSTROM = 2.99792458e18  # speed of light in Angstrom / s
_WAVE = np.geomspace(600.0, 40000.0, 2500)  # Angstrom (0.17% steps): rest and observed integration grid


@lru_cache(maxsize=None)
def _distance_tables():
    zg = np.concatenate([[0.0], np.geomspace(1e-4, 4.0, 4000)])
    dc = COSMO.comoving_distance(zg).to_value("Mpc")
    return zg, dc


def comoving_distance(z) -> np.ndarray:
    zg, dc = _distance_tables()
    return np.interp(np.asarray(z, dtype=float), zg, dc)


def angular_diameter_distance(z) -> np.ndarray:
    """Mpc."""
    z = np.asarray(z, dtype=float)
    return comoving_distance(z) / (1.0 + z)


def angular_diameter_distance_z1z2(z1, z2) -> np.ndarray:
    """Mpc, flat universe: (D_C(z2) - D_C(z1)) / (1 + z2)."""
    z2 = np.asarray(z2, dtype=float)
    return (comoving_distance(z2) - comoving_distance(z1)) / (1.0 + z2)


def luminosity_distance(z) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    return comoving_distance(z) * (1.0 + z)


def distance_modulus(z) -> np.ndarray:
    return 5.0 * np.log10(luminosity_distance(z) * 1e5)  # (D_L / 10 pc)


def kpc_to_arcsec(kpc, z) -> np.ndarray:
    """Angular size of a physical length: theta = size / D_A(z)."""
    return np.asarray(kpc) / (angular_diameter_distance(z) * 1e3) * 206264.806


def _template_flambda(name: str) -> np.ndarray:
    """Rest-frame f_lambda of a template on _WAVE (arbitrary normalization)."""
    if name in GALAXY_TEMPLATES:
        import galsim  # data files only; imported lazily

        path = os.path.join(galsim.meta_data.share_dir, "SEDs", f"CWW_{name}_ext.sed")
        w, f = np.loadtxt(path, unpack=True)
        return np.interp(_WAVE, w, f, left=0.0, right=0.0)
    temp = {"SN_Ia": 11000.0, "SN_CC": 7500.0}[name]
    x = 1.438777e8 / (_WAVE * temp)  # h c / (lambda k T), lambda in Angstrom
    bb = 1.0 / (_WAVE**5 * np.expm1(np.minimum(x, 700.0)))
    if name == "SN_Ia":  # Ia spectra are strongly line-blanketed blueward of ~3500 A
        bb = bb / (1.0 + (3500.0 / _WAVE) ** 12)
    return bb


@lru_cache(maxsize=None)
def _filter_weights(filter_name: str) -> np.ndarray:
    """Photon-counting AB weights on _WAVE: mag = -2.5 log10(sum(f_lambda * w)) - 48.6 offset folded in."""
    filt = speclite.filters.load_filter(filter_name)
    resp = np.interp(_WAVE, filt.wavelength, filt.response, left=0.0, right=0.0)
    dl = np.gradient(_WAVE)
    # AB: f_nu_eff = int f_lambda R lambda dl / int (c / lambda^2) R lambda dl
    denom = np.sum(_C_ANGSTROM / _WAVE**2 * resp * _WAVE * dl)
    return resp * _WAVE * dl / denom


def ab_mag(wave_obs: np.ndarray, flambda: np.ndarray, filter_name: str) -> np.ndarray:
    """AB magnitudes of spectra f_lambda (erg/s/cm^2/A) given on wave_obs; flambda may be (..., n_wave)."""
    w = _filter_weights(filter_name)
    f = np.stack([np.interp(_WAVE, wave_obs, row, left=0.0, right=0.0) for row in np.atleast_2d(flambda)])
    fnu = f @ w
    return -2.5 * np.log10(np.maximum(fnu, 1e-300)) - 48.6


@lru_cache(maxsize=None)
def magnitude_table(template: str, filter_name: str) -> np.ndarray:
    """m(z) on Z_GRID in `filter_name` for M_r(rest, SDSS r) = 0."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown SED template '{template}'; known: {', '.join(TEMPLATES)}")
    rest = _template_flambda(template)
    # normalize: at 10 pc the rest-frame SDSS r AB magnitude is 0
    m_ref = ab_mag(_WAVE, rest, REST_REFERENCE)[0]
    rest = rest * 10.0 ** (-0.4 * (0.0 - m_ref))
    w = _filter_weights(filter_name)
    # observed f_lambda(lambda) = f_rest(lambda / (1+z)) / (1+z) * (10 pc / D_L)^2
    nz = np.nonzero(w)[0]  # only wavelengths inside the filter matter
    lo, hi = nz[0], nz[-1] + 1
    shifted = np.stack([np.interp(_WAVE[lo:hi] / (1.0 + z), _WAVE, rest, left=0.0, right=0.0) for z in Z_GRID])
    m = -2.5 * np.log10(np.maximum(shifted @ w[lo:hi] / (1.0 + Z_GRID), 1e-300)) - 48.6
    # z = 0 has no distance modulus; start the table at 10 pc-equivalent (never used below z = 0.005)
    return m + distance_modulus(np.maximum(Z_GRID, 1e-3))


def apparent_mag(template: np.ndarray, z: np.ndarray, abs_mag_r: np.ndarray, filter_name: str) -> np.ndarray:
    """Vectorized m_b for arrays of template names, redshifts and rest-frame M_r."""
    template = np.asarray(template)
    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape, dtype=float)
    for t in np.unique(template):
        sel = template == t
        out[sel] = np.interp(z[sel], Z_GRID, magnitude_table(str(t), filter_name))
    return out + np.asarray(abs_mag_r, dtype=float)


def galaxy_mag(sed_type, z, abs_mag_r, filter_name: str) -> np.ndarray:
    """m_b for a continuous SED type t in [0, 3] (0 E, 1 Sbc, 2 Scd, 3 Im): the composite of the two
    neighbouring CWW templates, mixed in flux at fixed rest-frame r (a continuum of colours, not four)."""
    t = np.clip(np.asarray(sed_type, dtype=float), 0.0, 3.0)
    i = np.minimum(np.floor(t).astype(int), 2)
    w = t - i
    z = np.asarray(z, dtype=float)
    m_a = np.empty(z.shape)
    m_b = np.empty(z.shape)
    for k in range(3):
        sel = i == k
        m_a[sel] = np.interp(z[sel], Z_GRID, magnitude_table(GALAXY_TEMPLATES[k], filter_name))
        m_b[sel] = np.interp(z[sel], Z_GRID, magnitude_table(GALAXY_TEMPLATES[k + 1], filter_name))
    flux = (1.0 - w) * 10.0 ** (-0.4 * m_a) + w * 10.0 ** (-0.4 * m_b)
    return -2.5 * np.log10(flux) + np.asarray(abs_mag_r, dtype=float)


def template_name(sed_type) -> np.ndarray:
    """Nearest CWW template name of continuous SED types."""
    return np.array(GALAXY_TEMPLATES)[np.clip(np.rint(np.asarray(sed_type)), 0, 3).astype(int)]
