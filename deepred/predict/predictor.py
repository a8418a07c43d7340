"""Any trained model behind one interface: `load_model(model_dir) -> Predictor`, for networks, HOG+SVR, photometry
and ensembles.

Modelled on rail_base's CatEstimator: the base class owns the template methods and each kind fills two hooks,
`_load` (read and verify its files; return its model.json) and `_predict_scaled` (scaled float32 (N, C, H, W)
images, and the photometric features of the kinds that read them, None: measure them -> {z_pred, and for PDF heads
the PDF_SUMMARY columns and pdf}). Kinds that read features (photometry, the hybrids) also fill `_features` (the
rows' features from the dataset's features file, deepred.features.table). The templates:
- `predict(images)`: the kind's outputs, then the calibration of model.json (deepred.pdfs.calibration), whatever the kind:
  a point estimator gains a PDF, every PDF is calibrated (pdf_uncalibrated keeps the one before); z_pred stays;
- `predict_rows(ds, rows)`: chunk by chunk, read the rows' (already scaled) images from a processed dataset,
  check or adapt them, predict, build the prediction frame (the pipeline's predict, transfer, HOG+SVR and
  photometry jobs);
- `predict_raw(images)`: scale raw-flux cutouts as in training, then predict (`deepred predict`).
Kinds register in KINDS (timm's registry pattern). This module sits above models/checkpoint.py, hogsvr.py,
photometry.py and ensemble.py: it imports them, never the reverse. model.json is read through deepred.contracts.model_json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from deepred.contracts import model_json as card
from deepred.contracts.predictions import prediction_columns, prediction_frame
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.data.normalize import SCALINGS, scale_images
from deepred.pdfs.calibration import Calibration, CalibrationError
from deepred.predict.inputs.items import InferenceError  # deepred predict's one error for an unusable model or input

CHUNK_ROWS = 2048  # images read and predicted at a time (memory stays flat whatever the dataset size)


KINDS: dict[str, type[Predictor]] = {}


def register_kind(kind: str):
    """Class decorator: the Predictor subclass that loads model folders of `kind` (deepred.contracts.model_json)."""
    def add(cls):
        cls.kind = kind
        KINDS[kind] = cls
        return cls
    return add


class Predictor:
    """A trained model: what it expects (bands, cutout, scaling, pixel scale) and how it predicts."""

    kind: ClassVar[str]

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 256):
        self.model_dir, self.device, self.batch_size = Path(model_dir), device, batch_size
        self.meta = self._load()
        self.training_stats = card.training_stats(self.meta)
        meta, stats, where = self.meta, self.training_stats, self.model_dir / card.MODEL_JSON
        for key in ("bands", "cutout"):
            if key not in meta and key not in stats:
                raise InferenceError(f"{where}: no '{key}' recorded; cannot check inputs against the training data")
        self.name = str(meta.get("model", self.model_dir.parent.name))
        self.dataset = meta.get("dataset", stats.get("dataset"))
        self.bands = [str(b) for b in meta.get("bands", stats.get("bands"))]
        self.cutout = int(meta.get("cutout", stats.get("cutout")))
        ps = meta.get("pixel_scale", stats.get("pixel_scale"))
        self.pixel_scale = None if ps is None else float(ps)
        self.scaling = _checked_scaling(meta.get("scaling", stats.get("scaling")), where)
        self.head = meta.get("head") or ("pdf" if meta.get("grid") is not None else "point")
        self.calibration = _checked_calibration(meta.get(card.CALIBRATION), where)

    @property
    def grid(self) -> np.ndarray | None:
        """Bin centres of a PDF head as model.json records them (float64), else the calibration's grid (point
        estimators, ensembles), else None (a model without PDFs)."""
        grid = self.meta.get("grid")
        if grid is not None:
            return np.asarray(grid, dtype=np.float64)
        return None if self.calibration is None else self.calibration.grid

    @property
    def output_grid(self) -> np.ndarray | None:
        """The grid the PDFs are computed on (the pipeline's prediction files record this one)."""
        return self.grid

    @property
    def gives_pdf(self) -> bool:
        """Whether predictions carry PDFs: a PDF head, or any model with a calibration."""
        return self.output_grid is not None

    # ------------------------------------------------------------------------------------ the kinds' hooks

    def _load(self) -> dict:
        raise NotImplementedError

    def _predict_scaled(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        raise NotImplementedError

    def _features(self, ds: ProcessedDataset, rows: pd.DataFrame) -> np.ndarray | None:
        """The rows' photometric features for a kind that reads them (None: this kind does not)."""
        return None

    def _rows_as_seen(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows whose images the model is shown (the hybrid's shuffled-pixels control swaps them)."""
        return rows

    # ------------------------------------------------------------------------------------ templates

    def predict(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        """Outputs for scaled float32 (N, C, H, W) cutouts (the processed shards' pixels), calibrated; `features`:
        their photometric features where already measured (kinds that read them measure them otherwise)."""
        res = self._predict_scaled(images, features)
        return res if self.calibration is None else self.calibration.apply(res, self.output_grid)

    def predict_raw(self, images: np.ndarray) -> dict:
        """Scale raw-flux cutouts as in training, then predict."""
        return self.predict(scale_images(np.asarray(images, dtype=np.float32), self.scaling))

    def check_dataset(self, ds: ProcessedDataset) -> None:
        """A model only sees data with its bands (same order), cutout size and scaling; say what differs."""
        stats_path, bands = ds.root / "stats.json", list(ds.stats["bands"])
        if len(bands) != len(self.bands):
            raise DataError(f"{stats_path}: {len(bands)} bands {bands}, but the model {self.model_dir} takes "
                            f"{len(self.bands)} bands {self.bands}")
        if bands != self.bands:
            raise DataError(f"{stats_path}: bands {bands} differ from the bands {self.bands} of the model {self.model_dir}")
        if int(ds.stats["cutout"]) != self.cutout:
            raise DataError(f"{stats_path}: cutouts are {ds.stats['cutout']} px, the model {self.model_dir} takes "
                            f"{self.cutout} px")
        data_scaling = (ds.stats.get("scaling") or {}).get("method")
        if data_scaling != self.scaling["method"]:
            raise DataError(f"{stats_path}: '{data_scaling}'-scaled cutouts, the model {self.model_dir} was trained "
                            f"on '{self.scaling['method']}'-scaled ones")

    def predict_rows(self, ds: ProcessedDataset, rows: pd.DataFrame,
                     adapt: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
        """The prediction frame of catalogue rows of `ds`, in row order; attrs["pdf_grid"] holds a PDF head's grid.

        adapt: turns the dataset's images into the model's (band subset, crop, rescale: deepred.results.transfer);
        without it the dataset must match the model exactly (check_dataset)."""
        if adapt is None:
            self.check_dataset(ds)
        label, pdf = ds.stats["label_column"], self.gives_pdf
        seen = self._rows_as_seen(rows)
        features = self._features(ds, rows) if adapt is None else None  # adapted images: measured on them
        parts = []
        for s in range(0, len(rows), CHUNK_ROWS):
            chunk = rows.iloc[s : s + CHUNK_ROWS]
            images = ds.images(seen.iloc[s : s + CHUNK_ROWS])
            res = self.predict(adapt(images) if adapt is not None else images,
                               None if features is None else features[s : s + CHUNK_ROWS])
            parts.append(prediction_frame(chunk, label, res, pdf))
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=prediction_columns(pdf))
        out.attrs["pdf_grid"] = None if self.output_grid is None else [float(g) for g in self.output_grid]
        return out

    def file_record(self) -> dict | None:
        """The model record written into its prediction files' metadata."""
        return {"model": self.name, "dataset": self.dataset, "model_dir": str(self.model_dir),
                "sha256": card.weights_sha256(self.meta)}


def _checked_calibration(record, where) -> Calibration | None:
    """The card's calibration (None for folders fitted before calibrations existed); a bad one names the file."""
    try:
        return None if record is None else Calibration.from_record(record, where)
    except CalibrationError as exc:
        raise InferenceError(str(exc)) from exc


def _checked_scaling(value, where) -> dict:
    """The training data's scaling record, checked: a known method, and asinh's per-band softening."""
    if value is None:
        raise InferenceError(f"{where}: no 'scaling' recorded; cannot scale cutouts as in training")
    method = value.get("method") if isinstance(value, dict) else None
    if method not in SCALINGS:
        raise InferenceError(f"{where}: scaling {value!r} is not one of {', '.join(SCALINGS)}")
    if method == "asinh" and not value.get("softening"):
        raise InferenceError(f"{where}: asinh scaling without its per-band softening; retrain on current data")
    return value


@register_kind(card.NEURAL)
class NeuralPredictor(Predictor):
    """A network of models/: weights verified against model.json, on `device`."""

    def _load(self) -> dict:
        from deepred.models.checkpoint import load_trained  # each kind's libraries load with that kind only

        try:
            self.trained = load_trained(self.model_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise InferenceError(f"{self.model_dir}: cannot load the trained model: {exc}") from exc
        if self.device != "cpu":
            self.trained.net.to(self.device)
        self.hybrid = self.trained.meta.get("hybrid")  # a hybrid's record (deepred.models.hybrid.hybrid_record)
        return self.trained.meta

    @property
    def output_grid(self) -> np.ndarray | None:
        # The net's float32 grid buffer: model.json's float64 grid rounded (< 1e-6). Prediction files have always
        # recorded this one and deepred predict's output model.json's; kept so both stay byte-identical.
        # A point head's PDFs come on its calibration's grid.
        return self.trained.grid if self.trained.grid is not None else self.grid

    def _predict_scaled(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        if self.hybrid and features is None:  # users' cutouts: measured as the features file measures them
            # imported here, as every kind's libraries: sep loads with the hybrids only
            from deepred.features.photometry import photometry_features
            from deepred.models.hybrid import record_params

            features = self._hybrid_inputs(photometry_features(images, self.scaling, record_params(self.hybrid)))
        return self.trained.predict(images, batch_size=self.batch_size,
                                    features=features if self.hybrid else None)

    def _features(self, ds: ProcessedDataset, rows: pd.DataFrame) -> np.ndarray | None:
        if not self.hybrid:
            return None
        from deepred.features.table import feature_matrix  # with the hybrids only (sep, pyarrow)
        from deepred.models.hybrid import record_params

        return self._hybrid_inputs(feature_matrix(ds, rows, record_params(self.hybrid)))

    def _hybrid_inputs(self, features: np.ndarray) -> np.ndarray:
        """A residual hybrid's inputs: the features and the prediction of the trees kept in its folder."""
        if self.hybrid.get("fusion") != "residual":
            return features
        if not hasattr(self, "_trees"):
            # imported here, as every kind's libraries: the trees load with the residual hybrids only
            from deepred.baselines.photometry import PhotometryError, PhotometryModel
            from deepred.training.hybrid_data import PHOTOMETRY_DIR

            try:
                self._trees = PhotometryModel.load(self.model_dir / PHOTOMETRY_DIR)
            except PhotometryError as exc:
                raise InferenceError(f"{self.model_dir}: the residual hybrid's photometric trees: {exc}") from exc
        return self._trees.with_prediction(features)

    def _rows_as_seen(self, rows: pd.DataFrame) -> pd.DataFrame:
        if not self.hybrid:
            return rows
        from deepred.models.hybrid import rows_as_seen  # with the hybrids only

        return rows_as_seen(self.hybrid, rows)

    def point_module(self):
        """nn.Module (B, C, H, W) -> (B, 1) of the point estimate (what SHAP explains)."""
        return self.trained.point_module()


class NumpyModelPredictor(Predictor):
    """A fitted numpy model on the CPU (load_model): its class's `load(model_dir)` reads and verifies the folder,
    its `predict_images(images)` predicts. Kinds name the class and its error in `_model_class`."""

    def _model_class(self) -> tuple[type, type[Exception]]:
        raise NotImplementedError

    def _load(self) -> dict:
        model_class, error = self._model_class()
        try:
            self.model = model_class.load(self.model_dir)
        except error as exc:
            raise InferenceError(str(exc)) from exc
        return card.read_card(self.model_dir, InferenceError)

    def _predict_scaled(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        return {"z_pred": self.model.predict_images(images)}


@register_kind(card.HOGSVR)
class HogSVRPredictor(NumpyModelPredictor):
    """HOG+SVR (deepred.baselines.hogsvr)."""

    def _model_class(self):
        # imported here, not at the top: 746 ms (measured) spared where this is not called
        from deepred.baselines.hogsvr import HogSVRError, HogSVRModel

        return HogSVRModel, HogSVRError

    def file_record(self) -> None:
        return None  # HOG+SVR prediction files have never carried a record; kept so their bytes do not change


@register_kind(card.PHOTOMETRY)
class PhotometryPredictor(NumpyModelPredictor):
    """The photometric baseline (deepred.baselines.photometry): sep photometry and numpy trees."""

    def _model_class(self):
        # imported here, not at the top: 704 ms (measured) spared where this is not called
        from deepred.baselines.photometry import PhotometryError, PhotometryModel

        return PhotometryModel, PhotometryError

    def _predict_scaled(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        if features is None:
            return super()._predict_scaled(images)
        return {"z_pred": self.model.trees.predict(features)}

    def _features(self, ds: ProcessedDataset, rows: pd.DataFrame) -> np.ndarray:
        from deepred.features.table import feature_matrix  # as the model class: with this kind only

        return feature_matrix(ds, rows, self.model.params)


@register_kind(card.ENSEMBLE)
class EnsemblePredictor(Predictor):
    """A stacked or mean ensemble (deepred.predict.ensemble); its members are loaded once, here."""

    def _load(self) -> dict:
        # imported here, not at the top: 749 ms (measured) spared where this is not called
        from deepred.predict.ensemble import load_ensemble

        try:
            self.ensemble = load_ensemble(self.model_dir)
            dirs = [(self.model_dir / self.ensemble.meta["member_dirs"][m]).resolve() for m in self.ensemble.members]
        except (OSError, ValueError, KeyError) as exc:
            raise InferenceError(f"{self.model_dir}: cannot load the ensemble: {exc}") from exc
        meta = self.ensemble.meta
        self.members = [load_model(d, self.device, self.batch_size) for d in dirs]
        for m in self.members:
            if [m.meta.get("bands"), m.meta.get("cutout")] != [meta.get("bands"), meta.get("cutout")]:
                raise InferenceError(f"{self.model_dir}: member {m.model_dir} takes bands {m.meta.get('bands')} and "
                                     f"{m.meta.get('cutout')} px, the ensemble {meta.get('bands')} and "
                                     f"{meta.get('cutout')} px")
        return meta

    def _predict_scaled(self, images: np.ndarray, features: np.ndarray | None = None) -> dict:
        outs = [m.predict(images) for m in self.members]  # each member measures what it reads
        res = {"z_pred": self.ensemble.combine(np.stack([o["z_pred"] for o in outs], axis=1))}
        if self.calibration is not None:  # the members' calibrated PDFs mixed with the calibration's weights
            res["pdf"] = self.ensemble.combine_pdfs([o.get("pdf") for o in outs], [m.output_grid for m in self.members],
                                                    self.calibration.grid, self.calibration.weights)
        return res


def load_model(model_dir: str | Path, device: str | None = "cpu", batch_size: int = 256) -> Predictor:
    """The trained model in model_dir (a network, HOG+SVR, photometry or an ensemble), ready to predict on `device`
    ('auto': a GPU when there is one; HOG+SVR and photometry always run on the CPU)."""
    model_dir = Path(model_dir)
    kind = card.card_kind(model_dir, card.read_card(model_dir, InferenceError), InferenceError)
    device = "cpu" if kind in (card.HOGSVR, card.PHOTOMETRY) else auto_device(device)
    return KINDS[kind](model_dir, device=device, batch_size=batch_size)


def available_models(results_dir: str | Path) -> list[str]:
    root = Path(results_dir) / "models"
    if not root.is_dir():
        return []
    return sorted(f"{m.name}/{d.name}" for m in root.iterdir() if m.is_dir() for d in m.iterdir()
                  if d.is_dir() and (d / card.MODEL_JSON).exists())


def resolve_model_dir(spec: str | Path, results_dir: str | Path = "results") -> Path:
    """A model folder given as a path, or as `{model}/{dataset}` under {results_dir}/models/."""
    p = Path(spec)
    candidates = [p, Path(results_dir) / "models" / p]
    for c in candidates:
        if c.is_dir() and (c / card.MODEL_JSON).exists():
            return c
    for c in candidates:
        if c.is_dir():
            raise InferenceError(f"{c}: not a trained model folder (no model.json; did its training job finish?)")
    known = available_models(results_dir)
    raise InferenceError(
        f"model '{spec}' not found: neither a folder nor {Path(results_dir) / 'models' / p}; "
        + (f"models under {results_dir}/models: {', '.join(known)}" if known else
           f"no trained models under {Path(results_dir) / 'models'} (run the pipeline, or pass --results-dir)")
    )


def auto_device(device: str | None) -> str:
    """'auto' (or None): a GPU when torch sees one, else the CPU; a named CUDA device must exist."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device '{device}' requested but no CUDA GPU is available")
    return device


def load_predictor(spec: str | Path, results_dir: str | Path = "results", device: str | None = "auto",
                   batch_size: int = 256) -> Predictor:
    """A model named as on the command line (a folder or {model}/{dataset}), on `device` ('auto': GPU if any)."""
    return load_model(resolve_model_dir(spec, results_dir), device, batch_size)
