"""Controls that say whether a network uses the object, beside its attribution maps.

- Occlusion: the test cutouts' redshifts predicted again with the object region replaced by sky noise, and
  with a region of the same shape elsewhere in the cutout replaced instead (the same mask moved by half the
  cutout, minus whatever of it falls near the object). A network that uses the object loses accuracy when the
  object is hidden, not when the sky is. Done twice: for the object's footprint (the region the pointing game
  scores) and for the footprint grown by `shap.occlusion_grow_px` (its faint outskirts too).
  Score: reliance = (error object hidden - error elsewhere hidden) / error clean, with a paired bootstrap
  interval; the error is the NMAD taken about zero (robust_error), which counts a shift of the predictions.
  Sky noise shows the network a cutout without an object, which it never saw in training, so it also measures
  the network's reaction to that. Hence a third, in-distribution pair: the grown footprint, and the same mask
  elsewhere, swapped for the same pixels of another test cutout (a donor, which holds its own object there).
  A network that reads the object then predicts something like the donor's redshift (swap_reliance; verdict
  `swap_uses_object`); one whose signal lies elsewhere does not move (tests/explain/test_shap.py).
- Shuffled labels (Adebayo et al. 2018's data randomization test): the same architecture trained on the same
  images with the training and validation redshifts permuted, then explained the same way. A localization score
  that such a network reaches as well says that the maps follow the image, not what the network learned.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from deepred.core.model_names import OCCLUSION_VARIANTS as VARIANTS

from deepred.core.seeds import derive_seed
from deepred.explain.scoring import (
    OCCLUSION_COLUMNS,
    SHUFFLED_COLUMNS,
    bootstrap_mean,
    class_group,
    estimate_snr,
    object_regions,
    subsets,
)
from deepred.explain.perturb import donor_index, fill_with_sky, occlusion_masks, predict, sky_levels
from deepred.core.metrics import NMAD_SCALE, bootstrap_indices, dz, nmad

log = logging.getLogger("deepred.explain.controls")

# VARIANTS (deepred.core.model_names): the masks of occlusion_masks filled with sky noise, then the grown footprint and
# its moved copy filled from a donor cutout (SWAPS: variant -> its mask).
SWAPS = {"swap": "wide", "swap_elsewhere": "wide_elsewhere"}
# The reliance scores: column -> (variant hidden, its control elsewhere).
RELIANCES = {"reliance": ("object", "elsewhere"), "wide_reliance": ("wide", "wide_elsewhere"),
             "swap_reliance": ("swap", "swap_elsewhere")}
LOOKS_AT = ("object", "around_object", "not_object")



def occlusion_rows(ds, n_max: int | None, seed: int) -> pd.DataFrame:
    """The test rows the occlusion control predicts: all, or a seeded sample of n_max (in object_id order)."""
    test = ds.split("test").sort_values("object_id").reset_index(drop=True)
    if n_max is not None and len(test) > n_max:
        pick = np.sort(np.random.default_rng(seed).choice(len(test), n_max, replace=False))
        test = test.iloc[pick].reset_index(drop=True)
    return test


def occlusion_control(module: torch.nn.Module, ds, shap_cfg: dict, seed: int, device: str = "cpu") -> pd.DataFrame:
    """Per test cutout: the true redshift, the prediction on the clean cutout and with each occlusion variant,
    and the pixels each variant hid (`px_*`). Seeded from `seed`: same config, same numbers."""
    scaling = ds.stats.get("scaling", {}).get("method", "none")
    rows = occlusion_rows(ds, shap_cfg.get("occlusion_n"), derive_seed(seed, "occlusion_rows"))
    images = ds.images(rows)
    regions, _ = object_regions(images, ds.masks(rows), scaling, thresh=shap_cfg["segmentation_thresh"])
    masks = occlusion_masks(regions, int(shap_cfg["occlusion_grow_px"]))
    snr = (rows["snr"].to_numpy(float) if "snr" in rows and np.isfinite(rows["snr"].to_numpy(float)).all()
           else estimate_snr(images, regions, scaling))
    label = ds.stats.get("label_column", "z_lens")
    out = pd.DataFrame({
        "object_id": rows["object_id"].astype(str),
        "class_group": rows["obj_class"].map(class_group),
        "snr": snr,
        "z_true": rows[label].astype(float),
        "z_clean": predict(module, images, device),
    })
    rng = np.random.default_rng(derive_seed(seed, "occlusion_noise"))
    levels = sky_levels(images, masks["sky"])
    donors = donor_index(len(images), derive_seed(seed, "occlusion_donors"))
    for name in VARIANTS:
        hide = masks[SWAPS.get(name, name)]
        filled = (np.where(hide[:, None], images[donors], images) if name in SWAPS
                  else fill_with_sky(images, hide, levels, rng))
        out[f"z_{name}"] = predict(module, filled, device)
        out[f"px_{name}"] = hide.sum(axis=(1, 2))
    out["donor_id"] = out["object_id"].to_numpy()[donors]
    return out


def robust_error(z_pred: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """1.4826 median |dz| over the last axis: the NMAD taken about zero instead of about the median, so that a
    shift of every prediction counts as lost accuracy. (The NMAD's median subtraction hides one: a toy network
    whose object was hidden predicted -0.6 for every cutout, and its NMAD only doubled.)"""
    return NMAD_SCALE * np.median(np.abs(dz(z_pred, z_true)), axis=-1)


def _errors(frame: pd.DataFrame, idx: np.ndarray | None) -> dict[str, np.ndarray]:
    """robust_error of the clean and each occluded prediction, on the rows or on each bootstrap resample."""
    z_true = frame["z_true"].to_numpy(float)
    take = (lambda a: a) if idx is None else (lambda a: a[idx])
    return {name: robust_error(take(frame[f"z_{name}"].to_numpy(float)), take(z_true))
            for name in ("clean", *VARIANTS) if f"z_{name}" in frame}  # files before the swaps lack them


def _reliance(err: dict, hidden: str, control: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (err[hidden] - err[control]) / err["clean"]


def occlusion_scores(frame: pd.DataFrame, n_resamples: int, seed: int, level: float, threshold: float) -> dict:
    """One subset's occlusion rows: the NMAD of the clean predictions, the robust error of each variant, the three
    reliances (error added by filling the region minus that added by filling the same area elsewhere, over the
    clean error) with paired bootstrap intervals, and two verdicts. `looks_at` (sky-noise fills): `object` when
    hiding the footprint costs more than `threshold` (lower bound), `around_object` when only hiding the grown
    footprint does, else `not_object`. `swap_uses_object`: the donor swap of the grown footprint does."""
    out = dict.fromkeys(OCCLUSION_COLUMNS, float("nan"))
    out["occl_n"], out["looks_at"], out["swap_uses_object"] = int(len(frame)), "", ""
    if len(frame) < 2:
        return out
    point = _errors(frame, None)
    boot = _errors(frame, bootstrap_indices(len(frame), n_resamples, seed)) if n_resamples > 0 else point
    a = (1 - level) / 2
    for key, (hidden, control) in RELIANCES.items():
        if hidden not in point:
            continue
        out[key] = float(_reliance(point, hidden, control))
        lo, hi = np.nanquantile(np.atleast_1d(_reliance(boot, hidden, control)), [a, 1 - a])
        out[f"{key}_lo"], out[f"{key}_hi"] = float(lo), float(hi)
    out["nmad_clean"] = nmad(frame["z_clean"].to_numpy(float), frame["z_true"].to_numpy(float))
    out["err_clean"] = float(point["clean"])
    for name in VARIANTS:
        out[f"err_{name}_hidden"] = float(point.get(name, np.nan))
    out["looks_at"] = ("object" if out["reliance_lo"] > threshold else
                       "around_object" if out["wide_reliance_lo"] > threshold else "not_object")
    if np.isfinite(out["swap_reliance_lo"]):
        out["swap_uses_object"] = "yes" if out["swap_reliance_lo"] > threshold else "no"
    return out


def occlusion_summary(frame: pd.DataFrame, hq_snr: float, n_resamples: int, seed: int, level: float,
                      threshold: float) -> pd.DataFrame:
    """occlusion_scores per subset (all, class groups, high quality), one row each, `subset` first."""
    rows = []
    for name, sel in subsets(frame, hq_snr).items():
        rows.append({"subset": name, **occlusion_scores(frame[sel], n_resamples, derive_seed(seed, name), level,
                                                        threshold)})
    return pd.DataFrame(rows, columns=["subset", *OCCLUSION_COLUMNS])


def shuffled_summary(per_image: pd.DataFrame, hq_snr: float, n_resamples: int, seed: int,
                     level: float) -> pd.DataFrame:
    """Strict pointing accuracy of the shuffled-label network per subset, with bootstrap intervals."""
    rows = []
    for name, sel in subsets(per_image, hq_snr).items():
        acc, lo, hi = bootstrap_mean(per_image.loc[sel, "hit"].to_numpy(float), n_resamples,
                                     derive_seed(seed, name), level)
        rows.append({"subset": name, "shuffled_pointing_acc": acc, "shuffled_pointing_lo": lo,
                     "shuffled_pointing_hi": hi})
    return pd.DataFrame(rows, columns=["subset", *SHUFFLED_COLUMNS])
