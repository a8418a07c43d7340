"""HOG+SVR baseline: histogram-of-oriented-gradients features per band into an RBF support-vector regressor.

Features: skimage.feature.hog on every band of a cutout (L2-Hys block normalization), concatenated
band after band, then standardized (mean/scale of the training rows). Model: sklearn SVR(kernel="rbf");
C, epsilon and gamma are chosen on the validation split by NMAD (gamma as multiples of 1/n_features,
which is sklearn's "scale" on standardized features). Training rows are capped (`max_train_rows`):
an SVR fit costs between O(n^2) and O(n^3) in the number of rows.

Saving without pickle: the fitted model is its support vectors, dual coefficients, intercept, gamma,
scaler mean/scale and HOG parameters in model.npz (read with allow_pickle=False) plus model.json with
the SHA-256 of model.npz, checked on load. Predictions always use `HogSVRModel.predict` (numpy, float64),
right after fitting and after reloading, so both give the same bits. The rule fits (`train_hogsvr`) and then
predicts like any other model (deepred.predict.splits.predict_model, through deepred.predict.predictor).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.feature import hog
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.core.io import atomic_path, write_json
from deepred.core.metrics import metric_values, sample_arrays
from deepred.contracts.model_json import HOGSVR, HOGSVR_MODEL, MODEL_JSON, WEIGHTS_FILE, read_verified_card, write_card
from deepred.core.provenance import provenance

log = logging.getLogger("deepred.baselines.hogsvr")

FORMAT_VERSION = 1
_ARRAYS = ("support_vectors", "dual_coef", "intercept", "gamma", "scaler_mean", "scaler_scale")


class HogSVRError(ValueError):
    """Bad HOG+SVR input or model file; the message names the file or setting and the problem."""


@dataclass(frozen=True)
class HogParams:
    orientations: int
    pixels_per_cell: int
    cells_per_block: int

    @classmethod
    def from_config(cls, cfg: dict, cutout: int) -> "HogParams":
        ppc = cutout // int(cfg["cells_per_side"])
        if ppc < 2:
            raise HogSVRError(
                f"baselines.hogsvr.cells_per_side={cfg['cells_per_side']} leaves {ppc} px per cell on a "
                f"{cutout} px cutout; need >= 2"
            )
        if cutout // ppc < int(cfg["cells_per_block"]):
            raise HogSVRError(f"baselines.hogsvr.cells_per_block={cfg['cells_per_block']} exceeds the cells per side")
        return cls(int(cfg["orientations"]), ppc, int(cfg["cells_per_block"]))


def hog_features(images: np.ndarray, params: HogParams) -> np.ndarray:
    """(N, bands, H, W) -> (N, bands * features_per_band) float64 HOG features, band after band."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise HogSVRError(f"hog_features: expected images of shape (N, bands, H, W), got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise HogSVRError(f"hog_features: {int((~np.isfinite(images)).sum())} non-finite pixels")
    kw = dict(
        orientations=params.orientations,
        pixels_per_cell=(params.pixels_per_cell, params.pixels_per_cell),
        cells_per_block=(params.cells_per_block, params.cells_per_block),
        block_norm="L2-Hys",
        feature_vector=True,
    )
    rows = [np.concatenate([hog(img[b], **kw) for b in range(img.shape[0])]) for img in images]
    return np.asarray(rows, dtype=np.float64).reshape(len(images), -1)


