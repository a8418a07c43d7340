"""The simulator's driver: a survey preset and a seed in, a raw dataset folder out.

Survey simulator: survey-realistic cutouts with known redshifts (the pipeline's embedded default data).

`simulate_dataset(preset, n_systems, seed, out_dir, bands, cutout, class_fractions)` writes, into out_dir,
images.npy (float32 N,B,H,W, nanomaggies/pixel, AB zero point 22.5), masks.npy (uint8 N,H,W, footprint of
the central object incl. arcs and SN images), truth.parquet and meta.json (docs/contracts.md). Everything is
written into a temporary sibling folder and renamed into place at the end; images stream through
np.lib.format.open_memmap in batches, so memory is bounded by one batch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.simulate import population, sed
from deepred.simulate.render import MASK_NSIGMA, MASK_PEAK_FRAC, Renderer
from deepred.simulate.surveys import SimulationError, extinction_coefficient, get_preset, presets
from deepred.workflow.paths import SIMULATED_FILES

__all__ = ["simulate_dataset", "SimulationError", "presets", "get_preset", "dataset_seed", "draw_catalog"]

log = logging.getLogger("deepred.simulate")
BATCH = 64  # systems rendered together (memory ~ 50 MB for 45x45x4 at 3x supersampling)
OUTPUT_FILES = SIMULATED_FILES  # the raw folder's files, named in deepred.workflow.paths


def dataset_seed(seed: int, preset: str) -> int:
    """A per-dataset seed from the master seed and the preset, so that datasets differ."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{preset}".encode()).digest()[:8], "little")


def _check_args(preset, n_systems, seed, bands, cutout, class_fractions):
    p = get_preset(preset)
    if not isinstance(n_systems, (int, np.integer)) or isinstance(n_systems, bool) or n_systems < 1:
        raise SimulationError(f"n_systems must be a positive integer, got {n_systems!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")
    bands = list(bands) if bands is not None else list(p.bands)
    if not bands:
        raise SimulationError(f"preset '{preset}': no bands requested")
    missing = [b for b in bands if b not in p.bands]
    if missing:
        raise SimulationError(
            f"preset '{preset}': band(s) {missing} not available; available bands: {', '.join(p.bands)}"
        )
    if len(set(bands)) != len(bands):
        raise SimulationError(f"preset '{preset}': duplicate bands in {bands}")
    cutout = p.default_cutout if cutout is None else cutout
    if not isinstance(cutout, (int, np.integer)) or isinstance(cutout, bool) or not 8 <= cutout <= 512:
        raise SimulationError(f"cutout must be an integer between 8 and 512 pixels, got {cutout!r}")
    defaults = population.DEFAULT_FRACTIONS[p.population]
    fr = dict(defaults if class_fractions is None else class_fractions)
    unknown = sorted(set(fr) - set(defaults))
    if unknown:
        raise SimulationError(
            f"preset '{preset}': class_fractions has unknown class(es) {unknown}; classes: {', '.join(defaults)}"
        )
    fr = {k: float(fr.get(k, 0.0)) for k in defaults}
    if any(v < 0 or not np.isfinite(v) for v in fr.values()) or not abs(sum(fr.values()) - 1.0) < 1e-6:
        raise SimulationError(f"preset '{preset}': class_fractions must be >= 0 and sum to 1, got {fr}")
    return p, bands, int(cutout), fr


def _check_morphology(morphology) -> str:
    if morphology not in population.MORPHOLOGIES:
        raise SimulationError(f"morphology must be one of {', '.join(population.MORPHOLOGIES)}, got {morphology!r}")
    return morphology


