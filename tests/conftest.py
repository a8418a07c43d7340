"""Shared fixtures: tiny raw folders and normalized datasets made in the test, with real files.

`write_raw_folder` writes the simulator's raw form (docs/contracts.md) for synthetic objects whose pixels
really depend on the redshift (a Gaussian blob that shrinks and fades with z), so learning is testable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepred.data.normalize import normalize
from deepred.data.raw import read_simulated

torch.set_num_threads(1)

DATASET_CFG = {
    "source": {"kind": "simulate", "preset": "des_wide", "n_systems": 10},
    "bands": ["g", "r", "i", "z"],
    "cutout": 24,
    "label_column": "z_lens",
    "label_range": [0.0, 4.0],
    "splits": {"train": 0.6, "val": 0.2, "test": 0.2},
    "scaling": "asinh",
    "rows_per_shard": 64,
    "on_bad": "error",
}


def blob_images(z: np.ndarray, bands: int, cutout: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: size and flux fall with z, colour reddens with z; returns (images, masks)."""
    yy, xx = np.mgrid[:cutout, :cutout] - (cutout - 1) / 2
    r2 = xx**2 + yy**2
    sigma = 1.0 + 4.0 / (1.0 + 4.0 * z)  # pixels
    flux = 200.0 / (1.0 + 3.0 * z) ** 2
    colour = np.linspace(-1, 1, bands)[None, :] * z[:, None]  # redder at high z
    prof = np.exp(-r2[None] / (2 * sigma[:, None, None] ** 2))
    images = flux[:, None, None, None] * np.exp(colour)[:, :, None, None] * prof[:, None]
    images += rng.normal(0, 1.0, images.shape)
    masks = (prof > 0.1).astype(np.uint8)
    return images.astype(np.float32), masks


def write_raw_folder(
    folder: Path,
    n: int = 120,
    bands=("g", "r", "i", "z"),
    cutout: int = 24,
    seed: int = 0,
    copies: int = 1,
    z_range=(0.1, 1.5),
) -> Path:
    """A raw folder in the simulator's form; `copies` > 1 repeats each system (like rotated copies)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_sys = n // copies
    z_sys = rng.uniform(*z_range, n_sys)
    z = np.repeat(z_sys, copies)
    images, masks = blob_images(z, len(bands), cutout, rng)
    sys_ids = np.repeat([f"sys{i:05d}" for i in range(n_sys)], copies)
    truth = pd.DataFrame(
        {
            "object_id": [f"obj{i:06d}" for i in range(len(z))],
            "system_id": sys_ids,
            "obj_class": np.where(np.arange(len(z)) % 2 == 0, "no_lens", "gg_lens"),
            "z_lens": z,
            "z_source": np.nan,
            "snr": rng.uniform(5, 100, len(z)),
            "high_prob_lens": np.arange(len(z)) % 3 == 0,
        }
    )
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    truth.to_parquet(folder / "truth.parquet", index=False)
    meta = {"bands": list(bands), "pixel_scale": 0.263, "survey": "TEST", "preset": "blobs", "seed": seed}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def dataset_cfg(**overrides) -> dict:
    cfg = json.loads(json.dumps(DATASET_CFG))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A normalized dataset (400 objects, 4 bands, 24x24) under data/processed/tiny; returns its folder."""
    root = tmp_path_factory.mktemp("tiny")
    raw = write_raw_folder(root / "raw" / "tiny", n=400, seed=1)
    out = root / "processed" / "tiny"
    normalize(read_simulated(raw), "tiny", dataset_cfg(), out, seed=7)
    return out