@dataclass
class HogSVRModel:
    """A fitted HOG+SVR: everything needed to predict, as plain arrays."""

    hog: HogParams
    bands: list[str]
    cutout: int
    support_vectors: np.ndarray  # (n_sv, n_features), standardized feature space
    dual_coef: np.ndarray  # (n_sv,)
    intercept: float
    gamma: float
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    hyper: dict  # chosen C, epsilon, gamma_scale and the validation grid

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """RBF SVR decision function: sum_i a_i exp(-gamma |x - sv_i|^2) + b."""
        x = (np.asarray(features, dtype=np.float64) - self.scaler_mean) / self.scaler_scale
        out = np.empty(len(x))
        sv_sq = np.einsum("ij,ij->i", self.support_vectors, self.support_vectors)
        for lo in range(0, len(x), 512):  # chunks keep the kernel block small
            xb = x[lo:lo + 512]
            d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + sv_sq[None, :] - 2.0 * xb @ self.support_vectors.T
            out[lo:lo + 512] = np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.dual_coef + self.intercept
        return out

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != (len(self.bands), self.cutout, self.cutout):
            raise HogSVRError(
                f"images of shape {images.shape[1:]} do not match the model's "
                f"({len(self.bands)}, {self.cutout}, {self.cutout}) (bands {self.bands})"
            )
        return self.predict_features(hog_features(images, self.hog))

    def save(self, model_dir: str | Path, extra_meta: dict | None = None) -> None:
        """model.npz (arrays, no pickle) + model.json (parameters, SHA-256 of model.npz), atomically."""
        npz = Path(model_dir) / WEIGHTS_FILE[HOGSVR]
        arrays = {
            "support_vectors": self.support_vectors,
            "dual_coef": self.dual_coef,
            "intercept": np.array([self.intercept]),
            "gamma": np.array([self.gamma]),
            "scaler_mean": self.scaler_mean,
            "scaler_scale": self.scaler_scale,
        }
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        write_card(model_dir, HOGSVR, {
            "model": HOGSVR_MODEL,
            "format_version": FORMAT_VERSION,
            "hog": {"orientations": self.hog.orientations, "pixels_per_cell": self.hog.pixels_per_cell,
                    "cells_per_block": self.hog.cells_per_block, "block_norm": "L2-Hys"},
            "bands": list(self.bands),
            "cutout": int(self.cutout),
            "n_support_vectors": int(len(self.support_vectors)),
            "n_features": int(self.support_vectors.shape[1]),
            "hyper": self.hyper,
            **(extra_meta or {}),
        })

    @classmethod
    def load(cls, model_dir: str | Path) -> "HogSVRModel":
        """Read model.json + model.npz, verifying the checksum; never unpickles."""
        model_dir = Path(model_dir)
        meta, npz = read_verified_card(model_dir, HOGSVR, HogSVRError, "not a fitted HOG+SVR model folder")
        if meta.get("model") != HOGSVR_MODEL or meta.get("format_version") != FORMAT_VERSION:
            raise HogSVRError(f"{model_dir / MODEL_JSON}: not a HOG+SVR model of format {FORMAT_VERSION}")
        with np.load(npz, allow_pickle=False) as z:
            missing = [k for k in _ARRAYS if k not in z.files]
            if missing:
                raise HogSVRError(f"{npz}: arrays {missing} missing")
            a = {k: z[k] for k in _ARRAYS}
        h = meta["hog"]
        return cls(
            hog=HogParams(int(h["orientations"]), int(h["pixels_per_cell"]), int(h["cells_per_block"])),
            bands=list(meta["bands"]),
            cutout=int(meta["cutout"]),
            support_vectors=a["support_vectors"],
            dual_coef=a["dual_coef"],
            intercept=float(a["intercept"][0]),
            gamma=float(a["gamma"][0]),
            scaler_mean=a["scaler_mean"],
            scaler_scale=a["scaler_scale"],
            hyper=meta["hyper"],
        )


def _nmad(z_pred, z_true) -> float:
    return metric_values("nmad", sample_arrays(z_pred, z_true), {})


