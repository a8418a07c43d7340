"""Per-object physical parameters: classes, redshifts, luminosities, sizes, lens masses, supernovae.

All draws are vectorized numpy on one Generator. Sizes are physical (kpc) turned into arcsec through the
angular-diameter distance; luminosities are rest-frame SDSS-r absolute magnitudes (Schechter-like, with
passive brightening Q per unit redshift) turned into fluxes by the SED tables of deepred.simulate.sed.
"""

from __future__ import annotations

import numpy as np

from deepred.simulate import lensing, sed

DGL_CLASSES = ("no_lens", "gg_lens", "lensed_sn_ia", "lensed_sn_cc")
KIDS_CLASSES = ("galaxy", "lens_candidate")
SDSS_CLASSES = ("galaxy",)
DEFAULT_FRACTIONS = {
    "deepgravilens": dict.fromkeys(DGL_CLASSES, 0.25),
    "kids": {"galaxy": 0.5, "lens_candidate": 0.5},
    "sdss": {"galaxy": 1.0},
}
LENSED = ("gg_lens", "lensed_sn_ia", "lensed_sn_cc")

# Field-galaxy luminosity functions in rest SDSS r (H0 = 70): weight, M*, alpha, log10 Re at M* (kpc),
# size-luminosity slope (d log Re / d M), Sersic n range, continuous SED-type range (sed.galaxy_mag).
# Early types follow R ~ L^0.65, late ~ L^0.3
# (Shen et al. 2003); the type weights are tuned so SDSS colours match (tests/simulate/test_simulate_physics.py).
FIELD_TYPES = {
    "E": (0.55, -20.9, -0.9, np.log10(4.0), -0.26, (3.0, 5.0), (0.0, 0.6)),
    "Sbc": (0.27, -21.0, -1.0, np.log10(4.5), -0.12, (1.5, 3.0), (0.6, 1.5)),
    "Scd": (0.13, -20.8, -1.2, np.log10(4.0), -0.12, (0.8, 1.5), (1.5, 2.5)),
    "Im": (0.05, -20.45, -1.4, np.log10(3.0), -0.12, (0.6, 1.2), (2.5, 3.0)),
}
Q_EVOLUTION = 1.0  # mag of passive brightening per unit redshift

# Morphology models of the central and neighbour galaxies. "v1" (the default, bit-for-bit the original): sizes
# depend on the evolution-corrected luminosity M + Q z only, so at fixed M + Q z the size in kpc does not change
# with z. "evolving" adds the size evolution at fixed stellar mass of van der Wel et al. 2014 (ApJ 788, 28,
# 3D-HST+CANDELS, 0 < z < 3): R_eff ~ (1+z)^-1.48 for early types, (1+z)^-0.75 for late types; M + Q z (passive
# evolution removed) stands in for stellar mass. docs/simulator-morphology.md measures what either carries.
MORPHOLOGIES = ("v1", "evolving")
SIZE_EVOLUTION = {"early": 1.48, "late": 0.75}  # van der Wel et al. 2014, abstract and sect. 5
SIZE_EVOLUTION_ZREF = 0.1  # sizes are unchanged here: the size-luminosity relations are SDSS's (Shen et al. 2003)
EARLY_SED_MAX = 0.6  # continuous SED types below this are early types (FIELD_TYPES' E range; lens hosts 0-0.3)


def _beta_range(rng, n, lo, hi, a, b):
    return lo + (hi - lo) * rng.beta(a, b, n)


def _phys_size(rng, abs_mag, z, log_re0, slope, scatter, size_evol=0.0):
    """Circularized half-light radius in arcsec from a size-luminosity relation at redshift z."""
    m_corr = abs_mag + Q_EVOLUTION * z  # evolution-corrected magnitude
    log_re = log_re0 + slope * (m_corr + 21.5) + rng.normal(0.0, scatter, len(z))
    re_kpc = 10.0**log_re * (1.0 + z) ** (-size_evol)
    return sed.kpc_to_arcsec(re_kpc, z), re_kpc


