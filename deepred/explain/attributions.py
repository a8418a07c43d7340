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

from deepred.contracts.model_json import MODEL_JSON
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.core.io import write_json, write_npy, write_parquet
from deepred.core.provenance import provenance
from deepred.core.seeds import derive_seed
from deepred.explain.controls import occlusion_control
from deepred.explain.occlusion_map import occlusion_maps
from deepred.explain.scoring import (
    class_group,
    estimate_snr,
    object_regions,
    score_attributions,
)
from deepred.predict.predictor import NeuralPredictor, load_model
from deepred.training.run import uses_channels_last
from deepred.workflow.paths import SHAP_FILES, SHAP_OCCLUSION_FILE

log = logging.getLogger("deepred.explain.attributions")

# The files one explain job writes (SHAP_FILES, and the occlusion control's SHAP_OCCLUSION_FILE): workflow/paths.py.
# Attribution methods (shap.method): expected gradients per pixel, or summed over windows of the network's input
# unit (its patch, or its first convolution's kernel); or occlusion-sensitivity maps (deepred/explain/occlusion_map.py).
EXPLAINERS = {"expected_gradients": "expected gradients (deepred.explain.attributions)",
              "expected_gradients_patch": "expected gradients over input-unit windows (deepred.explain.attributions)",
              "occlusion": "occlusion-sensitivity maps (deepred.explain.occlusion_map)"}
METHODS = tuple(EXPLAINERS)


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


def _draws(n_images: int, n_background: int, nsamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Background index and interpolation point of every (image, sample), in shap.GradientExplainer's order:
    it seeds numpy's global generator with `rseed`, then per image and sample draws choice(n_background) and
    uniform() (shap/explainers/_gradient.py, _PyTorchGradient.shap_values)."""
    rng = np.random.RandomState(seed)
    idx = np.empty((n_images, nsamples), dtype=np.int64)
    alpha = np.empty((n_images, nsamples))
    for j in range(n_images):
        for k in range(nsamples):
            idx[j, k] = rng.choice(n_background)
            alpha[j, k] = rng.uniform()
    return idx, alpha


def expected_gradients(module: torch.nn.Module, background: np.ndarray, images: np.ndarray, nsamples: int,
                       seed: int, batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Expected gradients (Erion et al. 2021) of a (B, C, H, W) -> (B, 1) module, as shap.GradientExplainer
    computes them and with its random draws (tests/explain/test_shap.py checks the two agree): the mean over samples of
    grad f(x' + t (x - x')) * (x - x'), x' a background row, t uniform. Done here, batched over images, because
    importing shap cost 3 s of CPU per explain job, a fifth of the job. Returns the two half-sample means
    (2, n, C, H, W) float64: their mean is the attribution, their agreement its stability."""
    bg = torch.from_numpy(np.ascontiguousarray(background, dtype=np.float32)).to(device)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)
    idx, alpha = _draws(len(images), len(background), nsamples, seed)
    n = len(images)
    jj_all = np.repeat(np.arange(n), nsamples)  # image of each (image, sample), image-major as shap
    kk_all = np.tile(np.arange(nsamples), n)
    half = (nsamples + 1) // 2  # samples [0, half) and [half, nsamples)
    # per (half, image) sums, in float64 as shap's products of float32 gradients and offsets
    sums = torch.zeros((2 * n, *images.shape[1:]), dtype=torch.float64, device=device)
    for b in range(0, n * nsamples, batch_size):
        jj, kk = jj_all[b:b + batch_size], kk_all[b:b + batch_size]
        ref = bg[torch.from_numpy(idx[jj, kk]).to(device)]
        t = torch.from_numpy(alpha[jj, kk]).to(device=device, dtype=torch.float32)[:, None, None, None]
        xj = x[torch.from_numpy(jj).to(device)]
        point = (t * xj + (1 - t) * ref).detach().requires_grad_()
        (grad,) = torch.autograd.grad(module(point)[:, 0].sum(), point)
        slot = torch.from_numpy((kk >= half) * n + jj).to(device)
        sums.index_add_(0, slot, grad.double() * (xj - ref).double())
    counts = np.array([half, max(nsamples - half, 1)], dtype=float)
    return sums.cpu().numpy().reshape(2, *images.shape) / counts[:, None, None, None, None]