def fit_hogsvr(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cfg: dict,
    hog_params: HogParams, bands: list[str], cutout: int,
) -> HogSVRModel:
    """Standardize, fit one SVR per (C, epsilon, gamma_scale) and keep the best by validation NMAD."""
    if len(x_train) < 2 or len(x_val) < 1:
        raise HogSVRError(f"HOG+SVR needs >= 2 training and >= 1 validation rows, got {len(x_train)}, {len(x_val)}")
    scaler = StandardScaler().fit(x_train)
    xs_train, xs_val = scaler.transform(x_train), scaler.transform(x_val)
    base_gamma = 1.0 / (xs_train.shape[1] * xs_train.var())  # sklearn's gamma="scale"
    grid, best = [], None
    for c, eps, gs in itertools.product(cfg["C"], cfg["epsilon"], cfg["gamma_scale"]):
        t0 = time.perf_counter()
        svr = SVR(kernel="rbf", C=float(c), epsilon=float(eps), gamma=float(gs * base_gamma), cache_size=500)
        svr.fit(xs_train, y_train)
        score = _nmad(svr.predict(xs_val), y_val)
        grid.append({"C": float(c), "epsilon": float(eps), "gamma_scale": float(gs), "val_nmad": score,
                     "n_support_vectors": int(len(svr.support_)), "fit_s": round(time.perf_counter() - t0, 3)})
        log.info("HOG+SVR C=%g epsilon=%g gamma_scale=%g: validation NMAD %.4f", c, eps, gs, score)
        if best is None or score < best[0]:
            best = (score, svr, grid[-1])
    _, svr, chosen = best
    return HogSVRModel(
        hog=hog_params,
        bands=list(bands),
        cutout=int(cutout),
        support_vectors=np.asarray(svr.support_vectors_, dtype=np.float64),
        dual_coef=np.asarray(svr.dual_coef_[0], dtype=np.float64),
        intercept=float(svr.intercept_[0]),
        gamma=float(svr._gamma),
        scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
        hyper={"chosen": chosen, "grid": grid, "base_gamma": base_gamma},
    )


def split_labels(ds: ProcessedDataset, rows: pd.DataFrame, label_column: str) -> np.ndarray:
    """Finite labels of catalogue rows (a feature baseline's training targets); a bad one names the catalogue."""
    if label_column not in rows.columns:
        raise DataError(f"{ds.root / 'catalog.parquet'}: label column '{label_column}' missing")
    y = rows[label_column].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise DataError(
            f"{ds.root / 'catalog.parquet'}: {int(bad.sum())} non-finite '{label_column}' labels "
            f"(first object {rows['object_id'].iloc[int(np.argmax(bad))]})"
        )
    return y


def train_hogsvr(dataset: str, config: dict, processed_dir: str | Path, model_dir: str | Path) -> HogSVRModel:
    """Fit HOG+SVR on a dataset's train split (capped), tune on val, save to model_dir with provenance."""
    cfg = config["baselines"]["hogsvr"]
    ds_cfg = config["datasets"][dataset]
    ds = ProcessedDataset(processed_dir)
    cutout = int(ds.stats["cutout"])
    params = HogParams.from_config(cfg, cutout)
    train, val = ds.split("train"), ds.split("val")
    if len(train) > cfg["max_train_rows"]:
        # Seeded subset: the cap keeps the quadratic SVR fit inside the CPU budget.
        rng = np.random.default_rng([config["seed"], 4])
        keep = np.sort(rng.choice(len(train), size=cfg["max_train_rows"], replace=False))
        log.info("capping training rows %d -> %d (baselines.hogsvr.max_train_rows)", len(train), len(keep))
        train = train.iloc[keep].reset_index(drop=True)
    t0 = time.perf_counter()
    x_train = hog_features(ds.images(train), params)
    x_val = hog_features(ds.images(val), params)
    t_feat = time.perf_counter() - t0
    log.info("HOG features: %d train + %d val rows x %d features in %.1f s", len(train), len(val),
             x_train.shape[1], t_feat)
    t0 = time.perf_counter()
    model = fit_hogsvr(x_train, split_labels(ds, train, ds_cfg["label_column"]), x_val,
                       split_labels(ds, val, ds_cfg["label_column"]), cfg, params, ds.bands, cutout)
    t_fit = time.perf_counter() - t0
    model.hyper["timing_s"] = {"features": round(t_feat, 3), "grid_fit": round(t_fit, 3)}
    model.hyper["n_train"] = int(len(train))
    prov = provenance(config, [Path(processed_dir) / "catalog.parquet", Path(processed_dir) / "stats.json"])
    model.save(model_dir, extra_meta={"dataset": dataset, "label_column": ds_cfg["label_column"],
                                      "scaling": ds.stats.get("scaling"), "provenance": prov})
    write_json(Path(model_dir) / "provenance.json", prov)
    return model
