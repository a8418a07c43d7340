"""Vectorized rendering of a batch of systems into calibrated, noisy survey cutouts.

Per batch: Sersic profiles on a supersampled grid (lens light; lensed source by ray-shooting through the
SIE + shear), binned to pixels, FFT-convolved with the per-band, per-system PSF (Gaussian, or a double
Gaussian with Moffat-like wings); lensed supernova images are added as points in Fourier space (exact
sub-pixel position, pixel response included). Noise: Poisson sky + source electrons summed over the epochs,
Gaussian read noise per epoch, then the mean co-add is background-subtracted and calibrated to nanomaggies.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy.special import gamma as gamma_fn
from scipy.special import gammainc

from deepred.simulate import lensing

MASK_NSIGMA = 2.0  # footprint: noiseless band-summed model above this many sky sigmas per pixel
MASK_PEAK_FRAC = 0.05  # ... and above this fraction of the component's peak (deep co-adds: not the whole cutout)

# Rest-frame light-curve shapes (Bazin et al. 2009 form): rise and fall times in days
LIGHT_CURVES = {"lensed_sn_ia": (4.0, 20.0), "lensed_sn_cc": (6.0, 60.0)}


def sersic_b(n):
    n = np.asarray(n, dtype=float)
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def sersic_total(n, re):
    """Total flux of a Sersic profile with I_e = 1 and circularized half-light radius re."""
    b = sersic_b(n)
    return 2.0 * np.pi * n * re * re * np.exp(b) * b ** (-2.0 * n) * gamma_fn(2.0 * n)


def sersic_sb(x, y, re, n, q, phi):
    """Surface brightness (I_e = 1) at x, y (arcsec, relative to the centre); parameters broadcast."""
    c, s = np.cos(phi), np.sin(phi)
    xr = c * x + s * y
    yr = -s * x + c * y
    r2 = (q * xr * xr + yr * yr / q) / (re * re)
    b = sersic_b(n)
    # r^(1/n) as exp(log(r^2) / 2n): one transcendental less than np.power with a per-object exponent
    return np.exp(-b * (np.exp(np.log(np.maximum(r2, 1e-30)) * (0.5 / n)) - 1.0))


def bazin_mean(t_epochs, t_peak, tau_rise, tau_fall):
    """Mean over epochs of a light curve normalized to 1 at its maximum (t_peak broadcasts)."""
    # Bazin: f(t) = exp(-t/tf) / (1 + exp(-t/tr)); its maximum is at t_max = tr * ln(tf/tr - 1)
    tr = np.asarray(tau_rise, dtype=float)[..., None]
    tf = np.asarray(tau_fall, dtype=float)[..., None]
    t_max = tr * np.log(tf / tr - 1.0)

    def f(t):
        return np.exp(-t / tf) / (1.0 + np.exp(-t / tr))

    t = t_epochs - np.asarray(t_peak, dtype=float)[..., None] + t_max
    return np.mean(f(np.maximum(t, -50.0 * tr)), axis=-1) / f(t_max)[..., 0]


class Renderer:
    """Fixed geometry for one preset, band list and cutout size; render(batch) does the work."""

    def __init__(self, preset, bands, cutout, supersample=None):
        self.preset = preset
        self.bands = list(bands)
        self.H = int(cutout)
        self.pix = preset.pixel_scale
        self.S = supersample or (3 if self.pix < 0.3 else 2)
        H, S = self.H, self.S
        self.c = H // 2  # object centre sits on the centre of pixel (H//2, H//2)
        u = ((np.arange(H * S) + 0.5) / S - 0.5 - self.c) * self.pix
        self.xs = u[None, None, :].astype(np.float32)  # float32 grids: half the memory traffic
        self.ys = u[None, :, None].astype(np.float32)
        self.sub_area = (self.pix / S) ** 2
        max_fwhm = max(preset.bands[b].psf_fwhm for b in self.bands)
        self.P = sfft.next_fast_len(H + 2 * int(np.ceil(2.5 * max_fwhm / self.pix)) + 2)
        ky = np.fft.fftfreq(self.P)[:, None]
        kx = np.fft.rfftfreq(self.P)[None, :]
        self.k2 = (kx * kx + ky * ky)[None]
        # the transfer functions depend on |k|^2 only: evaluate on its few unique values, then gather
        self.k2_unique, self.k2_index = np.unique(self.k2[0], return_inverse=True)
        self.kx, self.ky = kx[None], ky[None]
        self.pix_resp = (np.sinc(kx) * np.sinc(ky))[None]
        self.band_info = [preset.bands[b] for b in self.bands]
        self.epoch_times = np.arange(preset.epochs) * preset.cadence_days

    # -- pieces --------------------------------------------------------------------------------------
    def _bin(self, img):
        n, H, S = img.shape[0], self.H, self.S
        return img.reshape(n, H, S, H, S).sum(axis=(2, 4)) * self.sub_area

    def _psf_transfer(self, fwhm_arcsec):
        """(n, T) per-epoch FWHM -> (n, P, P//2+1) transfer function of the mean co-add (mean over epochs)."""
        sig2 = (np.asarray(fwhm_arcsec, dtype=float) / 2.3548 / self.pix)[:, :, None] ** 2  # (n, T, 1)
        arg = -2.0 * np.pi**2 * self.k2_unique[None, None, :]
        otf = np.exp(arg * sig2)
        if self.preset.psf_kind == "double_gaussian":  # 10% of the light in a wing twice as wide
            otf = 0.9 * otf + 0.1 * np.exp(arg * 4.0 * sig2)
        return otf.mean(axis=1)[:, self.k2_index]

    def _noise_terms(self, b):
        info = self.preset.bands[b]
        t = info.exposure
        rate = info.e_per_nmgy() * t  # electrons per nmgy per epoch
        sky = self.preset.sky_e_per_pixel(b)
        return rate, sky

    def sky_sigma(self):
        """Per-band sky + read noise of the co-add, nanomaggies per pixel."""
        T, rd = self.preset.epochs, self.preset.read_noise
        out = []
        for b in self.bands:
            rate, sky = self._noise_terms(b)
            out.append(np.sqrt(T * (sky + rd * rd)) / (T * rate))
        return np.array(out)

    # -- main ----------------------------------------------------------------------------------------
    def render(self, p: dict, rng: np.random.Generator | None, noise: bool = True) -> dict:
        """p: dict of arrays for n systems (see population.draw_systems plus flux_{lens,src,sn}_{band}).

        Returns images (n,B,H,W) float32 nanomaggies, masks (n,H,W) uint8, model (noiseless central object:
        lens light, arcs, SN images; no neighbours), snr,
        arc_snr, n_images, mu_total.
        """
        n = len(p["z_lens"])
        H, P = self.H, self.P
        lens_img, centre = self._lens_light(p, n)
        src_img, lidx, lens_par = self._lensed_source(p, n)
        nb_rows, f_nb = self._neighbour_transforms(p)

        # Fourier domain
        pad = np.zeros((n, P, P))
        pad[:, :H, :H] = lens_img
        f_lens = sfft.rfft2(pad, workers=1)
        pad[:, :H, :H] = src_img
        f_src = sfft.rfft2(pad, workers=1)

        n_images, mu_total, f_sn, sn_pix = self._supernovae(p, n, lidx, lens_par, f_lens.shape[1:])
        images, model, var, arc = self._bands(p, rng, noise, (f_lens, f_src, f_sn), (nb_rows, f_nb))
        masks, snr, arc_snr = self._footprint(model, var, arc, centre, sn_pix)
        return {"images": images, "masks": masks, "model": model.astype(np.float32), "snr": snr,
                "arc_snr": arc_snr, "n_images": n_images, "mu_total": mu_total}

    def _lens_light(self, p: dict, n: int):
        """Lens (central) galaxy light of unit total flux, (n, H, H), and its centre pixel (rows, cols)."""
        H = self.H
        col = lambda k: np.asarray(p[k], dtype=np.float32)[:, None, None]  # noqa: E731
        x0, y0 = col("x0"), col("y0")
        xs, ys = self.xs - x0, self.ys - y0
        # the cusp deficit of the sampled profile goes into the centre pixel
        re, nser = col("re_lens"), col("n_lens")
        sb = sersic_sb(xs, ys, re, nser, col("q_lens"), col("phi_lens"))
        lens_img = self._bin(sb).astype(np.float64) / sersic_total(nser, re)
        half = (H / 2.0) * self.pix
        n1, r1 = nser[:, 0, 0].astype(float), re[:, 0, 0].astype(float)
        enclosed = gammainc(2.0 * n1, sersic_b(n1) * (half / r1) ** (1.0 / n1))  # flux share inside the cutout
        deficit = np.maximum(enclosed - lens_img.sum(axis=(1, 2)), 0.0)
        ci = np.clip(np.round(p["y0"] / self.pix).astype(int) + self.c, 0, H - 1)
        cj = np.clip(np.round(p["x0"] / self.pix).astype(int) + self.c, 0, H - 1)
        lens_img[np.arange(n), ci, cj] += deficit
        return lens_img, (ci, cj)

    def _lensed_source(self, p: dict, n: int):
        """Lensed source light of unit intrinsic flux (n, H, H), the lens rows and their lens parameters.

        Surface brightness is conserved: magnification emerges from the ray-shooting."""
        is_lens = np.asarray(p["is_lens"], dtype=bool)
        src_img = np.zeros((n, self.H, self.H))
        lidx = np.nonzero(is_lens)[0]
        lens_par = None
        if len(lidx):
            g = lambda k: np.asarray(p[k], dtype=np.float32)[lidx]  # noqa: E731
            lens_par = {"x": g("x0"), "y": g("y0"), "theta_e": g("theta_e"), "q": g("q_mass"),
                        "phi": g("phi_mass"), "g1": g("g1"), "g2": g("g2")}
            lb = {k: v[:, None, None].astype(np.float32) for k, v in lens_par.items()}
            bx, by = lensing.ray_shoot(self.xs, self.ys, lb)
            rs, ns = g("re_src")[:, None, None], g("n_src")[:, None, None]
            sb_s = sersic_sb(
                bx - (g("x0") + g("beta_x"))[:, None, None], by - (g("y0") + g("beta_y"))[:, None, None],
                rs, ns, g("q_src")[:, None, None], g("phi_src")[:, None, None],
            )
            src_img[lidx] = self._bin(sb_s).astype(np.float64) / sersic_total(ns.astype(float), rs.astype(float))
        return src_img, lidx, lens_par

    def _neighbour_transforms(self, p: dict):
        """Rows with neighbours, and per neighbour slot (slot, rows, Fourier transform of its unit-flux light).

        Unrelated neighbours sit at cutout-frame positions; transforms are computed only where present."""
        n = len(p["z_lens"])
        H, P = self.H, self.P
        nb_present = np.asarray(p.get("nb_present", np.zeros((n, 0), bool)), dtype=bool)
        nb_rows = np.nonzero(nb_present.any(axis=1))[0] if nb_present.size else np.zeros(0, int)
        f_nb = []  # per slot: (rows, fft)
        for k in range(nb_present.shape[1]):
            rows = np.nonzero(nb_present[:, k])[0]
            if not len(rows):
                continue
            g = lambda key: np.asarray(p[key], dtype=np.float32)[rows, k][:, None, None]  # noqa: E731
            rn, nn = g("nb_re_lens"), g("nb_n_lens")
            sb_n = sersic_sb(self.xs - g("nb_x"), self.ys - g("nb_y"), rn, nn, g("nb_q_lens"), g("nb_phi_lens"))
            padn = np.zeros((len(rows), P, P))
            padn[:, :H, :H] = self._bin(sb_n).astype(np.float64) / sersic_total(nn.astype(float), rn.astype(float))
            f_nb.append((k, rows, sfft.rfft2(padn, workers=1)))
        return nb_rows, f_nb

    def _supernovae(self, p: dict, n: int, lidx, lens_par, f_shape):
        """Supernova images: positions, magnifications, delays -> mean flux over the epochs.

        Returns n_images, mu_total, their Fourier transform (n, *f_shape) or None, and their pixels
        [(object, row, col)] for the masks."""
        H = self.H
        n_images = np.zeros(n, dtype=np.int16)
        mu_total = np.full(n, np.nan)
        f_sn = None
        sn_pix = []  # (object, row, col) of SN image pixels for the masks
        sn_idx = np.nonzero(np.isin(p["obj_class"], list(LIGHT_CURVES)))[0]
        if not len(sn_idx):
            return n_images, mu_total, f_sn, sn_pix
        lp = {k: v[np.searchsorted(lidx, sn_idx)] for k, v in lens_par.items()}
        sx = np.asarray(p["sn_x"])[sn_idx] + lp["x"]
        sy = np.asarray(p["sn_y"])[sn_idx] + lp["y"]
        ix, iy, mu, fermat = lensing.solve_images(sx, sy, lp)
        weight = np.nan_to_num(np.abs(mu) * self._light_curve_means(p, sn_idx, fermat))  # (m, k): fraction of peak
        n_images[sn_idx] = np.sum(np.isfinite(mu), axis=1)
        mu_total[sn_idx] = np.nansum(np.abs(mu), axis=1)
        px = np.nan_to_num(ix) / self.pix + self.c  # pixel coordinates (column)
        py = np.nan_to_num(iy) / self.pix + self.c
        phase = np.exp(-2j * np.pi * (self.kx[None] * px[:, :, None, None] + self.ky[None] * py[:, :, None, None]))
        f_sn = np.zeros((n,) + tuple(f_shape), dtype=complex)
        f_sn[sn_idx] = np.sum(weight[:, :, None, None] * phase, axis=1) * self.pix_resp
        for m, s in enumerate(sn_idx):
            for k in range(ix.shape[1]):
                if np.isfinite(ix[m, k]):
                    r, c = int(round(py[m, k])), int(round(px[m, k]))
                    if 0 <= r < H and 0 <= c < H:
                        sn_pix.append((s, r, c))
        return n_images, mu_total, f_sn, sn_pix

    def _light_curve_means(self, p: dict, sn_idx, fermat) -> np.ndarray:
        """(m, k) mean over the epochs of each image's light curve (1 at peak), delayed by its arrival time."""
        zl = np.asarray(p["z_lens"])[sn_idx]
        zs = np.asarray(p["z_source"])[sn_idx]
        delay = lensing.time_delay_days(fermat, zl, zs)
        delay = delay - np.nanmin(np.where(np.isfinite(delay), delay, np.inf), axis=1, keepdims=True)
        lc = np.zeros_like(fermat)
        for cls, (tr, tf) in LIGHT_CURVES.items():
            sel = np.asarray(p["obj_class"])[sn_idx] == cls
            if sel.any():
                tpk = np.asarray(p["sn_t_peak"])[sn_idx][sel][:, None] + np.nan_to_num(delay[sel])
                lc[sel] = bazin_mean(self.epoch_times, tpk, tr * (1 + zs[sel, None]), tf * (1 + zs[sel, None]))
        return lc

    def _bands(self, p: dict, rng, noise: bool, transforms, neighbours):
        """Per band: fluxes, PSF, inverse FFT, noise. transforms = (f_lens, f_src, f_sn or None) of unit-flux
        light; neighbours = (rows, per-slot transforms). Returns images (float32), model (central object),
        variance and the band-summed arcs."""
        f_lens, f_src, f_sn = transforms
        n = f_lens.shape[0]
        H, P, B = self.H, self.P, len(self.bands)
        fwhm_scale = np.asarray(p["psf_scale"], dtype=float)[:, None] * np.asarray(
            p.get("seeing_epochs", np.ones((n, 1))), dtype=float
        )
        model = np.empty((n, B, H, H))
        T, rd = self.preset.epochs, self.preset.read_noise
        images = np.empty((n, B, H, H), dtype=np.float32)
        var = np.empty((n, B, H, H))
        f_arc_sum = None  # band-summed arcs (Fourier)
        for j, b in enumerate(self.bands):
            otf = self._psf_transfer(self.band_info[j].psf_fwhm * fwhm_scale)
            fl = np.nan_to_num(np.asarray(p[f"flux_lens_{b}"], dtype=float))[:, None, None]
            fs = np.nan_to_num(np.asarray(p[f"flux_src_{b}"], dtype=float))[:, None, None]
            f_arc = fs * f_src
            if f_sn is not None:
                fsn = np.nan_to_num(np.asarray(p[f"flux_sn_{b}"], dtype=float))[:, None, None]
                f_arc = f_arc + fsn * f_sn
            f_arc = f_arc * otf
            f_arc_sum = f_arc if f_arc_sum is None else f_arc_sum + f_arc
            central = np.maximum(sfft.irfft2(fl * f_lens * otf + f_arc, s=(P, P), workers=1)[:, :H, :H], 0.0)
            model[:, j] = central
            tot = central.copy()
            self._add_neighbours(tot, p, b, otf, neighbours, f_lens.shape[1:])
            rate, sky = self._noise_terms(b)
            var[:, j] = (T * (tot * rate + sky) + T * rd * rd) / (T * rate) ** 2
            if noise:
                counts = rng.poisson(T * (tot * rate + sky)).astype(np.float64)
                counts += rng.normal(0.0, rd * np.sqrt(T), counts.shape)
                images[:, j] = (counts - T * sky) / (T * rate)
            else:
                images[:, j] = tot  # noiseless, neighbours included ("model" holds the central object only)
        arc = np.maximum(sfft.irfft2(f_arc_sum, s=(P, P), workers=1)[:, :H, :H], 0.0)  # band-summed arcs
        return images, model, var, arc

    def _add_neighbours(self, tot: np.ndarray, p: dict, b: str, otf, neighbours, f_shape) -> None:
        """Add band b's PSF-convolved neighbour light to tot (in place), for the rows that have neighbours."""
        nb_rows, f_nb = neighbours
        if not f_nb:
            return
        H, P = self.H, self.P
        fnb = np.zeros((len(nb_rows),) + tuple(f_shape), dtype=complex)
        pos = {r: i for i, r in enumerate(nb_rows)}
        for k, rows, fk in f_nb:
            idx = [pos[r] for r in rows]
            fnb[idx] += np.asarray(p[f"flux_nb_{b}"], dtype=float)[rows, k][:, None, None] * fk
        tot[nb_rows] += np.maximum(sfft.irfft2(fnb * otf[nb_rows], s=(P, P), workers=1)[:, :H, :H], 0.0)

    def _footprint(self, model, var, arc, centre, sn_pix):
        """Footprint of the central object (lens light + arcs + SN images) and signal-to-noise of it and of the arcs."""
        n = model.shape[0]
        ci, cj = centre
        sky_sig = np.sqrt(np.sum(self.sky_sigma() ** 2))
        msum = model.sum(axis=1)
        lens_part = msum - arc
        cut_l = np.maximum(MASK_NSIGMA * sky_sig, MASK_PEAK_FRAC * lens_part.max(axis=(1, 2), keepdims=True))
        cut_a = np.maximum(MASK_NSIGMA * sky_sig, MASK_PEAK_FRAC * arc.max(axis=(1, 2), keepdims=True))
        masks = ((lens_part > cut_l) | (arc > cut_a)).astype(np.uint8)
        masks[np.arange(n), ci, cj] = 1
        for s, r, c in sn_pix:
            masks[s, r, c] = 1
        vsum = var.sum(axis=1)
        snr = (msum * masks).sum(axis=(1, 2)) / np.sqrt((vsum * masks).sum(axis=(1, 2)))
        arc_mask = arc > MASK_NSIGMA * sky_sig
        arc_snr = np.where(
            arc_mask.any(axis=(1, 2)),
            (arc * arc_mask).sum(axis=(1, 2)) / np.sqrt(np.maximum((vsum * arc_mask).sum(axis=(1, 2)), 1e-30)),
            0.0,
        )
        return masks, snr, arc_snr
