"""The simulator's morphology option: the default reproduces the original catalogues bit for bit, "evolving" shrinks
sizes at fixed luminosity with redshift as van der Wel et al. (2014) measured; the morphology benchmark's core
functions measure what they claim (docs/simulator-morphology.md)."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from deepred.simulate import SimulationError, draw_catalog, population

ROOT = Path(__file__).resolve().parents[2]

# sha256 of draw_catalog(preset, 48, 3) (floats rounded to 8 decimals, see _digest), computed with the simulator
# before the morphology option existed: the default must keep producing these catalogues.
ORIGINAL_DIGESTS = {
    "sdss": "59bd7c370be8861fe91718c2e50ffa3f8a182aefcb2f139ec4fa78504d0c96af",
    "kids": "7fa7cf76caf1c6faac970088956bd90e82d1337afa9ae0e689c21b01d9d22521",
    "des_deep": "ec86d7d292acc296892931c46bf85c95338a5d8e8db9b4653fbad31297073e92",
}


def _digest(cat: dict) -> str:
    # rounding keeps the digest independent of last-bit differences of transcendental functions between machines
    h = hashlib.sha256()
    for k in sorted(cat):
        a = np.asarray(cat[k])
        h.update(k.encode())
        h.update(np.round(a, 8).tobytes() if a.dtype.kind == "f" else a.astype(str).tobytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _bench():
    path = ROOT / "benchmarks" / "bench_sim_morphology.py"
    spec = importlib.util.spec_from_file_location("bench_sim_morphology", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("preset", sorted(ORIGINAL_DIGESTS))
def test_default_morphology_reproduces_the_original_catalogue(preset):
    default = draw_catalog(preset, 48, 3)
    assert _digest(default) == ORIGINAL_DIGESTS[preset]
    explicit = draw_catalog(preset, 48, 3, morphology="v1")
    assert all(np.array_equal(default[k], explicit[k], equal_nan=default[k].dtype.kind == "f") for k in default)


def test_evolving_changes_only_sizes_and_shrinks_them_with_redshift():
    v1 = draw_catalog("kids", 3000, 5)
    ev = draw_catalog("kids", 3000, 5, morphology="evolving")
    changed = {k for k in v1 if not np.array_equal(v1[k], ev[k], equal_nan=v1[k].dtype.kind == "f")}
    assert changed == {"re_lens", "nb_re_lens"}  # same random streams: everything else is identical
    z, ratio = v1["z_lens"], ev["re_lens"] / v1["re_lens"]
    early = v1["sed_lens"] < population.EARLY_SED_MAX
    # at fixed luminosity (same object) the size ratio is ((1+z)/1.1)^-beta: 1.48 early, 0.75 late
    for sel, beta in ((early, 1.48), (~early, 0.75)):
        slope = np.polyfit(np.log10(1 + z[sel]), np.log10(ratio[sel]), 1)[0]
        assert slope == pytest.approx(-beta, abs=1e-6)
    assert np.all(ratio[z > 0.2] < 1.0) and np.all(ratio[z < 0.05] > 1.0)


def test_size_redshift_slope_at_fixed_luminosity_measures_the_option():
    bench = _bench()
    v1 = bench.size_redshift_slopes(bench.catalogue("des_deep", 2000, 1))
    ev = bench.size_redshift_slopes(bench.catalogue("des_deep", 2000, 1, "evolving"))
    # v1: no evolution at fixed M + Q z (within noise); evolving: exactly 1.48 steeper for the same draws
    assert abs(v1["early"]["fixed_M_plus_Qz"]) < 0.3
    assert ev["early"]["fixed_M_plus_Qz"] - v1["early"]["fixed_M_plus_Qz"] == pytest.approx(-1.48, abs=0.01)


def test_unknown_morphology_is_refused():
    with pytest.raises(SimulationError, match="morphology must be one of v1, evolving"):
        draw_catalog("sdss", 4, 0, morphology="bulge")


def test_surface_brightness_dims_as_one_plus_z_to_the_fourth():
    dim = _bench().dimming_exponent()
    assert dim["sb_exponent"] == pytest.approx(-4.0, abs=0.05)
    assert np.allclose(dim["half_light_share_in_R_e"], 0.5, atol=0.01)  # rendered sizes are the drawn R_e


def test_information_sees_the_label_leak_and_noise():
    """On a tiny sample: kpc sizes (which need z) and colours with errors behave as they must."""
    bench = _bench()
    c = bench.catalogue("sdss", 600, 2)
    sets = bench.feature_sets(c)
    assert sets["colours"].shape == (600, 9) and sets["colours+morphology"].shape == (600, 13)
    noisy = bench.feature_sets(c, np.random.default_rng(0))
    assert set(noisy) == {"colours", "colours+morphology"}
    pred = bench.oof_predict(sets["colours"], c["z"], 0)
    pred_noisy = bench.oof_predict(noisy["colours"], c["z"], 0)
    # noiseless colours pin z far better than 0.05 mag errors allow
    assert bench.nmad(pred, c["z"]) < 0.5 * bench.nmad(pred_noisy, c["z"])
    # a perfect predictor scores 0; a 1% bias moves the median, not the NMAD
    m = bench.point_metrics(c["z"] + 0.01 * (1 + c["z"]), c["z"])
    assert m["nmad"] == pytest.approx(0.0, abs=1e-9) and m["bias"] == pytest.approx(0.01) and m["outlier_frac"] == 0


def test_cross_domain_on_identical_domains_matches_within():
    bench = _bench()
    c = bench.catalogue("sdss", 800, 3)
    sim = {"z": c["z"], "mags": c["mags"]}
    res, preds = bench.cross_domain(sim, sim, 0)
    # trained on all and tested on the same objects: no worse than out-of-fold
    assert res["sim_to_real"]["nmad"] <= res["within_sim"]["nmad"] + 1e-9
    assert res["within_sim"] == res["within_real"] and len(preds["sim_to_real"]) == 800
