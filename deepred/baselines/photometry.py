"""Photometric baseline: aperture and Kron magnitudes and colours measured on the cutouts with sep, into a
gradient-boosted regression tree ensemble (scikit-learn's HistGradientBoostingRegressor).

The redshift a referee asks about first: colours. The features (aperture and Kron magnitudes, colours, Kron
radius, axis ratio) are measured by deepred/features/photometry.py, once per dataset (deepred/features/table.py).

The regressor and its file format live in deepred/baselines/gbtrees.py; `fit_photometry` picks learning rate, leaf count,
leaf size and the number of trees on the validation split by NMAD. The pipeline's fit also writes its training rows'
out-of-fold predictions (`write_oof`), which the residual hybrids train on. The rule fits (`train_photometry`), then
predicts like any other model (deepred.predict.splits.predict_model, through deepred.predict.predictor).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.baselines.gbtrees import TreeEnsemble, TreeError, fit_tree_grid, out_of_fold
from deepred.baselines.hogsvr import split_labels
from deepred.contracts.model_json import (
    MODEL_JSON,
    OOF_FILE,
    PHOTOMETRY,
    PHOTOMETRY_MODEL,
    WEIGHTS_FILE,
    read_verified_card,
    write_card,
)
from deepred.contracts.processed import ProcessedDataset, train_subset
from deepred.core.io import atomic_path, write_json, write_parquet
from deepred.core.metrics import nmad
from deepred.core.provenance import provenance
from deepred.core.seeds import derive_seed
from deepred.features.photometry import (  # noqa: F401 (MAG_ZP, measure: importable from here as before)
    KRON_FACTOR,
    KRON_MIN,
    MAG_ZP,
    PhotometryError,
    PhotometryParams,
    feature_names,
    flux_scaling,
    measure,
    photometry_features,
)
from deepred.features.table import feature_matrix

log = logging.getLogger("deepred.baselines.photometry")

FORMAT_VERSION = 1
OOF_FOLDS = 5


@dataclass
class PhotometryModel:
    """A fitted photometric baseline: the measurement settings, the data it expects and its trees."""

    params: PhotometryParams
    bands: list[str]
    cutout: int
    scaling: dict  # the training data's (stats.json): how the shards' pixels go back to flux
    features: list[str]  # feature_names, recorded so a reader can tell what each tree split on
    trees: TreeEnsemble
    hyper: dict  # the chosen grid point and the validation grid

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """Scaled cutouts (the shards' pixels) -> z_pred."""
        if images.shape[1:] != (len(self.bands), self.cutout, self.cutout):
            raise PhotometryError(f"images of shape {images.shape[1:]} do not match the model's "
                                  f"({len(self.bands)}, {self.cutout}, {self.cutout}) (bands {self.bands})")
        return self.trees.predict(photometry_features(images, self.scaling, self.params))

    def with_prediction(self, features: np.ndarray) -> np.ndarray:
        """The features with the trees' prediction as one more column: a residual hybrid's inputs."""
        return np.column_stack([features, self.trees.predict(features)])

    def save(self, model_dir: str | Path, extra_meta: dict | None = None) -> None:
        """model.npz (tree arrays, no pickle) + model.json (settings, SHA-256 of model.npz), atomically."""
        npz = Path(model_dir) / WEIGHTS_FILE[PHOTOMETRY]
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **self.trees.arrays())
        write_card(model_dir, PHOTOMETRY, {
            "model": PHOTOMETRY_MODEL,
            "format_version": FORMAT_VERSION,
            "photometry": {"aperture_radii_px": list(self.params.radii_px), "detect_thresh": self.params.detect_thresh,
                           "mask_neighbours": self.params.mask_neighbours, "kron_factor": KRON_FACTOR,
                           "kron_min": KRON_MIN, "mag_zeropoint": MAG_ZP},
            "bands": list(self.bands),
            "cutout": int(self.cutout),
            "scaling": self.scaling,
            "features": list(self.features),
            "n_trees": int(len(self.trees.tree_offsets)),
            "hyper": self.hyper,
            **(extra_meta or {}),
        })

    @classmethod
    def load(cls, model_dir: str | Path) -> "PhotometryModel":
        """Read model.json + model.npz, verifying the checksum; never unpickles."""
        model_dir = Path(model_dir)
        meta, npz = read_verified_card(model_dir, PHOTOMETRY, PhotometryError, "not a fitted photometry model folder")
        if meta.get("model") != PHOTOMETRY_MODEL or meta.get("format_version") != FORMAT_VERSION:
            raise PhotometryError(f"{model_dir / MODEL_JSON}: not a photometry model of format {FORMAT_VERSION}")
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        try:
            trees = TreeEnsemble.from_arrays(arrays, len(meta["features"]), npz)
        except TreeError as exc:
            raise PhotometryError(str(exc)) from exc
        p = meta["photometry"]
        params = PhotometryParams(tuple(float(r) for r in p["aperture_radii_px"]), float(p["detect_thresh"]),
                                  bool(p["mask_neighbours"]))
        return cls(params=params,
                   bands=list(meta["bands"]), cutout=int(meta["cutout"]), scaling=meta["scaling"],
                   features=list(meta["features"]), trees=trees, hyper=meta["hyper"])


