"""SHAP attributions of a trained network's redshift estimate, and their localization scores.

The explainer is shap's GradientExplainer (expected gradients) on the model's point-estimate module
(`NeuralPredictor.point_module()`: (B, C, H, W) -> (B, 1)); it works alike for convolutional and
transformer backbones. Its background is a seeded random sample of the training split; the images
explained are a seeded sample of the test split, balanced over class groups (galaxy, lens, lensed SN)
and, within each, over signal-to-noise bins. Everything is seeded from the config's master seed and
the dataset's name, so the same config gives the same numbers and every model explains the same cutouts.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepred.catalog import derive_seed
from deepred.data.contract import DataError, ProcessedDataset
from deepred.io import write_json, write_npy, write_parquet
from deepred.localization import (
    class_group,
    estimate_snr,
    object_regions,
    score_attributions,
)
from deepred.model_json import MODEL_JSON
from deepred.predictor import NeuralPredictor, load_model
from deepred.provenance import provenance

log = logging.getLogger("deepred.explain")

# Files one explain job writes into results/shap/{model}/{dataset}/.
OUTPUT_FILES = ("per_image.parquet", "attributions.npy", "regions.npy", "explain.json")


class ExplainError(ValueError):
    """Bad input to the explainer (shapes, empty splits, a model that does not fit the data)."""


def _waterfill(caps: list[int], n: int) -> list[int]:
    """Split n as evenly as possible over strata holding caps[i] items each (no stratum over its cap)."""
    alloc = [0] * len(caps)
    n = min(n, sum(caps))
    while n > 0:
        open_ = [i for i in range(len(caps)) if alloc[i] < caps[i]]
        share = max(n // len(open_), 1)
        for i in open_:
            give = min(share, caps[i] - alloc[i], n)
            alloc[i] += give
            n -= give
            if n == 0:
                break
    return alloc


def stratified_sample(rows: pd.DataFrame, n: int, seed: int, snr_bins: int = 3) -> pd.DataFrame:
    """n rows balanced over class groups, and within each group over SNR quantile bins.

    `rows` needs obj_class and snr columns. Balanced (not proportional) so that every class group gets
    a usable per-class score even where it is rare; the overall score is over this balanced sample.
    """
    if len(rows) == 0:
        raise ExplainError("no rows to sample from")
    rows = rows.sort_values("object_id").reset_index(drop=True)  # input order must not matter
    groups = rows["obj_class"].map(class_group)
    rng = np.random.default_rng(seed)
    names = sorted(groups.unique())
    per_group = _waterfill([int((groups == g).sum()) for g in names], n)
    picked = []
    for g, k in zip(names, per_group):
        part = rows[groups == g]
        snr = part["snr"].to_numpy(float)
        nb = max(1, min(snr_bins, len(part)))
        # Quantile bins of this group's SNR; ranks break ties so every bin is filled.
        bins = np.floor(pd.Series(snr).rank(method="first").to_numpy() - 1) * nb // len(part)
        idx_by_bin = [part.index[bins == b].to_numpy() for b in range(nb)]
        for idx, kb in zip(idx_by_bin, _waterfill([len(x) for x in idx_by_bin], k)):
            if kb:
                picked.append(rng.choice(idx, size=kb, replace=False))
    sel = np.sort(np.concatenate(picked)) if picked else np.array([], dtype=int)
    return rows.loc[sel].reset_index(drop=True)


def background_sample(train_rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(train_rows) == 0:
        raise ExplainError("the train split is empty: no background sample for the explainer")
    rows = train_rows.sort_values("object_id").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
    return rows.iloc[idx].reset_index(drop=True)


def shap_attributions(module: torch.nn.Module, background: np.ndarray, images: np.ndarray, nsamples: int,
                      seed: int, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Expected-gradient SHAP values (n, C, H, W) float32 of a (B, C, H, W) -> (B, 1) module.
    Bit-identical for a fixed seed on CPU; on a GPU only up to floating-point reduction order."""
    import shap  # heavy import, only where attributions are made

    background = np.asarray(background, dtype=np.float32)
    images = np.asarray(images, dtype=np.float32)
    if background.ndim != 4 or images.ndim != 4 or background.shape[1:] != images.shape[1:]:
        raise ExplainError(f"background {background.shape} and images {images.shape} must both be (n, C, H, W)"
                           " with the same C, H, W")
    module = module.eval().to(device)
    with torch.no_grad():
        out = module(torch.from_numpy(images[:1]).to(device))
    if out.ndim != 2 or out.shape[1] != 1:
        raise ExplainError(f"the explained module must return (B, 1), got {tuple(out.shape)}")
    explainer = shap.GradientExplainer(module, torch.from_numpy(background).to(device), batch_size=batch_size)
    # GradientExplainer seeds numpy's global generator: keep the caller's state untouched.
    state = np.random.get_state()
    try:
        values = explainer.shap_values(torch.from_numpy(images).to(device), nsamples=nsamples, rseed=seed)
    finally:
        np.random.set_state(state)
    values = np.asarray(values[0] if isinstance(values, list) else values, dtype=np.float32)
    if values.ndim == 5:  # shap >= 0.45 appends the output axis
        values = values[..., 0]
    if values.shape != images.shape:
        raise ExplainError(f"SHAP values have shape {values.shape}, expected {images.shape}")
    return values


