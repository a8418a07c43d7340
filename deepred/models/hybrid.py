"""DeepRed hybrids: a backbone's image embedding and the photometric features measured on the same cutout meet in
an MLP head (Hybrid-z, arXiv 2501.01942; PICZL). `hybrid_<architecture>` is the architecture's timm network with its
classifier removed (`num_classes=0`: the pooled embedding), then

    head( concat( LayerNorm(embedding), (features - mean) / std ) ) -> the architecture's head outputs,

head = Linear(hidden) -> GELU -> Dropout -> Linear, its output layer started at zero (a constant first prediction,
as the backbones' `zero_init_head`). The LayerNorm keeps a wide embedding (512 numbers for ResNet) and ~30
standardized features on one scale. The feature mean and std are buffers (the training rows'), so they travel
with the weights like the band standardization.

`hybrid.fusion` chooses what the head predicts:
- `residual` (point heads): the photometric baseline's prediction z_phot is one more input column, and the head
  predicts a correction to it: z = z_phot + head(...) (in label-standardized units; the zero-initialized output
  layer starts exactly at the trees' prediction). The trees' in-sample predictions of the training rows are far
  better than on unseen rows, so the hybrid trains on their out-of-fold predictions (the photometry job writes
  them) and sees the full trees' predictions on every other row (the trees travel in the hybrid's folder);
- `concat`: the head predicts the redshift from the embedding and the features alone.
Chosen by measurement (docs/results.md): on the default run's validation splits the concatenated head on photometry
alone (the noimage control) lost to the trees on every dataset, so the hybrid stacks on the trees instead.

Controls (deepred.core.model_names.HYBRID_CONTROLS): `noimage` zeroes the image branch (the head on photometry
alone; the backbone is never run), `shuffled` trains and predicts on other objects' images (the row swap of
`swap_images`, applied by the trainer and the predictor alike).

`hybrid_record` is what model.json keeps of a hybrid (its control, fusion, swap seed, how its features are measured),
so the trainer (deepred/training/hybrid_data.py) and the predictor read the features and swap the images the same
way.

Called without features (SHAP's point module), the network sees the training mean of every feature: the image
input is explained with the photometric input held at its background expectation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from deepred.contracts.processed import ProcessedDataset
from deepred.core.model_names import parse_hybrid
from deepred.core.seeds import derive_seed
from deepred.features.photometry import PhotometryParams
from deepred.features.table import measurement_record
from deepred.models.heads import RedshiftNet


class HybridNet(RedshiftNet):
    """RedshiftNet whose body gives an embedding; forward(x, features) -> the head's outputs."""

    def __init__(self, body: nn.Module, *, embed_dim: int, n_features: int, hidden: int, dropout: float,
                 image_branch: bool = True, residual: bool = False, **kwargs):
        super().__init__(body, **kwargs)
        if residual and self.head != "point":
            raise ValueError("a residual hybrid corrects a point prediction: it needs head 'point'")
        self.embed_dim, self.n_features, self.image_branch = embed_dim, n_features, image_branch
        self.residual = residual  # the last feature column is the photometric baseline's prediction
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.fusion = nn.Sequential(nn.Linear(embed_dim + n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, self.num_outputs))
        with torch.no_grad():
            self.fusion[-1].weight.zero_()
            self.fusion[-1].bias.zero_()

    def set_feature_normalization(self, mean, std) -> None:
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(np.maximum(np.asarray(std, dtype=float), 1e-6), dtype=torch.float32))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:  # the training mean
            features = self.feature_mean.expand(x.shape[0], self.n_features)
        if features.ndim != 2 or features.shape != (x.shape[0], self.n_features):
            raise ValueError(f"features of shape {tuple(features.shape)}: this hybrid takes ({x.shape[0]}, "
                             f"{self.n_features})")
        f = (features.float() - self.feature_mean) / self.feature_std
        if self.image_branch:
            emb = self.embed_norm(self.body(self.prepare(x)).float())
        else:
            self.prepare(x)  # the input checks still apply
            emb = f.new_zeros((x.shape[0], self.embed_dim))
        out = self.fusion(torch.cat([emb, f.to(emb.dtype)], dim=1))
        if self.residual:  # a correction to the photometric prediction, in the point head's standardized units
            out = out + ((features[:, -1:].float() - self.label_loc) / self.label_scale).to(out.dtype)
        return out


def swap_images(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The shuffled-pixels control's view of catalogue rows: within each split, every row points at another row's
    image (shard, row), drawn by one seeded permutation of the split in catalogue order; object_id, labels and
    hence the photometric features stay the object's own. The same rows give the same swap in the trainer and the
    predictor."""
    out = rows.copy()
    for split, idx in rows.groupby("split", sort=True).indices.items():
        if len(idx) < 2:
            continue
        rng = np.random.default_rng(derive_seed(seed, "swap_images", str(split)))
        perm = rng.permutation(len(idx))  # a random cyclic derangement: nobody keeps their own image
        donor = np.empty(len(idx), dtype=np.int64)
        donor[perm] = perm[np.roll(np.arange(len(idx)), -1)]
        donor = idx[donor]
        out.iloc[idx, out.columns.get_indexer(["shard", "row"])] = rows.iloc[donor][["shard", "row"]].to_numpy()
    return out


def hybrid_record(model_name: str, config: dict, dataset: str, proc: ProcessedDataset) -> dict:
    """model.json's "hybrid": backbone, control, head sizes, the swap seed and how the features are measured."""
    arch, control = parse_hybrid(model_name, config)
    params = PhotometryParams.from_config(config["baselines"]["photometry"], int(proc.stats["cutout"]))
    return {"backbone": arch, "control": control, "hidden": config["hybrid"]["hidden"],
            "dropout": config["hybrid"]["dropout"], "fusion": config["hybrid"]["fusion"],
            "swap_seed": derive_seed(config["seed"], "hybrid_shuffled", dataset) if control == "shuffled" else None,
            "features": measurement_record(params, proc.bands, proc.stats.get("scaling") or {})}


def record_params(record: dict) -> PhotometryParams:
    f = record["features"]
    return PhotometryParams(tuple(float(r) for r in f["aperture_radii_px"]), float(f["detect_thresh"]),
                            bool(f["mask_neighbours"]))


def rows_as_seen(record: dict, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose images the model sees: swapped for the shuffled-pixels control, else as they are."""
    return rows if record.get("swap_seed") is None else swap_images(rows, int(record["swap_seed"]))