def fit_photometry(x_train, y_train, x_val, y_val, cfg: dict, seed: int, params: PhotometryParams, bands: list[str],
                   cutout: int, scaling: dict) -> PhotometryModel:
    """Gradient boosting on photometry features, the grid point and tree count chosen on validation (gbtrees)."""
    try:
        trees, hyper = fit_tree_grid(x_train, y_train, x_val, y_val, cfg, seed)
    except TreeError as exc:
        raise PhotometryError(f"baselines.photometry: {exc}") from exc
    return PhotometryModel(params, list(bands), int(cutout), scaling, feature_names(bands, params), trees, hyper)


def write_oof(model_dir, rows: pd.DataFrame, x: np.ndarray, y: np.ndarray, chosen: dict, cfg: dict, seed: int) -> None:
    """model_dir/OOF_FILE: object_id and z_oof, each training row predicted by trees that never saw it."""
    try:
        z = out_of_fold(x, y, chosen, cfg, seed, OOF_FOLDS)
    except TreeError as exc:
        raise PhotometryError(f"baselines.photometry: {exc}") from exc
    write_parquet(Path(model_dir) / OOF_FILE, pd.DataFrame({"object_id": rows["object_id"].astype(str).to_numpy(),
                                                            "z_oof": z}))
    log.info("photometry: out-of-fold predictions of %d training rows (%d folds): NMAD %.4f", len(z), OOF_FOLDS,
             nmad(z, y))


def read_oof(model_dir, rows: pd.DataFrame) -> np.ndarray:
    """The training rows' out-of-fold predictions (write_oof), in the rows' order; a missing row names the file."""
    path = Path(model_dir) / OOF_FILE
    try:
        frame = pd.read_parquet(path).set_index("object_id")["z_oof"]
    except (OSError, KeyError, ValueError) as exc:
        raise PhotometryError(f"{path}: no out-of-fold predictions ({exc}); rerun the photometry job") from exc
    ids = rows["object_id"].astype(str)
    if not ids.isin(frame.index).all():
        raise PhotometryError(f"{path}: {int((~ids.isin(frame.index)).sum())} training rows have no out-of-fold "
                              "prediction; rerun the photometry job")
    return frame.loc[ids.to_numpy()].to_numpy(dtype=np.float64)


def train_photometry(dataset: str, config: dict, processed_dir: str | Path, model_dir: str | Path,
                     train_systems: int | None = None) -> PhotometryModel:
    """Measure the train and val cutouts, fit and tune the trees, save to model_dir with provenance.
    `train_systems`: fit on that many training systems (deepred.contracts.processed.train_subset; the scale study)."""
    cfg = config["baselines"]["photometry"]
    label = config["datasets"][dataset]["label_column"]
    ds = ProcessedDataset(processed_dir)
    cutout, scaling = int(ds.stats["cutout"]), flux_scaling(ds.stats, ds.root / "stats.json")
    params = PhotometryParams.from_config(cfg, cutout)
    try:
        train = train_subset(ds.split("train"), train_systems, config["seed"], dataset)
    except ValueError as exc:
        raise PhotometryError(f"{processed_dir}: {exc}") from None
    val = ds.split("val")
    t0 = time.perf_counter()
    x_train, x_val = feature_matrix(ds, train, params), feature_matrix(ds, val, params)
    t_feat = time.perf_counter() - t0
    log.info("photometry: %d train + %d val cutouts x %d features in %.1f s", len(train), len(val), x_train.shape[1],
             t_feat)
    t0 = time.perf_counter()
    model = fit_photometry(x_train, split_labels(ds, train, label), x_val, split_labels(ds, val, label), cfg,
                           derive_seed(config["seed"], "photometry", dataset), params, ds.bands, cutout, scaling)
    model.hyper.update(timing_s={"features": round(t_feat, 3), "grid_fit": round(time.perf_counter() - t0, 3)},
                       n_train=int(len(train)))
    if train_systems is None:  # the pipeline's model (not a scale-study point): what the residual hybrids stack on
        write_oof(model_dir, train, x_train, split_labels(ds, train, label), model.hyper["chosen"], cfg,
                  derive_seed(config["seed"], "photometry_oof", dataset))
    prov = provenance(config, [Path(processed_dir) / "catalog.parquet", Path(processed_dir) / "stats.json"])
    model.save(model_dir, extra_meta={"dataset": dataset, "label_column": label,
                                      "pixel_scale": ds.stats.get("pixel_scale"), "provenance": prov})
    write_json(Path(model_dir) / "provenance.json", prov)
    return model