def lens_galaxies(rng, n, z) -> dict:
    """Massive early-type galaxies (the central object of DeepGraviLens-like systems and KiDS candidates)."""
    early = rng.random(n) < 0.85
    template = np.where(early, "E", "Sbc")
    sed_type = np.where(early, rng.uniform(0.0, 0.3, n), rng.uniform(0.6, 1.2, n))
    abs_mag = rng.normal(-22.1, 0.4, n) - Q_EVOLUTION * (z - 0.3)  # lensing favours massive hosts
    re, _ = _phys_size(rng, abs_mag, z, np.log10(4.5), -0.26, 0.12)
    m_corr = abs_mag + Q_EVOLUTION * z
    # Faber-Jackson L ~ sigma^4 (sigma* = 220 km/s at M_r = -21.5), 0.04 dex scatter
    sigma_v = 220.0 * 10.0 ** (-0.1 * (m_corr + 21.5 - Q_EVOLUTION * 0.3) + rng.normal(0.0, 0.04, n))
    q = rng.uniform(0.6, 1.0, n)
    phi = rng.uniform(0.0, np.pi, n)
    return {
        "template_lens": template, "sed_lens": sed_type, "abs_mag_lens": abs_mag, "re_lens": re,
        "n_lens": rng.uniform(3.0, 5.0, n), "q_lens": q, "phi_lens": phi, "sigma_v": sigma_v,
        "q_mass": np.clip(q + rng.normal(0.0, 0.05, n), 0.5, 0.99),
        "phi_mass": phi + rng.normal(0.0, np.radians(10.0), n),
    }


def source_galaxies(rng, n, z, mean_mag=-21.0) -> dict:
    """Star-forming background galaxies (lensed sources and supernova hosts)."""
    sed_type = rng.uniform(1.0, 3.0, n)
    template = sed.template_name(sed_type)
    abs_mag = rng.normal(mean_mag, 0.7, n) - Q_EVOLUTION * (z - 0.3)
    re, _ = _phys_size(rng, abs_mag, z, np.log10(3.5), -0.12, 0.18, size_evol=0.7)
    return {
        "template_src": template, "sed_src": sed_type, "abs_mag_src": abs_mag, "re_src": np.maximum(re, 0.03),
        "n_src": rng.uniform(0.7, 1.5, n), "q_src": rng.uniform(0.3, 1.0, n), "phi_src": rng.uniform(0, np.pi, n),
    }


