"""Strong lensing, vectorized over many systems: SIE + external shear deflections, Einstein radii from
velocity dispersions and distances, lens-equation image positions, magnifications and time delays.

The SIE follows lenstronomy's convention (kappa = theta_E / (2 sqrt(q x'^2 + y'^2 / q)), x' along the
major axis), checked against lenstronomy in tests/test_simulate_lensing.py.
"""

from __future__ import annotations

import numpy as np

from deepred.simulate import sed

C_KMS = 299792.458
_ARCSEC = np.pi / 180.0 / 3600.0
_MPC_DAYS = 3.0856775814913673e19 / 86400.0  # Mpc / c in days (1 Mpc = 3.0857e19 km)


def einstein_radius(sigma_v, z_lens, z_source) -> np.ndarray:
    """SIS Einstein radius in arcsec: 4 pi (sigma/c)^2 D_ls / D_s (0 where the source is not behind)."""
    z_lens = np.asarray(z_lens, dtype=float)
    z_source = np.asarray(z_source, dtype=float)
    d_s = sed.angular_diameter_distance(z_source)
    d_ls = np.where(z_source > z_lens, sed.angular_diameter_distance_z1z2(z_lens, z_source), 0.0)
    return 4.0 * np.pi * (np.asarray(sigma_v) / C_KMS) ** 2 * d_ls / d_s / _ARCSEC


def sie_deflection(x, y, theta_e, q, phi, gamma1=0.0, gamma2=0.0):
    """Deflection (arcsec) at positions x, y (arcsec, relative to the lens centre); parameters broadcast.

    Returns (alpha_x, alpha_y, potential) where the potential (arcsec^2) gives time delays.
    """
    q = np.clip(q, 1e-3, 0.999)  # q = 1 is the SIS limit; 0.999 keeps the formula finite
    cos, sin = np.cos(phi), np.sin(phi)
    xr = cos * x + sin * y
    yr = -sin * x + cos * y
    b = theta_e * np.sqrt(q)
    e = np.sqrt(1.0 - q * q)
    psi = np.sqrt(q * q * xr * xr + yr * yr) + 1e-12
    axr = b / e * np.arctan(e * xr / psi)
    ayr = b / e * np.arctanh(np.clip(e * yr / psi, -1 + 1e-12, 1 - 1e-12))
    ax = cos * axr - sin * ayr
    ay = sin * axr + cos * ayr
    pot = xr * axr + yr * ayr  # SIE potential is homogeneous of degree 1
    # external shear
    ax = ax + gamma1 * x + gamma2 * y
    ay = ay + gamma2 * x - gamma1 * y
    pot = pot + 0.5 * gamma1 * (x * x - y * y) + gamma2 * x * y
    return ax, ay, pot


def ray_shoot(x, y, lens: dict):
    """Source-plane positions beta = theta - alpha(theta) for image-plane x, y (lens dict of arrays)."""
    ax, ay, _ = sie_deflection(
        x - lens["x"], y - lens["y"], lens["theta_e"], lens["q"], lens["phi"], lens["g1"], lens["g2"]
    )
    return x - ax, y - ay


def _jacobian(x, y, lens, h=1e-4):
    bx1, by1 = ray_shoot(x + h, y, lens)
    bx0, by0 = ray_shoot(x - h, y, lens)
    cx1, cy1 = ray_shoot(x, y + h, lens)
    cx0, cy0 = ray_shoot(x, y - h, lens)
    return (bx1 - bx0) / (2 * h), (cx1 - cx0) / (2 * h), (by1 - by0) / (2 * h), (cy1 - cy0) / (2 * h)


def solve_images(beta_x, beta_y, lens: dict, max_images: int = 4, n_r: int = 40, n_phi: int = 72):
    """Image positions of point sources for many systems at once.

    A polar grid around each lens seeds Newton iterations at local minima of |beta(theta) - beta_s|;
    converged, distinct roots away from the (singular) centre are kept.
    Returns x, y, magnification (signed), fermat potential (arcsec^2), each (n, max_images), NaN-padded.
    """
    sys_i, px, py = _seed_images(beta_x, beta_y, lens, n_r, n_phi)
    lc = {k: np.asarray(v)[sys_i] for k, v in lens.items()}
    tx, ty = beta_x[sys_i], beta_y[sys_i]
    px, py = _newton(px, py, tx, ty, lc)
    fx, fy = ray_shoot(px, py, lc)
    resid = np.hypot(fx - tx, fy - ty)
    a11, a12, a21, a22 = _jacobian(px, py, lc)
    mu = 1.0 / (a11 * a22 - a12 * a21)
    rad = np.hypot(px - lc["x"], py - lc["y"])
    good = (resid < 1e-5 * np.maximum(lc["theta_e"], 0.1)) & (rad > 0.02 * lc["theta_e"]) & (np.abs(mu) > 1e-2)
    return _distinct_images(len(beta_x), max_images, sys_i, good, (px, py, mu), (tx, ty), lc)