def draw_catalog(preset: str, n_systems: int, seed: int, bands=None, class_fractions=None, cutout=None,
                 neighbours: bool = True, morphology: str = "v1") -> dict:
    """Per-object parameters and apparent magnitudes / fluxes (nanomaggies) for every band.

    morphology: population.MORPHOLOGIES; "v1" (default) is the original size model, "evolving" adds size
    evolution at fixed luminosity (docs/simulator-morphology.md)."""
    p, bands, cutout, fr = _check_args(preset, n_systems, seed, bands, cutout, class_fractions)
    _check_morphology(morphology)
    rng = np.random.default_rng(dataset_seed(seed, preset))
    cat = population.draw_systems(rng, n_systems, p.population, fr, p)
    r_filter = p.bands["r"].filter_name
    cat.update(population.neighbours(np.random.default_rng([dataset_seed(seed, preset), 2]), n_systems, p, cutout,
                                     r_filter))
    population.apply_morphology(cat, morphology)  # after every draw: the random streams are the same for all models
    if not neighbours:
        cat["nb_present"][:] = False
        cat["n_neighbours"][:] = 0
    # Galactic extinction along each line of sight (selection cuts use dereddened magnitudes, as SDSS's)
    ext_rng = np.random.default_rng([dataset_seed(seed, preset), 3])
    cat["ebv"] = p.ebv_median * np.exp(ext_rng.normal(0.0, 0.5, n_systems)) if p.ebv_median > 0 else np.zeros(n_systems)
    for b in bands:
        filt = p.bands[b].filter_name
        a_b = extinction_coefficient(filt) * cat["ebv"]
        cat[f"flux_nb_{b}"] = np.where(
            cat["nb_present"],
            10.0 ** (-0.4 * (sed.galaxy_mag(cat["nb_sed_lens"], cat["nb_z_lens"], cat["nb_abs_mag_lens"], filt)
                             + a_b[:, None] - 22.5)),
            0.0,
        )
        cat[f"mag_{b}"] = sed.galaxy_mag(cat["sed_lens"], cat["z_lens"], cat["abs_mag_lens"], filt) + a_b
        zs = np.where(cat["is_lens"], cat["z_source"], 1.0)
        m_src = sed.galaxy_mag(cat["sed_src"], zs, cat["abs_mag_src"], filt) + a_b
        cat[f"mag_source_{b}"] = np.where(cat["is_lens"], m_src, np.nan)
        sn_t = np.where(cat["obj_class"] == "lensed_sn_ia", "SN_Ia", "SN_CC")
        m_sn = sed.apparent_mag(sn_t, zs, np.nan_to_num(cat["sn_abs_mag"]), filt) + a_b
        cat[f"mag_sn_peak_{b}"] = np.where(np.isfinite(cat["sn_abs_mag"]), m_sn, np.nan)
        for comp, key in (("lens", "mag"), ("src", "mag_source"), ("sn", "mag_sn_peak")):
            cat[f"flux_{comp}_{b}"] = np.nan_to_num(10.0 ** (-0.4 * (cat[f"{key}_{b}"] - 22.5)))
    return cat


def _truth_table(cat: dict, bands, preset: str, extra: dict) -> pd.DataFrame:
    n = len(cat["z_lens"])
    ids = [f"{preset}-{i:07d}" for i in range(n)]
    df = pd.DataFrame({
        "object_id": ids,
        "system_id": ids,  # one object per system (no augmentation copies)
        "obj_class": cat["obj_class"].astype(str),
        "z_lens": cat["z_lens"],
        "z_source": cat["z_source"],
    })
    for b in bands:
        df[f"mag_{b}"] = cat[f"mag_{b}"]
    df["snr"] = extra["snr"]
    df["ebv"] = cat["ebv"]  # Galactic E(B-V); mag_* are observed (extincted) magnitudes
    if preset == "kids" or get_preset(preset).population == "kids":
        # high-probability lens: a true lens whose arcs are clearly detected and resolved
        df["high_prob_lens"] = cat["is_lens"] & (extra["arc_snr"] > 15.0) & (cat["theta_e"] > 0.6)
    df["is_lens"] = cat["is_lens"]
    df["theta_e"] = np.where(cat["is_lens"], cat["theta_e"], np.nan)
    df["sigma_v"] = np.where(cat["is_lens"], cat.get("sigma_v", np.nan), np.nan)
    df["template"] = cat["template_lens"].astype(str)
    df["sed_type"] = cat["sed_lens"]
    df["abs_mag_r"] = cat["abs_mag_lens"]
    df["r_eff_arcsec"] = cat["re_lens"]
    df["sersic_n"] = cat["n_lens"]
    df["axis_ratio"] = cat["q_lens"]
    df["arc_snr"] = extra["arc_snr"]
    df["n_sn_images"] = extra["n_images"]
    df["sn_mu_total"] = extra["mu_total"]
    for b in bands:
        df[f"mag_source_{b}"] = cat[f"mag_source_{b}"]
    df["psf_scale"] = cat["psf_scale"]
    df["n_neighbours"] = cat["n_neighbours"].astype(np.int16)
    nb_mag = np.where(cat["nb_present"], -2.5 * np.log10(np.maximum(cat[f"flux_nb_{bands[0]}"], 1e-30)) + 22.5, np.inf)
    df[f"neighbour_mag_{bands[0]}"] = np.where(cat["n_neighbours"] > 0, nb_mag.min(axis=1), np.nan)
    return df