def field_galaxies(rng, n, z_max, mag_limit, limit_filter, m_faint=-15.0, z_min=0.01) -> dict:
    """A flux-limited field sample (SDSS main-sample-like, KiDS-bright-like), m(limit band) <= mag_limit, z < z_max.

    (type, z) are drawn from type weight x dV/dz x the luminosity-function integral brighter than the
    flux limit at z, then M from that type's luminosity function truncated there; the limit uses the most
    permissive SED of each type's range, and the few that then miss it with their own SED are redrawn.
    """
    zg = np.linspace(z_min, z_max, 400)
    dvdz = sed.comoving_distance(zg) ** 2 / np.sqrt(0.3 * (1 + zg) ** 3 + 0.7)
    names = list(FIELD_TYPES)
    mgrid = np.linspace(-26.0, m_faint, 1200)
    weights, cdfs, mlims = [], [], []
    for t in names:
        phi_w, m_star, alpha = FIELD_TYPES[t][:3]
        x = 10.0 ** (-0.4 * (mgrid - m_star))
        cdf = np.cumsum(x ** (alpha + 1.0) * np.exp(-x))  # Schechter in magnitudes, cumulative from bright
        # faintest M still inside the limit at z (evolution-corrected, M + Q z), for the type's bluest/reddest end
        m_lim = Q_EVOLUTION * zg + mag_limit - np.minimum(
            *(sed.galaxy_mag(np.full(zg.shape, st), zg, 0.0, limit_filter) for st in FIELD_TYPES[t][6])
        )
        weights.append(phi_w * dvdz * np.interp(np.minimum(m_lim, m_faint), mgrid, cdf))
        cdfs.append(cdf)
        mlims.append(m_lim)
    w = np.stack(weights).ravel()
    w /= w.sum()
    dz = zg[1] - zg[0]
    parts = []
    need = n
    while need > 0:
        m = int(need * 1.3) + 16
        t_idx, z_idx = np.divmod(rng.choice(w.size, m, p=w), zg.size)
        z = np.clip(zg[z_idx] + rng.uniform(-0.5, 0.5, m) * dz, z_min, z_max - 1e-6)
        abs_mag = np.empty(m)
        sed_type = np.empty(m)
        for k, t in enumerate(names):
            sel = t_idx == k
            top = np.interp(np.minimum(np.interp(z[sel], zg, mlims[k]), m_faint), mgrid, cdfs[k])
            abs_mag[sel] = np.interp(rng.random(int(sel.sum())) * top, cdfs[k], mgrid)
            sed_type[sel] = rng.uniform(*FIELD_TYPES[t][6], int(sel.sum()))
        abs_mag -= Q_EVOLUTION * z
        ok = np.nonzero(sed.galaxy_mag(sed_type, z, abs_mag, limit_filter) <= mag_limit)[0][:need]
        parts.append((t_idx[ok], z[ok], abs_mag[ok], sed_type[ok]))
        need -= len(ok)
    t_idx, z, abs_mag, sed_type = (np.concatenate(x) for x in zip(*parts))
    template = np.array(names)[t_idx]
    re = np.empty(n)
    nser = np.empty(n)
    q = np.empty(n)
    for name, (_, _, _, log_re0, slope, (n_lo, n_hi), _) in FIELD_TYPES.items():
        sel = template == name
        k = int(sel.sum())
        re[sel] = _phys_size(rng, abs_mag[sel], z[sel], log_re0, slope, 0.15)[0]
        nser[sel] = rng.uniform(n_lo, n_hi, k)
        q[sel] = rng.uniform(0.6, 1.0, k) if name == "E" else rng.uniform(0.25, 1.0, k)
    return {
        "z_lens": z, "template_lens": template, "sed_lens": sed_type, "abs_mag_lens": abs_mag, "re_lens": re,
        "n_lens": nser, "q_lens": q, "phi_lens": rng.uniform(0.0, np.pi, n),
    }


MAX_NEIGHBOURS = 3


def neighbour_density(mag_limit: float) -> float:
    """Galaxies per arcmin^2 brighter than r = mag_limit (deep-field counts: ~55 at r < 24, slope 0.35)."""
    return 55.0 * 10.0 ** (0.35 * (mag_limit - 24.0))


def neighbours(rng, n: int, preset, cutout: int, r_filter: str) -> dict:
    """Unrelated field galaxies in each cutout (Poisson number, uniform positions away from the centre).

    Arrays are (n, MAX_NEIGHBOURS); absent slots have nb_flux_scale 0. They are not part of the footprint mask.
    """
    half = 0.5 * cutout * preset.pixel_scale  # arcsec
    lam = neighbour_density(preset.neighbour_mag_limit) * (2 * half / 60.0) ** 2
    count = np.minimum(rng.poisson(lam, n), MAX_NEIGHBOURS)
    k = n * MAX_NEIGHBOURS
    gal = field_galaxies(rng, k, z_max=2.5, mag_limit=preset.neighbour_mag_limit, limit_filter=r_filter)
    # positions: uniform in the cutout, at least min(2.5", half/2) from the central object
    r_min = min(2.5, 0.5 * half)
    x = rng.uniform(-half, half, k)
    y = rng.uniform(-half, half, k)
    close = np.hypot(x, y) < r_min
    while close.any():
        x[close] = rng.uniform(-half, half, int(close.sum()))
        y[close] = rng.uniform(-half, half, int(close.sum()))
        close = np.hypot(x, y) < r_min
    present = np.arange(MAX_NEIGHBOURS)[None, :] < count[:, None]
    out = {f"nb_{key}": v.reshape(n, MAX_NEIGHBOURS) for key, v in gal.items() if key != "template_lens"}
    out.update(nb_x=x.reshape(n, MAX_NEIGHBOURS), nb_y=y.reshape(n, MAX_NEIGHBOURS), nb_present=present,
               n_neighbours=count)
    return out


