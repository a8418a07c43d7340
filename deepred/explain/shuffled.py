"""The shuffled-label control (Adebayo et al. 2018's data randomization test): the same architecture trained on the
same images with the training and validation redshifts permuted, then explained the same way. A localization score
that such a network reaches as well says that the maps follow the image, not what the network learned."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.processed import ProcessedDataset
from deepred.core.io import write_parquet
from deepred.core.seeds import derive_seed
from deepred.explain.attributions import explain_model
from deepred.training.train import train_model


def shuffled_view(processed_dir: str | Path, out_dir: str | Path, seed: int) -> Path:
    """A processed dataset whose train and validation labels are permuted among themselves (seeded); the test
    split, the images (the same shards, linked) and stats.json are the original's."""
    src, out = Path(processed_dir), Path(out_dir)
    ds = ProcessedDataset(src)
    label = ds.stats["label_column"]
    cat = ds.catalog.copy()
    fit = np.flatnonzero(cat["split"].isin(["train", "val"]).to_numpy())
    cat.loc[cat.index[fit], label] = cat[label].to_numpy()[np.random.default_rng(seed).permutation(fit)]
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "catalog.parquet", cat)
    shutil.copyfile(src / "stats.json", out / "stats.json")
    if not (out / "shards").exists():
        os.symlink((src / "shards").resolve(), out / "shards", target_is_directory=True)
    return out


def shuffled_control(model: str, dataset: str, config: dict, processed_dir: str | Path, out_dir: str | Path,
                     threads: int | None = None) -> pd.DataFrame:
    """The Snakemake job of one shuffled-label control: train `model` on a shuffled view of `dataset` (the
    default recipe and seed), then explain it like the real network. Writes out_dir/model/ (the network) and
    the explain job's files into out_dir."""
    out_dir = Path(out_dir)
    view = shuffled_view(processed_dir, out_dir / "shuffled_data", derive_seed(config["seed"], "shuffled", dataset))
    try:
        train_model(model, dataset, config, view, out_dir / "model", threads=threads)
    finally:
        shutil.rmtree(view, ignore_errors=True)
    for name in ("last.safetensors", "last.json"):  # the resume state: not needed once trained
        (out_dir / "model" / name).unlink(missing_ok=True)
    return explain_model(out_dir / "model", processed_dir, config, out_dir, model=model, dataset=dataset)