def shap_attributions(module: torch.nn.Module, background: np.ndarray, images: np.ndarray, nsamples: int,
                      seed: int, batch_size: int = 64, device: str = "cpu", halves: bool = False) -> np.ndarray:
    """Expected-gradient SHAP values (n, C, H, W) float32 of a (B, C, H, W) -> (B, 1) module (with
    halves=True: the two half-sample maps too, (3, n, C, H, W)). Bit-identical for a fixed seed on CPU; on a
    GPU only up to floating-point reduction order."""
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
    parts = expected_gradients(module, background, images, nsamples, seed, batch_size, device)
    half = (nsamples + 1) // 2
    values = (parts[0] * half + parts[1] * (nsamples - half)) / nsamples
    if halves:
        return np.concatenate([values[None], parts]).astype(np.float32)
    return values.astype(np.float32)


def patch_size(module: torch.nn.Module) -> int:
    """Side of the network's input unit, the pixels its first layer reads together: the patch of a patch
    embedding (timm's PatchEmbed of Swin and the Mixer carries `patch_size`), else the kernel of the first
    convolution (a CNN's stem); 1 for a network with neither."""
    for sub in module.modules():
        size = getattr(sub, "patch_size", None)
        if size is None and isinstance(sub, torch.nn.Conv2d):
            size = sub.kernel_size
        if size is not None:
            return int(size[0] if isinstance(size, (tuple, list)) else size)
    return 1


def window_sums(attr: np.ndarray, window: int) -> np.ndarray:
    """Each pixel's value replaced by the signed sum over the window x window square centred on it, per band:
    the attribution of that patch-sized region (expected-gradient values add up over a group of pixels).
    A sliding window rather than the network's fixed patch grid, so that the peak stays a pixel and the strict
    pointing game keeps its chance level; edges are mirrored so that every window sums as many pixels."""
    if window <= 1:
        return attr
    from scipy.ndimage import uniform_filter

    return uniform_filter(np.asarray(attr, dtype=np.float64), size=(1, 1, window, window), mode="reflect") * window**2


def attribution_method(shap_cfg: dict, model: str | None, module: torch.nn.Module) -> tuple[str, int]:
    """(method, window px) for one explained network: `method_per_model` over `method`; the window is
    `patch_px` or, where that is null, the network's input unit (patch_size; 1 px for expected_gradients); for
    occlusion, `occlusion_map_window` input units (at least 3 px)."""
    method = (shap_cfg.get("method_per_model") or {}).get(model, shap_cfg.get("method", "expected_gradients"))
    if method not in METHODS:
        raise ExplainError(f"shap method '{method}' for '{model}' unknown; known: {', '.join(METHODS)}")
    if method == "expected_gradients":
        return method, 1
    if method == "occlusion":
        return method, max(3, int(round(float(shap_cfg.get("occlusion_map_window", 2.5)) * patch_size(module))))
    return method, int(shap_cfg.get("patch_px") or patch_size(module))


def attribution_maps(module: torch.nn.Module, method: str, window: int, background: np.ndarray, images: np.ndarray,
                     regions: np.ndarray, shap_cfg: dict, seed: int, device: str = "cpu") -> np.ndarray:
    """(3, n, C, H, W): the method's maps of `images`, then the two half maps whose agreement is its stability
    (expected gradients: disjoint halves of the samples; occlusion: of the noise draws, C = 1)."""
    if method == "occlusion":
        stride, draws = int(shap_cfg.get("occlusion_map_stride_px", 3)), int(shap_cfg.get("occlusion_map_draws", 2))
        return occlusion_maps(module, images, regions, background, window, stride, draws,
                              shap_cfg.get("occlusion_map_fill", "background"), seed, device)
    maps = shap_attributions(module, background, images, shap_cfg["nsamples"], seed, shap_cfg["batch_size"], device,
                             halves=True)
    return np.stack([window_sums(m, window) for m in maps]).astype(np.float32)