def _seed_images(beta_x, beta_y, lens: dict, n_r: int, n_phi: int):
    """(system index, x, y) of the local minima of |beta(theta) - beta_s| on a polar grid around each lens."""
    te = lens["theta_e"][:, None, None]
    # out to the source distance + 1.5 theta_E: every image of a point source lies within |beta| + theta_E
    reach = np.hypot(beta_x - lens["x"], beta_y - lens["y"])[:, None, None] / te + 1.5
    r = np.linspace(0.0, 1.0, n_r)[None, :, None] * (reach - 0.05) * te + 0.05 * te
    ang = np.linspace(0, 2 * np.pi, n_phi, endpoint=False)[None, None, :]
    gx = lens["x"][:, None, None] + r * np.cos(ang)
    gy = lens["y"][:, None, None] + r * np.sin(ang)
    lb = {k: np.asarray(v)[:, None, None] for k, v in lens.items()}
    bx, by = ray_shoot(gx, gy, lb)
    d = np.hypot(bx - beta_x[:, None, None], by - beta_y[:, None, None])
    # local minima over radius (edges excluded) and angle (periodic)
    core = d[:, 1:-1, :]
    is_min = (
        (core <= d[:, :-2, :]) & (core <= d[:, 2:, :])
        & (core <= np.roll(core, 1, axis=2)) & (core <= np.roll(core, -1, axis=2))
    )
    sys_i, ri, ai = np.nonzero(is_min)
    return sys_i, gx[sys_i, ri + 1, ai], gy[sys_i, ri + 1, ai]


def _newton(px, py, tx, ty, lc: dict):
    """30 damped Newton steps on theta - alpha(theta) = beta from the seeds (px, py)."""
    for _ in range(30):
        fx, fy = ray_shoot(px, py, lc)
        fx, fy = fx - tx, fy - ty
        a11, a12, a21, a22 = _jacobian(px, py, lc)
        det = a11 * a22 - a12 * a21
        det = np.where(np.abs(det) < 1e-8, 1e-8, det)
        dx = (a22 * fx - a12 * fy) / det
        dy = (-a21 * fx + a11 * fy) / det
        step = np.hypot(dx, dy)
        scale = np.minimum(1.0, 0.3 * lc["theta_e"] / np.maximum(step, 1e-12))  # damped steps
        px = px - dx * scale
        py = py - dy * scale
    return px, py


def _distinct_images(n: int, max_images: int, sys_i, good, roots, source, lc: dict):
    """Up to max_images distinct good roots per system, in seed order: (x, y, mu, fermat), each (n, max_images).

    roots = (x, y, mu) per seed; source = (beta_x, beta_y) per seed."""
    px, py, mu = roots
    tx, ty = source
    out = [np.full((n, max_images), np.nan) for _ in range(4)]
    counts = np.zeros(n, dtype=int)
    order = np.argsort(sys_i[good], kind="stable")
    gi = np.nonzero(good)[0][order]
    for j in gi:  # a few candidates per system: dedupe in plain Python
        s = sys_i[j]
        k = counts[s]
        if k >= max_images:
            continue
        if k and np.any(np.hypot(out[0][s, :k] - px[j], out[1][s, :k] - py[j]) < 1e-3):
            continue
        _, _, pot = sie_deflection(
            px[j] - lc["x"][j], py[j] - lc["y"][j], lc["theta_e"][j], lc["q"][j], lc["phi"][j],
            lc["g1"][j], lc["g2"][j],
        )
        fermat = 0.5 * ((px[j] - tx[j]) ** 2 + (py[j] - ty[j]) ** 2) - pot
        out[0][s, k], out[1][s, k], out[2][s, k], out[3][s, k] = px[j], py[j], mu[j], fermat
        counts[s] += 1
    return out[0], out[1], out[2], out[3]


def time_delay_days(fermat, z_lens, z_source) -> np.ndarray:
    """Arrival times (days) of images, fermat (n, k) arcsec^2: (1+z_l) D_l D_s / (c D_ls) * Fermat potential."""
    d_l = sed.angular_diameter_distance(z_lens)
    d_s = sed.angular_diameter_distance(z_source)
    d_ls = sed.angular_diameter_distance_z1z2(z_lens, z_source)
    d_dt = (1.0 + np.asarray(z_lens)) * d_l * d_s / np.maximum(d_ls, 1e-9)  # Mpc
    return (d_dt * _MPC_DAYS / C_KMS)[:, None] * np.asarray(fermat) * _ARCSEC**2
