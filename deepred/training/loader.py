"""The trainer's data side: the shard checks before training, a Dataset over the memory-mapped shards with
seeded augmentation, the per-epoch sampler and the DataLoader settings.

Index e * n + i is object i in epoch e: the shuffle of epoch e and the flips and 90-degree rotations (the 8
symmetries of the square) of its objects are drawn from (seed, e) and (seed, e, i) alone, so they are the
same whichever worker reads a batch and after a resume.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deepred.core.seeds import derive_seed
from deepred.contracts.processed import DataError, ProcessedDataset, shard_name


def check_inputs(proc: ProcessedDataset, ds_cfg: dict, dataset: str) -> tuple[int, int]:
    """(bands, cutout) the model is built for; every shard must match them (checked before training)."""
    in_chans, cutout = len(ds_cfg["bands"]), int(ds_cfg["cutout"])
    stats_path = proc.root / "stats.json"
    if len(proc.stats["bands"]) != in_chans:
        raise DataError(
            f"{stats_path}: dataset has {len(proc.stats['bands'])} bands {proc.stats['bands']}, the config's "
            f"datasets.{dataset}.bands has {in_chans} {ds_cfg['bands']}: the model would take {in_chans}"
        )
    for k in sorted(proc.catalog["shard"].unique()):
        path = proc.root / "shards" / shard_name("images", int(k))
        shape = proc.shard("images", int(k)).shape  # checked against stats.json's manifest
        if len(shape) != 4 or shape[1] != in_chans:
            raise DataError(
                f"{path}: shard has {shape[1] if len(shape) == 4 else '?'} bands (shape {shape}) but the model "
                f"takes {in_chans} bands ({ds_cfg['bands']})"
            )
        if shape[2:] != (cutout, cutout):
            raise DataError(f"{path}: cutouts are {shape[2]}x{shape[3]}, the model takes {cutout}x{cutout}")
    return in_chans, cutout


class ShardImages(Dataset):
    """Images and labels of catalogue rows, read from the memory-mapped shards a batch at a time.

    Index e * n + i is object i in epoch e: augmentation is drawn from (seed, e, i), so it is the same
    whichever worker reads it and after a resume.
    """

    def __init__(self, proc: ProcessedDataset, rows: pd.DataFrame, label: str, augment: bool, seed: int,
                 features: np.ndarray | None = None):
        self.proc, self.augment, self.seed = proc, augment, seed
        self.rows = rows[["shard", "row"]].reset_index(drop=True)
        self.z = rows[label].to_numpy(dtype=np.float32)
        self.n = len(rows)
        # a hybrid's photometric features (n, F), yielded between image and label; flips and rotations leave them be
        self.features = None if features is None else torch.from_numpy(np.asarray(features, dtype=np.float32))

    def __len__(self):
        return self.n

    def __getitems__(self, indices):
        idx = np.asarray(indices) % self.n
        images = self.proc.images(self.rows.iloc[idx])
        out = []
        for img, full, i in zip(images, indices, idx):
            if self.augment:
                r = int(np.random.default_rng([self.seed, int(full) // self.n, int(i)]).integers(8))
                img = np.rot90(img, r % 4, axes=(1, 2))
                if r >= 4:
                    img = img[:, :, ::-1]
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
            out.append((x, torch.tensor(self.z[i])) if self.features is None else
                       (x, self.features[i], torch.tensor(self.z[i])))
        return out

    def __getitem__(self, i):
        return self.__getitems__([i])[0]


class EpochSampler(Sampler):
    """A seeded permutation per epoch, yielding e * n + i (see ShardImages)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", self.epoch))
        return iter((torch.randperm(self.n, generator=g) + self.epoch * self.n).tolist())


def make_loader(dataset: Dataset, batch_size: int, params: dict, device: torch.device, sampler=None, drop_last=False):
    workers = int(params.get("num_workers", 0))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )


def training_loaders(proc: ProcessedDataset, train_rows: pd.DataFrame, val_rows: pd.DataFrame, label: str,
                     params: dict, device: torch.device, seed: int,
                     features: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[EpochSampler, DataLoader, DataLoader]:
    """(sampler, train loader, val loader): shuffled and augmented training batches, plain validation ones
    (batches of (images, features, labels) when the train and val `features` are given)."""
    bs = int(params["batch_size"])
    f_train, f_val = features if features is not None else (None, None)
    train_set = ShardImages(proc, train_rows, label, augment=bool(params["augment"]), seed=seed, features=f_train)
    sampler = EpochSampler(len(train_set), seed)
    # drop_last: a last batch of one image breaks BatchNorm in training mode
    loader = make_loader(train_set, bs, params, device, sampler=sampler, drop_last=len(train_set) > bs)
    val_loader = make_loader(ShardImages(proc, val_rows, label, False, seed, features=f_val), max(bs, 256), params,
                             device)
    return sampler, loader, val_loader
