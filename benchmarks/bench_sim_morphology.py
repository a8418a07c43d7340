"""How much redshift the simulator's morphology carries beyond colours, and how the sdss preset's colours compare
with real SDSS galaxies.

    python benchmarks/bench_sim_morphology.py [--out results/benchmarks/sim_morphology] [--n 4000] [--seed 0]
        [--presets sdss kids des_deep] [--sdss-colors ../shared/data/sdss_galaxy_colors.npy] [--render-n 1500]

Writes <out>/sim_morphology.json and two figures (docs/simulator-morphology.md reads them):
1. information (per preset, per morphology model): out-of-fold NMAD of a HistGradientBoostingRegressor on the
   central galaxy's noiseless, dereddened magnitudes + adjacent colours, alone and with each parameter the
   simulator draws for its light profile (log half-light radius in arcsec, Sersic n, axis ratio, mean surface
   brightness inside R_e), with a paired bootstrap interval of the NMAD change; the radius in kpc needs z to
   compute and is the label leaking in (an upper bound, not observable); the same with 0.05 mag / 0.05 dex errors.
2. physics: the size-redshift slope d log R_e(kpc) / d log(1+z) at fixed luminosity (fixed M and fixed M + Q z),
   the profile model, and the surface-brightness dimming exponent measured on noiseless rendered images.
3. sdss (skipped, with the reason, when the real file is absent): colour-only trees (u-g, g-r, r-i, i-z) trained on
   simulated colours (model and measured on rendered images with the photometric baseline's sep photometry) and
   tested on real SDSS galaxies (r <= 17.8, z < 0.4), and the reverse, plus each within-domain NMAD.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402

from deepred.core.metrics import nmad  # noqa: E402
from deepred.simulate import draw_catalog, get_preset, population, sed  # noqa: E402
from deepred.simulate.render import Renderer  # noqa: E402
from deepred.simulate.surveys import extinction_coefficient  # noqa: E402

FOLDS = 3
OUTLIER_DZ = 0.15  # |dz| above this is an outlier (the project's outlier_frac)
SDSS_BANDS = ("u", "g", "r", "i", "z")
MORPH_KEYS = ("log_re_arcsec", "sersic_n", "axis_ratio", "mu_e")


# -- 1. information ------------------------------------------------------------------------------------------------
def catalogue(preset: str, n: int, seed: int, morphology: str = "v1") -> dict:
    """The central galaxies' truth: z, dereddened noiseless mags (n, bands), and their profile parameters."""
    bands = list(get_preset(preset).bands)
    cat = draw_catalog(preset, n, seed, neighbours=False, morphology=morphology)
    filters = [get_preset(preset).bands[b].filter_name for b in bands]
    mags = np.stack([cat[f"mag_{b}"] - extinction_coefficient(f) * cat["ebv"] for b, f in zip(bands, filters)], 1)
    z, re = cat["z_lens"], cat["re_lens"]
    re_kpc = re * sed.angular_diameter_distance(z) * 1e3 / 206264.806  # kpc_to_arcsec inverted
    return {"preset": preset, "bands": bands, "z": z, "mags": mags, "log_re_arcsec": np.log10(re),
            "log_re_kpc": np.log10(re_kpc), "sersic_n": cat["n_lens"], "axis_ratio": cat["q_lens"],
            "mu_e": mags[:, bands.index("r")] + 2.5 * np.log10(2.0 * np.pi * re**2),  # mean SB inside R_e
            "abs_mag": cat["abs_mag_lens"], "sed_type": cat["sed_lens"],
            "early": cat["sed_lens"] < population.EARLY_SED_MAX}


def _colour_matrix(mags: np.ndarray) -> np.ndarray:
    return np.concatenate([mags, mags[:, :-1] - mags[:, 1:]], axis=1)