def sample_rows(ds: ProcessedDataset, n_explain: int, seed: int, snr_bins: int, scaling: str,
                seg_thresh: float) -> pd.DataFrame:
    """The test rows to explain, with an `snr` column (from the catalogue, else estimated from the pixels)."""
    test = ds.split("test")
    if len(test) == 0:
        raise ExplainError(f"{ds.root}: the test split is empty")
    if "snr" in test.columns and np.isfinite(test["snr"].to_numpy(float)).all():
        test = test.assign(snr_source="catalog")
    else:
        # No catalogue S/N (real surveys): estimate it on a seeded pool of test rows, then stratify that pool.
        pool = test.sort_values("object_id").reset_index(drop=True)
        pool_n = min(len(pool), 20 * n_explain)
        pool = pool.iloc[np.sort(np.random.default_rng(seed + 1).choice(len(pool), pool_n, replace=False))]
        images = ds.images(pool)
        regions, _ = object_regions(images, ds.masks(pool), scaling, thresh=seg_thresh)
        test = pool.reset_index(drop=True).assign(snr=estimate_snr(images, regions, scaling), snr_source="estimated")
    return stratified_sample(test, n_explain, seed, snr_bins)


def explain_and_score(module: torch.nn.Module, ds: ProcessedDataset, shap_cfg: dict, seed: int,
                      device: str = "cpu") -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Explain a stratified test sample of `ds` with `module`; return (per-image table, attributions, regions)."""
    scaling = ds.stats.get("scaling", {}).get("method", "none")
    rows = sample_rows(ds, shap_cfg["n_explain"], derive_seed(seed, "explain"), shap_cfg["snr_bins"], scaling,
                       shap_cfg["segmentation_thresh"])
    bg_rows = background_sample(ds.split("train"), shap_cfg["n_background"], derive_seed(seed, "background"))
    images = ds.images(rows)
    attr = shap_attributions(module, ds.images(bg_rows), images, shap_cfg["nsamples"], derive_seed(seed, "shap"),
                             shap_cfg["batch_size"], device)
    regions, sources = object_regions(images, ds.masks(rows), scaling, thresh=shap_cfg["segmentation_thresh"])
    scores = score_attributions(attr, regions, int(shap_cfg.get("pointing_tolerance", 0)))
    with torch.no_grad():
        z_pred = module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device))[:, 0].cpu().numpy()
    label = ds.stats.get("label_column", "z_lens")
    per_image = pd.DataFrame({
        "object_id": rows["object_id"].astype(str),
        "obj_class": rows["obj_class"].astype(str),
        "class_group": rows["obj_class"].map(class_group),
        "snr": rows["snr"].astype(float),
        "snr_source": rows["snr_source"].astype(str),
        "z_true": rows[label].astype(float) if label in rows else np.nan,
        "z_pred": z_pred.astype(float),
        "region_source": sources,
    })
    per_image = pd.concat([per_image, scores], axis=1)
    return per_image, attr, regions


def explain_model(model_dir: str | Path, processed_dir: str | Path, config: dict, out_dir: str | Path,
                  model: str, dataset: str) -> pd.DataFrame:
    """The Snakemake job: SHAP + localization for one trained model on its dataset's test split."""
    t0 = time.perf_counter()
    shap_cfg = config["shap"]
    torch.set_num_threads(int(shap_cfg["threads"]))
    predictor = load_model(model_dir)
    if not isinstance(predictor, NeuralPredictor):
        raise ExplainError(f"{model_dir}: a {predictor.kind} model; SHAP explains networks only")
    ds = ProcessedDataset(processed_dir)
    try:
        predictor.check_dataset(ds)  # bands, cutout and scaling as in training
    except DataError as exc:
        raise ExplainError(str(exc)) from exc
    # One seed per dataset, not per model: every model explains the same cutouts against the same background,
    # so the models' scores are paired.
    seed = derive_seed(config["seed"], "shap", dataset)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU where the scheduler gave one (gpu=1)
    per_image, attr, regions = explain_and_score(predictor.point_module(), ds, shap_cfg, seed, device)
    out_dir = Path(out_dir)
    per_image.insert(0, "dataset", dataset)
    per_image.insert(0, "model", model)
    write_parquet(out_dir / "per_image.parquet", per_image)
    write_npy(out_dir / "attributions.npy", attr)
    write_npy(out_dir / "regions.npy", regions.astype(np.uint8))
    seconds = time.perf_counter() - t0
    write_json(out_dir / "explain.json", {
        "model": model, "dataset": dataset, "seed": seed, "explainer": "shap.GradientExplainer", "device": device,
        "shap": shap_cfg, "n_images": int(len(per_image)), "seconds": round(seconds, 2),
        "pointing_acc": float(per_image["hit"].mean()), "mass_inside": float(per_image["mass_inside"].mean()),
        "provenance": provenance(config, [Path(model_dir) / MODEL_JSON, Path(processed_dir) / "catalog.parquet"]),
    })
    log.info("%s on %s: %d images explained in %.1f s; pointing %.3f, mass inside %.3f", model, dataset,
             len(per_image), seconds, per_image["hit"].mean(), per_image["mass_inside"].mean())
    return per_image


def load_explained(shap_dir: str | Path) -> dict:
    """Read back one explain job's outputs (per_image, attributions, regions, explain.json)."""
    shap_dir = Path(shap_dir)
    for name in OUTPUT_FILES:
        if not (shap_dir / name).exists():
            raise DataError(f"{shap_dir / name}: missing (run the shap_explain rule)")
    return {
        "per_image": pd.read_parquet(shap_dir / "per_image.parquet"),
        "attributions": np.load(shap_dir / "attributions.npy", allow_pickle=False),
        "regions": np.load(shap_dir / "regions.npy", allow_pickle=False).astype(bool),
        "meta": json.loads((shap_dir / "explain.json").read_text()),
    }