def _lens_z(rng, n, population):
    if population == "kids":  # KiDS lens candidates: LRGs, median z ~ 0.35
        return _beta_range(rng, n, 0.1, 0.75, 2.0, 3.0)
    return _beta_range(rng, n, 0.1, 0.75, 3.0, 2.0)  # DeepGraviLens lens plane: 0.10-0.75, median ~0.5


def draw_systems(rng, n: int, population: str, fractions: dict, preset) -> dict:
    """All per-object parameters of one dataset, as a dict of arrays of length n.

    The steps below draw from `rng` in a fixed order: reordering them changes every dataset."""
    obj_class = _draw_classes(rng, n, fractions)
    p: dict = {"obj_class": obj_class}
    nan = np.full(n, np.nan)
    _add_central_objects(rng, p, n, population)
    # lensing configuration (lensed classes; KiDS candidates are lenses 70% of the time)
    if population == "kids":
        is_lens = (obj_class == "lens_candidate") & (rng.random(n) < 0.7)
    else:
        is_lens = np.isin(obj_class, LENSED)
    is_sn = np.isin(obj_class, ("lensed_sn_ia", "lensed_sn_cc"))
    _add_sources(rng, p, n, is_lens, is_sn)
    _add_lens_geometry(rng, p, n)
    _add_supernovae(rng, p, n, is_sn, preset)
    # centring jitter (pixels -> arcsec) and per-system seeing of the co-add
    p["x0"] = rng.uniform(-0.3, 0.3, n) * preset.pixel_scale
    p["y0"] = rng.uniform(-0.3, 0.3, n) * preset.pixel_scale
    p["psf_scale"] = np.exp(rng.normal(0.0, preset.seeing_scatter, n))
    # epoch-to-epoch seeing around the system's median: the mean co-add's PSF is the mean of the epochs' PSFs
    p["seeing_epochs"] = np.exp(rng.normal(0.0, 0.12 if preset.epochs > 1 else 0.0, (n, preset.epochs)))
    for k in ("z_source", "sn_x", "sn_y", "sn_abs_mag", "sn_t_peak"):
        p.setdefault(k, nan)
    return p


def _draw_classes(rng, n: int, fractions: dict) -> np.ndarray:
    """Exact class counts (the remainder to the largest class), in random order."""
    names = list(fractions)
    probs = np.array([fractions[k] for k in names], dtype=float)
    counts = np.floor(probs / probs.sum() * n).astype(int)
    counts[np.argmax(probs)] += n - counts.sum()
    return rng.permutation(np.repeat(np.array(names), counts))


def _add_central_objects(rng, p: dict, n: int, population: str) -> None:
    """The central galaxy: an SDSS-like field galaxy, or a lens galaxy (KiDS: field galaxies for class galaxy)."""
    if population == "sdss":
        p.update(field_galaxies(rng, n, z_max=0.4, mag_limit=17.8, limit_filter="sdss2010-r"))
    else:
        z_lens = _lens_z(rng, n, population)
        p["z_lens"] = z_lens
        p.update(lens_galaxies(rng, n, z_lens))
        if population == "kids":  # ordinary galaxies: a KiDS-bright-like flux-limited field sample
            gal = p["obj_class"] == "galaxy"
            field = field_galaxies(rng, int(gal.sum()), z_max=1.0, mag_limit=20.5, limit_filter="sdss2010-r")
            for k, v in field.items():
                p[k][gal] = v