def feature_sets(c: dict, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Named feature matrices; with rng, 0.05 mag errors on magnitudes and 0.05 dex on sizes (a measured catalogue)."""
    if rng is None:
        mags, extra = c["mags"], {k: c[k] for k in MORPH_KEYS + ("log_re_kpc",)}
    else:
        mags = c["mags"] + rng.normal(0.0, 0.05, c["mags"].shape)
        log_re = c["log_re_arcsec"] + rng.normal(0.0, 0.05, len(c["z"]))
        extra = {"log_re_arcsec": log_re, "sersic_n": c["sersic_n"] + rng.normal(0.0, 0.3, len(c["z"])),
                 "axis_ratio": np.clip(c["axis_ratio"] + rng.normal(0.0, 0.05, len(c["z"])), 0.05, 1.0),
                 "mu_e": mags[:, c["bands"].index("r")] + 2.5 * np.log10(2.0 * np.pi) + 5.0 * log_re}
    base = _colour_matrix(mags)
    sets = {"colours": base}
    if rng is None:
        sets.update({f"colours+{k}": np.column_stack([base, extra[k]]) for k in MORPH_KEYS})
    sets["colours+morphology"] = np.column_stack([base] + [extra[k] for k in MORPH_KEYS])
    if rng is None:
        sets["colours+log_re_kpc (needs z)"] = np.column_stack([base, extra["log_re_kpc"]])
    return sets


def _regressor(seed: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20,
                                         early_stopping=False, random_state=seed)


def oof_predict(x: np.ndarray, y: np.ndarray, seed: int, folds: int = FOLDS) -> np.ndarray:
    """Out-of-fold predictions: every object is predicted by trees that never saw it."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    pred = np.empty(len(y))
    for k in range(folds):
        test = fold == k
        pred[test] = _regressor(seed).fit(x[~test], y[~test]).predict(x[test])
    return pred


def paired_delta(pred: np.ndarray, base: np.ndarray, z: np.ndarray, seed: int, n_boot: int = 300) -> list[float]:
    """16th and 84th percentiles of NMAD(pred) - NMAD(base) over bootstrap resamples of the objects."""
    idx = np.random.default_rng(seed).integers(0, len(z), (n_boot, len(z)))
    d = [nmad(pred[i], z[i]) - nmad(base[i], z[i]) for i in idx]
    return [round(float(v), 5) for v in np.percentile(d, [16, 84])]


def information(c: dict, seed: int) -> dict:
    """Out-of-fold NMAD per feature set (noiseless and with errors), the change from colours alone and its interval."""
    out = {}
    for label, sets in (("noiseless", feature_sets(c)), ("with_errors", feature_sets(c, np.random.default_rng(seed)))):
        preds = {name: oof_predict(x, c["z"], seed) for name, x in sets.items()}
        rows = {}
        for name, pred in preds.items():
            rows[name] = {"nmad": round(nmad(pred, c["z"]), 5)}
            if name != "colours":
                rows[name]["delta_vs_colours"] = round(rows[name]["nmad"] - rows["colours"]["nmad"], 5)
                rows[name]["delta_16_84"] = paired_delta(pred, preds["colours"], c["z"], seed)
        out[label] = rows
    return out


# -- 2. physics ----------------------------------------------------------------------------------------------------
def size_redshift_slopes(c: dict) -> dict:
    """Least-squares d log10 R_e(kpc) / d log10(1+z) per early/late type, at fixed M_r and at fixed M_r + Q z."""
    out = {}
    for kind, sel in (("early", c["early"]), ("late", ~c["early"])):
        if sel.sum() < 30:
            continue
        lz = np.log10(1.0 + c["z"][sel])
        row = {"n": int(sel.sum())}
        for fixed, m in (("fixed_M", c["abs_mag"][sel]),
                         ("fixed_M_plus_Qz", c["abs_mag"][sel] + population.Q_EVOLUTION * c["z"][sel])):
            a = np.column_stack([np.ones(sel.sum()), m, lz])
            coef = np.linalg.lstsq(a, c["log_re_kpc"][sel], rcond=None)[0]
            row[fixed] = round(float(coef[2]), 3)
        out[kind] = row
    return out


def profile_facts(c: dict) -> dict:
    """What the light profile is: one Sersic component; how n follows the SED type (rank correlation)."""
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rho = np.corrcoef(rank(c["sersic_n"]), rank(c["sed_type"]))[0, 1]
    return {"components": 1, "bulge_disc": False, "sersic_n_range": [round(float(c["sersic_n"].min()), 2),
                                                                     round(float(c["sersic_n"].max()), 2)],
            "spearman_n_vs_sed_type": round(float(rho), 3)}


def dimming_exponent(preset: str = "sdss", re_kpc: float = 15.0, zs=(0.05, 0.1, 0.2, 0.3, 0.4)) -> dict:
    """Render one galaxy (E SED, fixed M_r and R_e in kpc) at several z without noise and a negligible PSF; fit
    the mean surface brightness inside R_e (minus the simulator's K-correction) against log10(1+z).
    Angular sizes from D_A and fluxes from D_L give SB ~ (1+z)^-4: the fitted exponent should be -4."""
    import sep

    zs = np.asarray(zs, dtype=float)
    cat = draw_catalog(preset, len(zs), 0, ["r"], neighbours=False)
    filt = get_preset(preset).bands["r"].filter_name
    k = len(zs)
    cat.update(z_lens=zs, sed_lens=np.zeros(k), abs_mag_lens=np.full(k, -21.0), n_lens=np.ones(k), q_lens=np.ones(k),
               x0=np.zeros(k), y0=np.zeros(k), psf_scale=np.full(k, 1e-3), re_lens=sed.kpc_to_arcsec(re_kpc, zs),
               is_lens=np.zeros(k, bool), nb_present=np.zeros_like(cat["nb_present"]))
    mag = sed.galaxy_mag(cat["sed_lens"], zs, cat["abs_mag_lens"], filt)
    cat["flux_lens_r"] = 10.0 ** (-0.4 * (mag - 22.5))
    r = Renderer(get_preset(preset), ["r"], 160)
    model = r.render(cat, None, noise=False)["model"][:, 0].astype(np.float64)
    rad_px = cat["re_lens"] / r.pix
    flux = np.array([sep.sum_circle(np.ascontiguousarray(m), [r.c], [r.c], [rp], subpix=5)[0][0]
                     for m, rp in zip(model, rad_px)])
    mu = -2.5 * np.log10(flux / (np.pi * cat["re_lens"] ** 2)) + 22.5
    k_corr = mag - cat["abs_mag_lens"] - sed.distance_modulus(zs)  # the simulator's K(z), bandwidth term included
    slope = np.polyfit(np.log10(1.0 + zs), mu - k_corr, 1)[0]
    return {"preset": preset, "z": zs.tolist(), "mu_e_r": np.round(mu, 4).tolist(),
            "k_corr_r": np.round(k_corr, 4).tolist(), "sb_exponent": round(float(-slope / 2.5), 3),
            "half_light_share_in_R_e": np.round(flux / cat["flux_lens_r"], 3).tolist()}


# -- 3. SDSS colours -----------------------------------------------------------------------------------------------
def real_sdss(path: Path) -> dict:
    """Real SDSS galaxies with the sdss preset's selection (population._add_central_objects: r <= 17.8, z < 0.4)."""
    a = np.load(path, allow_pickle=False)
    a = a[(a["spec_class"] == b"GALAXY") & (a["r"] <= 17.8) & (a["redshift"] < 0.4)]
    return {"z": np.asarray(a["redshift"], float), "mags": np.stack([a[b] for b in SDSS_BANDS], 1).astype(float)}


def colours(mags: np.ndarray) -> np.ndarray:
    """u-g, g-r, r-i, i-z."""
    return mags[:, :-1] - mags[:, 1:]


def point_metrics(pred: np.ndarray, z: np.ndarray) -> dict:
    d = (pred - z) / (1.0 + z)
    return {"n": int(len(z)), "nmad": round(nmad(pred, z), 5), "bias": round(float(np.median(d)), 5),
            "outlier_frac": round(float(np.mean(np.abs(d) > OUTLIER_DZ)), 5)}


def cross_domain(sim: dict, real: dict, seed: int) -> tuple[dict, dict]:
    """Colour-only trees: within each domain (out-of-fold) and trained on one domain, tested on the other."""
    xs, xr = colours(sim["mags"]), colours(real["mags"])
    preds = {"sim_to_real": _regressor(seed).fit(xs, sim["z"]).predict(xr),
             "real_to_sim": _regressor(seed).fit(xr, real["z"]).predict(xs)}
    out = {"within_sim": point_metrics(oof_predict(xs, sim["z"], seed), sim["z"]),
           "within_real": point_metrics(oof_predict(xr, real["z"], seed), real["z"]),
           "sim_to_real": point_metrics(preds["sim_to_real"], real["z"]),
           "real_to_sim": point_metrics(preds["real_to_sim"], sim["z"])}
    return out, preds


def rendered_sdss_mags(n: int, seed: int) -> dict:
    """sdss preset rendered (noise, PSF, neighbours), Kron magnitudes measured with the photometric baseline's sep
    photometry (deepred.baselines.photometry.measure), dereddened with the truth table's E(B-V)."""
    import pandas as pd

    from deepred.baselines.photometry import PhotometryParams, measure
    from deepred.simulate import simulate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        out = simulate_dataset("sdss", n, seed, Path(tmp) / "sdss")
        images = np.load(out / "images.npy")
        truth = pd.read_parquet(out / "truth.parquet")
    phot = measure(images, {"method": "none"}, PhotometryParams((2.0, 4.0, 8.0), 1.5))
    flux = np.maximum(phot["flux"][:, :, -1], 1e-3)  # Kron flux; bright r <= 17.8 objects are all detected
    ext = np.array([extinction_coefficient(f"sdss2010-{b}") for b in SDSS_BANDS])
    mags = 22.5 - 2.5 * np.log10(flux) - ext[None, :] * truth["ebv"].to_numpy()[:, None]
    return {"z": truth["z_lens"].to_numpy(), "mags": mags}


def sdss_check(path: Path, n_sim: int, render_n: int, seed: int) -> tuple[dict, dict]:
    """Cross-domain metrics for model colours and (render_n > 0) image-measured colours; data for the figure."""
    real = real_sdss(path)
    cat = catalogue("sdss", n_sim, seed)
    sim = {"z": cat["z"], "mags": cat["mags"]}
    res, preds = cross_domain(sim, real, seed)
    result = {"n_real": int(len(real["z"])), "selection": "spec_class GALAXY, r <= 17.8, z < 0.4",
              "sim_model_colours": res,
              "note": ("simulated magnitudes dereddened with the simulator's own E(B-V); the real file does not say "
                       "whether its magnitudes are dereddened (median E(B-V) ~ 0.03: ~0.03 mag in g-r)")}
    if render_n > 0:
        t0 = time.perf_counter()
        rendered = rendered_sdss_mags(render_n, seed + 1)
        result["sim_image_colours"], _ = cross_domain(rendered, real, seed)
        result["sim_image_colours"]["render_and_measure_s"] = round(time.perf_counter() - t0, 1)
    return result, {"real": real, "sim": sim, "preds": preds}


# -- figures and driver --------------------------------------------------------------------------------------------
def _binned(z, v, edges):
    mid, q = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        s = (z >= lo) & (z < hi)
        if s.sum() >= 20:
            mid.append(0.5 * (lo + hi))
            q.append(np.percentile(v[s], [16, 50, 84]))
    return np.array(mid), np.array(q).reshape(-1, 3)


def sdss_figure(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 9))
    edges = np.arange(0.0, 0.41, 0.025)
    for k, (i, j) in enumerate(((1, 2), (2, 3))):  # g-r, r-i
        for name, d, col in (("simulated (model)", data["sim"], "C0"), ("real SDSS", data["real"], "C3")):
            mid, q = _binned(d["z"], d["mags"][:, i] - d["mags"][:, j], edges)
            ax[0, k].plot(mid, q[:, 1], color=col, label=name)
            ax[0, k].fill_between(mid, q[:, 0], q[:, 2], color=col, alpha=0.25)
        ax[0, k].set(xlabel="z", ylabel=f"{SDSS_BANDS[i]}-{SDSS_BANDS[j]}", title="median and 16-84%")
        ax[0, k].legend()
    for k, (key, truth, title) in enumerate((("sim_to_real", data["real"]["z"], "train simulated, test real"),
                                            ("real_to_sim", data["sim"]["z"], "train real, test simulated"))):
        ax[1, k].scatter(truth, data["preds"][key], s=1, alpha=0.3)
        ax[1, k].plot([0, 0.4], [0, 0.4], "k--", lw=0.8)
        ax[1, k].set(xlabel="z true", ylabel="z predicted (colours only)", title=title, xlim=(0, 0.4), ylim=(0, 0.4))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def morphology_figure(cats: dict, info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    for (preset, morph), c in cats.items():
        m_corr = c["abs_mag"] + population.Q_EVOLUTION * c["z"]
        s = c["early"] & (np.abs(m_corr + 21.5) < 0.5)  # early types at fixed M_r + Q z = -21.5 +- 0.5
        mid, q = _binned(c["z"][s], c["log_re_kpc"][s], np.linspace(0, 1.0, 21))
        ax[0].plot(mid, q[:, 1], ls="-" if morph == "v1" else "--", label=f"{preset} {morph}")
    ax[0].set(xlabel="z", ylabel="median log10 R_e / kpc", title="early types, M_r + Qz = -21.5 +- 0.5")
    ax[0].legend(fontsize=7)
    keys = list(info)
    x = np.arange(len(keys))
    for off, variant in ((-0.2, "noiseless"), (0.2, "with_errors")):
        rows = [info[k][variant] for k in keys]
        rel = np.array([100 * r["colours+morphology"]["delta_vs_colours"] / r["colours"]["nmad"] for r in rows])
        band = np.array([[100 * v / r["colours"]["nmad"] for v in r["colours+morphology"]["delta_16_84"]]
                         for r in rows])
        ax[1].bar(x + off, rel, 0.4, yerr=[rel - band[:, 0], band[:, 1] - rel], capsize=2,
                  label=f"{variant} (colours-only NMAD {rows[0]['colours']['nmad']:.4f} for {keys[0]})")
    ax[1].axhline(0.0, color="k", lw=0.8)
    ax[1].set_xticks(x, [k.replace(":", "\n") for k in keys], fontsize=7)
    ax[1].set(ylabel="NMAD change adding size, n, q, SB (%)", title="< 0: morphology adds information")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(presets, n: int, seed: int, sdss_colors: Path, render_n: int, out: Path) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    result = {"n_per_preset": n, "seed": seed, "folds": FOLDS, "information": {}, "size_redshift_slope": {},
              "profile": {}}
    cats = {}
    for preset in presets:
        for morph in population.MORPHOLOGIES:
            c = cats[(preset, morph)] = catalogue(preset, n, seed, morph)
            key = f"{preset}:{morph}"
            result["information"][key] = information(c, seed)
            result["size_redshift_slope"][key] = size_redshift_slopes(c)
            result["profile"][key] = profile_facts(c)
            print(f"{key}: {json.dumps(result['information'][key]['noiseless']['colours+morphology'])}", flush=True)
    result["surface_brightness_dimming"] = dimming_exponent()
    morphology_figure(cats, result["information"], out / "morphology.png")
    if sdss_colors.exists():
        result["sdss"], fig_data = sdss_check(sdss_colors, n, render_n, seed)
        sdss_figure(fig_data, out / "sdss_colours.png")
    else:
        result["sdss"] = {"skipped": f"{sdss_colors} not found (real SDSS colours; pass --sdss-colors)"}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "sim_morphology.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "sim_morphology")
    ap.add_argument("--n", type=int, default=4000, help="objects per preset and morphology model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--presets", nargs="+", default=["sdss", "kids", "des_deep"])
    ap.add_argument("--sdss-colors", type=Path, default=ROOT.parent / "shared" / "data" / "sdss_galaxy_colors.npy")
    ap.add_argument("--render-n", type=int, default=1500, help="sdss systems rendered for image colours (0: none)")
    args = ap.parse_args(argv)
    res = run(args.presets, args.n, args.seed, args.sdss_colors, args.render_n, args.out)
    print(json.dumps({"sdss": res["sdss"], "dimming": res["surface_brightness_dimming"]["sb_exponent"],
                      "seconds": res["seconds"]}, indent=1))


if __name__ == "__main__":
    main()