def split_half_rho(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per image, the Spearman rank correlation of the band-summed |maps| of the two half samples."""
    from scipy.stats import spearmanr

    a = np.abs(first).sum(axis=1).reshape(len(first), -1)
    b = np.abs(second).sum(axis=1).reshape(len(second), -1)
    return np.array([spearmanr(u, v)[0] if u.std() > 0 and v.std() > 0 else np.nan for u, v in zip(a, b)])


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
                      device: str = "cpu", model: str | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Explain a stratified test sample of `ds` with `module` by the method configured for `model`; return
    (per-image table, the method's attribution maps, regions)."""
    scaling = ds.stats.get("scaling", {}).get("method", "none")
    rows = sample_rows(ds, shap_cfg["n_explain"], derive_seed(seed, "explain"), shap_cfg["snr_bins"], scaling,
                       shap_cfg["segmentation_thresh"])
    bg_rows = background_sample(ds.split("train"), shap_cfg["n_background"], derive_seed(seed, "background"))
    images = ds.images(rows)
    regions, sources = object_regions(images, ds.masks(rows), scaling, thresh=shap_cfg["segmentation_thresh"])
    method, window = attribution_method(shap_cfg, model, module)
    attr, first, second = attribution_maps(module, method, window, ds.images(bg_rows), images, regions, shap_cfg,
                                           derive_seed(seed, "shap"), device)
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
        "method": method,
        "window_px": window,
        # how far the map is from its noise: the rank agreement of two maps from disjoint halves of the samples
        "split_half_rho": split_half_rho(first, second),
    })
    per_image = pd.concat([per_image, scores], axis=1)
    return per_image, attr, regions


def explain_model(model_dir: str | Path, processed_dir: str | Path, config: dict, out_dir: str | Path,
                  model: str, dataset: str) -> pd.DataFrame:
    """The Snakemake job: attributions + localization for one trained model on its dataset's test split,
    and the occlusion control on that split (deepred/explain/controls.py)."""

    t0, cpu0 = time.perf_counter(), time.process_time()
    shap_cfg = dict(config["shap"])
    shap_cfg["n_explain"] = (shap_cfg.get("n_explain_per_dataset") or {}).get(dataset, shap_cfg["n_explain"])
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
    module = predictor.point_module()
    if uses_channels_last(config.get("training", {}), torch.device(device)):
        # as in training: the CNN explain jobs took 0.79x the CPU on the default run's models (docs/shap.md)
        module.to(memory_format=torch.channels_last)
    per_image, attr, regions = explain_and_score(module, ds, shap_cfg, seed, device, model=model)
    cpu_explain = time.process_time() - cpu0
    occlusion = occlusion_control(module, ds, shap_cfg, seed, device)
    out_dir = Path(out_dir)
    for frame in (per_image, occlusion):
        frame.insert(0, "dataset", dataset)
        frame.insert(0, "model", model)
    write_parquet(out_dir / "per_image.parquet", per_image)
    write_npy(out_dir / "attributions.npy", attr)
    write_npy(out_dir / "regions.npy", regions.astype(np.uint8))
    write_parquet(out_dir / SHAP_OCCLUSION_FILE, occlusion)
    seconds = time.perf_counter() - t0
    write_json(out_dir / "explain.json", {
        "model": model, "dataset": dataset, "seed": seed, "method": str(per_image["method"].iloc[0]),
        "window_px": int(per_image["window_px"].iloc[0]), "explainer": EXPLAINERS[str(per_image["method"].iloc[0])],
        "device": device, "shap": shap_cfg, "n_images": int(len(per_image)), "seconds": round(seconds, 2),
        "cpu_seconds_explain": round(cpu_explain, 2), "cpu_seconds_total": round(time.process_time() - cpu0, 2),
        "pointing_acc": float(per_image["hit"].mean()), "mass_inside": float(per_image["mass_inside"].mean()),
        "n_occluded": int(len(occlusion)),
        "provenance": provenance(config, [Path(model_dir) / MODEL_JSON, Path(processed_dir) / "catalog.parquet"]),
    })
    log.info("%s on %s (%s, %d px): %d images explained in %.1f s; pointing %.3f, mass inside %.3f; "
             "%d test cutouts occluded", model, dataset, per_image["method"].iloc[0], per_image["window_px"].iloc[0],
             len(per_image), seconds, per_image["hit"].mean(), per_image["mass_inside"].mean(), len(occlusion))
    return per_image


def load_explained(shap_dir: str | Path) -> dict:
    """Read back one explain job's outputs (per_image, attributions, regions, explain.json)."""
    shap_dir = Path(shap_dir)
    for name in SHAP_FILES:
        if not (shap_dir / name).exists():
            raise DataError(f"{shap_dir / name}: missing (run the shap_explain rule)")
    return {
        "per_image": pd.read_parquet(shap_dir / "per_image.parquet"),
        "attributions": np.load(shap_dir / "attributions.npy", allow_pickle=False),
        "regions": np.load(shap_dir / "regions.npy", allow_pickle=False).astype(bool),
        "meta": json.loads((shap_dir / "explain.json").read_text()),
    }
