"""Shared test fixtures: tiny normalized datasets made from a real raw folder in tmp_path.

`make_tiny_raw` writes the simulator's raw contract (images.npy, masks.npy, truth.parquet, meta.json)
with one Gaussian blob per object whose size, brightness and colour depend on the redshift label,
so a network can truly learn z from the pixels; `tiny_dataset` normalizes it with
deepred.data.normalize.normalize and returns the processed folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from deepred.contracts.config import validate_config
from deepred.data.normalize import normalize
from deepred.contracts.raw import read_simulated


def make_tiny_raw(raw_dir, n=240, bands=("g", "r", "i", "z"), cutout=45, seed=0, z_range=(0.1, 1.0), copies=1):
    """Write a raw simulated folder whose pixels depend on z (blob size, flux and colour).

    `copies` > 1 makes every `copies` consecutive rows one system (like DeepGraviLens' rotated copies)."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z = np.repeat(rng.uniform(*z_range, size=-(-n // copies)), copies)[:n]
    yy, xx = np.mgrid[:cutout, :cutout] - (cutout - 1) / 2.0
    nb = len(bands)
    images = np.empty((n, nb, cutout, cutout), np.float32)
    masks = np.empty((n, cutout, cutout), np.uint8)
    for i in range(n):
        sigma = 1.2 + 5.0 * (1.0 - z[i]) / (1.0 + z[i])  # nearer objects look bigger
        dx, dy = rng.normal(0, 0.7, size=2)
        r2 = (xx - dx) ** 2 + (yy - dy) ** 2
        profile = np.exp(-0.5 * r2 / sigma**2)
        flux = 400.0 / (1.0 + z[i]) ** 2
        # colour: redder bands brighten with z (a crude 4000 A break moving through the bands)
        colour = np.array([np.exp(0.8 * (b / max(nb - 1, 1) - 0.5) * (z[i] - 0.5) * 3) for b in range(nb)])
        images[i] = (flux * colour[:, None, None] * profile[None] + rng.normal(0, 1.0, (nb, cutout, cutout))).astype(
            np.float32
        )
        masks[i] = (r2 < (2 * sigma) ** 2).astype(np.uint8)
    truth = pd.DataFrame(
        {
            "object_id": [f"obj{i:05d}" for i in range(n)],
            "system_id": [f"sys{i // copies:05d}" for i in range(n)],
            "obj_class": ["galaxy"] * n,
            "z_lens": z,
            "z_source": np.full(n, np.nan),
            "snr": np.full(n, 50.0),
            "high_prob_lens": rng.random(n) < 0.3,
        }
    )
    np.save(raw_dir / "images.npy", images)
    np.save(raw_dir / "masks.npy", masks)
    truth.to_parquet(raw_dir / "truth.parquet", index=False)
    meta = {"bands": list(bands), "pixel_scale": 0.263, "survey": "tiny", "preset": "tiny", "seed": seed,
            "units": "nanomaggies"}
    (raw_dir / "meta.json").write_text(json.dumps(meta))
    return raw_dir


torch.set_num_threads(1)  # the test machine's cores are shared

REPO = Path(__file__).resolve().parent.parent

# The checkout's own run outputs: tests must neither read, depend on nor write them (a finished `make run`
# must not change what the tests see). The session fails if any file in them appears, changes or goes.
CHECKOUT_OUTPUTS = ("data", "results", "logs", ".snakemake")


def _outputs_state() -> dict[str, tuple[int, int]]:
    state = {}
    for top in CHECKOUT_OUTPUTS:
        for dirpath, dirnames, filenames in os.walk(REPO / top):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                state[str(path.relative_to(REPO))] = (st.st_size, st.st_mtime_ns)
    return state


def pytest_sessionstart(session):
    session.config.stash[_OUTPUTS_KEY] = _outputs_state()


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_OUTPUTS_KEY, None)
    if before is None:
        return
    after = _outputs_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"\nERROR: {len(changed)} file(s) in the checkout's {', '.join(CHECKOUT_OUTPUTS)} changed during the "
              "test session (tests must work in temporary directories; or another process, e.g. a pipeline run, "
              "wrote there meanwhile): "
              + ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else ""), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_OUTPUTS_KEY = pytest.StashKey[dict]()


def tiny_config(datasets: dict[str, dict], results_dir="results", data_dir="data") -> dict:
    """The repository's config.yaml with its datasets replaced by the given {name: {n, bands, cutout}}."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update({"seed": 7, "data_dir": str(data_dir), "results_dir": str(results_dir), "datasets": {}, "test_sets": {}})
    for name, d in datasets.items():
        cfg["datasets"][name] = {
            "source": {"kind": "simulate", "preset": "des_deep", "n_systems": int(d.get("n", 240))},
            "bands": list(d.get("bands", ["g", "r", "i", "z"])),
            "cutout": int(d.get("cutout", 45)),
            "label_column": "z_lens",
            "rows_per_shard": int(d.get("rows_per_shard", 64)),
        }
        cfg["test_sets"][name] = {"dataset": name, "table": name}
    return validate_config(cfg)


def make_tiny_dataset(root, name="tiny", n=240, bands=("g", "r", "i", "z"), cutout=45, seed=0) -> Path:
    """Raw folder + normalization under root/{raw,processed}/name; returns the processed folder."""
    root = Path(root)
    cfg = tiny_config({name: {"n": n, "bands": bands, "cutout": cutout}}, data_dir=root)
    raw = make_tiny_raw(root / "raw" / name, n=n, bands=bands, cutout=cutout, seed=seed)
    out = root / "processed" / name
    normalize(read_simulated(raw), name, cfg["datasets"][name], out, seed=cfg["seed"], config=cfg)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A normalized 4-band 45x45 dataset of 240 blobs (about 170 train / 35 val / 35 test)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_dataset_64(tmp_path_factory) -> Path:
    """A normalized 5-band 64x64 dataset (SDSS-like shape) of 120 blobs."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data64"), name="tiny64", n=120,
                             bands=("u", "g", "r", "i", "z"), cutout=64, seed=1)


@pytest.fixture(scope="session")
def tiny_pdf_model(tmp_path_factory, tiny_dataset) -> Path:
    """A real PhotoZ network (softmax PDF head) trained one epoch on tiny_dataset, in results/models/photoz/tiny
    of a tmp results folder (about a second); returns the model folder."""
    from deepred.training.train import train_model

    results = tmp_path_factory.mktemp("pdf_results")
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent, results_dir=results)
    cfg["training"]["epochs"] = 1
    model_dir = results / "models" / "photoz" / "tiny"
    train_model("photoz", "tiny", cfg, tiny_dataset, model_dir, threads=1)
    return model_dir


def write_raw_folder(folder, n=120, bands=("g", "r", "i", "z"), cutout=24, seed=0, copies=1, z_range=(0.1, 1.5)):
    """make_tiny_raw with the small defaults of the first fixture (kept for tests written against it)."""
    return make_tiny_raw(folder, n=n, bands=bands, cutout=cutout, seed=seed, z_range=z_range, copies=copies)


def dataset_cfg(**overrides) -> dict:
    """A validated 4-band 24x24 dataset config entry, with overrides."""
    cfg = tiny_config({"t": {"cutout": 24}})["datasets"]["t"]
    cfg.update(overrides)
    return cfg