def simulate_dataset(preset: str, n_systems: int, seed: int, out_dir, bands=None, cutout=None,
                     class_fractions=None, neighbours: bool = True, morphology: str = "v1") -> Path:
    """Render one dataset into out_dir (see the module docstring). Returns out_dir.

    neighbours=False leaves out the unrelated field galaxies that otherwise share the cutouts; morphology as in
    draw_catalog (meta.json names it only when it is not the default "v1", so default datasets are unchanged)."""
    p, bands, cutout, fr = _check_args(preset, n_systems, seed, bands, cutout, class_fractions)
    _check_morphology(morphology)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    cat = draw_catalog(preset, n_systems, seed, bands, fr, cutout, neighbours, morphology)
    renderer = Renderer(p, bands, cutout)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        extra = _render_batches(renderer, cat, tmp, preset, seed)
        truth = _truth_table(cat, bands, preset, extra)
        truth.to_parquet(tmp / "truth.parquet", index=False)
        elapsed = time.perf_counter() - t0
        meta = _meta(preset, p, renderer, seed, n_systems, fr, neighbours)
        meta["render_seconds"] = round(elapsed, 2)
        if morphology != "v1":
            meta["morphology"] = morphology
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _install(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %d systems in %.1f s -> %s", preset, n_systems, time.perf_counter() - t0, out_dir)
    return out_dir


def _render_batches(renderer: Renderer, cat: dict, tmp: Path, preset: str, seed: int) -> dict:
    """Render the catalogue BATCH systems at a time into tmp/images.npy and tmp/masks.npy (memory-mapped);
    returns the per-system snr, arc_snr, n_images and mu_total."""
    n_systems, bands, cutout = len(cat["z_lens"]), renderer.bands, renderer.H
    images = np.lib.format.open_memmap(
        tmp / "images.npy", mode="w+", dtype=np.float32, shape=(n_systems, len(bands), cutout, cutout)
    )
    masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8,
                                      shape=(n_systems, cutout, cutout))
    extra = {"snr": np.empty(n_systems), "arc_snr": np.empty(n_systems),
             "n_images": np.zeros(n_systems, np.int16), "mu_total": np.full(n_systems, np.nan)}
    for k, start in enumerate(range(0, n_systems, BATCH)):
        stop = min(start + BATCH, n_systems)
        part = {key: v[start:stop] for key, v in cat.items()}
        rng = np.random.default_rng([dataset_seed(seed, preset), 1, k])  # noise stream per batch
        out = renderer.render(part, rng)
        images[start:stop] = out["images"]
        masks[start:stop] = out["masks"]
        for key in extra:
            extra[key][start:stop] = out[key]
        if k % 20 == 0:
            log.info("%s: rendered %d / %d systems", preset, stop, n_systems)
    images.flush()
    masks.flush()
    del images, masks
    return extra


def _meta(preset: str, p, renderer: Renderer, seed: int, n_systems: int, fr: dict, neighbours: bool) -> dict:
    """meta.json of a dataset (docs/contracts.md), all but render_seconds."""
    bands, cutout = renderer.bands, renderer.H
    return {
        "preset": preset, "survey": p.survey, "seed": int(seed), "dataset_seed": dataset_seed(seed, preset),
        "n_systems": int(n_systems), "bands": bands, "cutout": cutout, "pixel_scale": p.pixel_scale,
        "units": "nanomaggies per pixel (AB zero point 22.5), background-subtracted mean co-add",
        "class_fractions": fr, "epochs": p.epochs, "cadence_days": p.cadence_days,
        "read_noise_e": p.read_noise, "gain_e_per_adu": p.gain, "psf_kind": p.psf_kind,
        "filters": {b: p.bands[b].filter_name for b in bands},
        "psf_fwhm_arcsec": {b: p.bands[b].psf_fwhm for b in bands},
        "exposure_s_per_epoch": {b: p.bands[b].exposure for b in bands},
        "zeropoint_e_per_s": {b: p.bands[b].zeropoint for b in bands},
        "sky_mag_per_arcsec2": {b: p.bands[b].sky_mag for b in bands},
        "sky_sigma_nmgy": dict(zip(bands, map(float, renderer.sky_sigma()))),
        "cosmology": "FlatLambdaCDM(H0=70, Om0=0.3)",
        "mask": (f"noiseless band-summed lens light or arcs above max({MASK_NSIGMA} x sky sigma, "
                 f"{MASK_PEAK_FRAC} x their peak), plus centre and SN image pixels"),
        "versions": {k: importlib.metadata.version(k) for k in
                     ("numpy", "scipy", "astropy", "galsim", "speclite", "surveycodex")},
        "neighbours": (f"Poisson field galaxies r < {p.neighbour_mag_limit} (not in masks)" if neighbours
                       else "none"),
    }


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished files into out_dir (each by an atomic rename; meta.json last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES[:-1] + ("meta.json",):
        os.replace(tmp / name, out_dir / name)