def _add_sources(rng, p: dict, n: int, is_lens: np.ndarray, is_sn: np.ndarray) -> None:
    """Source redshifts and galaxies (SN hosts fainter), lens mass defaults and Einstein radii."""
    # sources sit behind the lens (z_s >= z_l + 0.1): drawn given z_l, so the lens-plane (label) redshift
    # distribution is the same in every class; galaxies U(0.27, 1.61), supernovae U(0.3, 1.2) where possible
    zl = p["z_lens"]
    lo_g, lo_s = np.maximum(0.27, zl + 0.1), np.maximum(0.3, zl + 0.1)
    z_src = np.where(is_lens, lo_g + (1.61 - lo_g) * rng.random(n), np.nan)
    z_src = np.where(is_sn, lo_s + (np.maximum(1.2, lo_s + 0.1) - lo_s) * rng.random(n), z_src)
    p["z_source"] = z_src
    p["is_lens"] = is_lens
    src = source_galaxies(rng, n, np.where(is_lens, z_src, 1.0), mean_mag=-21.0)
    host_mag = rng.normal(-20.3, 0.8, n) - Q_EVOLUTION * (np.where(is_lens, z_src, 1.0) - 0.3)
    src["abs_mag_src"] = np.where(is_sn, host_mag, src["abs_mag_src"])
    p.update(src)
    p.setdefault("sigma_v", np.full(n, np.nan))
    p.setdefault("q_mass", np.full(n, 0.9))
    p.setdefault("phi_mass", np.zeros(n))
    theta_e = np.where(is_lens, lensing.einstein_radius(p["sigma_v"], p["z_lens"], np.where(is_lens, z_src, 2.0)), 0.0)
    p["theta_e"] = theta_e


def _add_lens_geometry(rng, p: dict, n: int) -> None:
    """Source position behind the lens and external shear."""
    # source inside ~0.7 theta_E (uniform in area) so that arcs / multiple images form
    rad = 0.7 * p["theta_e"] * np.sqrt(rng.random(n))
    ang = rng.uniform(0, 2 * np.pi, n)
    p["beta_x"], p["beta_y"] = rad * np.cos(ang), rad * np.sin(ang)
    gam = rng.uniform(0.0, 0.05, n)
    gang = rng.uniform(0, np.pi, n)
    p["g1"], p["g2"] = gam * np.cos(2 * gang), gam * np.sin(2 * gang)


def _add_supernovae(rng, p: dict, n: int, is_sn: np.ndarray, preset) -> None:
    """Supernova offset from its host within ~1 Re, peak magnitude and peak time in the observing window."""
    obj_class = p["obj_class"]
    off = 0.5 * p["re_src"] * np.sqrt(rng.random(n))
    ang = rng.uniform(0, 2 * np.pi, n)
    p["sn_x"] = np.where(is_sn, p["beta_x"] + off * np.cos(ang), np.nan)
    p["sn_y"] = np.where(is_sn, p["beta_y"] + off * np.sin(ang), np.nan)
    p["sn_abs_mag"] = np.where(
        obj_class == "lensed_sn_ia", rng.normal(-19.3, 0.15, n),
        np.where(obj_class == "lensed_sn_cc", rng.normal(-17.2, 0.9, n), np.nan),
    )
    window = preset.epochs * preset.cadence_days
    p["sn_t_peak"] = np.where(is_sn, rng.uniform(-15.0, window + 5.0, n), np.nan)


def size_evolution_factor(sed_type, z) -> np.ndarray:
    """Factor on the half-light radius of morphology "evolving": ((1 + z) / (1 + z_ref))^-beta, beta by SED type."""
    beta = np.where(np.asarray(sed_type) < EARLY_SED_MAX, SIZE_EVOLUTION["early"], SIZE_EVOLUTION["late"])
    return ((1.0 + np.asarray(z, dtype=float)) / (1.0 + SIZE_EVOLUTION_ZREF)) ** -beta


def apply_morphology(cat: dict, morphology: str) -> None:
    """Turn a catalogue drawn with the "v1" morphology into `morphology`, in place.

    A deterministic rescaling after the draws, with no random numbers of its own: every other array of a dataset
    stays identical between the models. Angular size is linear in the physical one, so scaling arcsec scales kpc.
    The lensed sources keep their own (1+z)^-0.7 (source_galaxies)."""
    if morphology not in MORPHOLOGIES:
        raise ValueError(f"unknown morphology '{morphology}'; known: {', '.join(MORPHOLOGIES)}")
    if morphology == "v1":
        return
    cat["re_lens"] = cat["re_lens"] * size_evolution_factor(cat["sed_lens"], cat["z_lens"])
    if "nb_re_lens" in cat:
        cat["nb_re_lens"] = cat["nb_re_lens"] * size_evolution_factor(cat["nb_sed_lens"], cat["nb_z_lens"])
