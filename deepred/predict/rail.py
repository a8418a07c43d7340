"""DeepRedEstimator: a trained DeepRed model as a RAIL estimator (`pip install deepred[rail]`, pz-rail-base).

    from deepred.predict.rail import DeepRedEstimator
    stage = DeepRedEstimator.make_stage(name="deepred", model="results/models/photoz/sdss", output="pdfs.hdf5")
    pdfs = stage.estimate(catalogue).data  # a qp ensemble, one PDF per catalogue row

The interface, checked in pz-rail-base 2.0.11 (rail/estimation/estimator.py, rail/core/stage.py):
- CatEstimator.estimate(input) -> set_data, validate, run, finalize; run() opens the model (open_model) and calls
  `_process_chunk(start, end, data, first)` per chunk of `chunk_size` input rows; `_do_chunk_output(ensemble,
  start, end, first, data)` adds RAIL's point estimates and writes the chunk (or keeps it: output_mode "return").
- The model: RAIL's `model` input is normally an informer's pickle (ModelHandle reads files with pickle.load, and
  open_model only accepts a path that is a file). DeepRed trains with its own pipeline, so there is no informer:
  `model` is a DeepRed model folder (or its model.json, or a Predictor already loaded by
  deepred.predict.predictor.load_model); DeepRedModelHandle reads the folder with deepred.predict.predictor, not pickle.
- The input is a catalogue table, as for `deepred predict`: an id column (`id_col`, else object_id, id, objid or
  name) and a `file` column (one FITS file per object) or `file_<band>` columns; relative paths start from
  `image_dir`, else the input file's folder, else the working directory. pz-rail-deepdisc's DeepDiscPDFEstimator
  (LSSTDESC/rail_deepdisc, src/rail/estimation/algos/deepdisc.py) likewise takes the images through the input
  table and rebuilds each object's (bands, H, W) image per chunk before predicting; here the table holds paths to
  FITS cutouts (deepred.predict.inputs), since the model scales raw flux itself exactly as `deepred predict` does.
- Output: one PDF per input row, in row order (RAIL's evaluators pair rows with the truth table by position), so
  an unusable row (unreadable file, NaN pixels, wrong size) stops the run with its id and reason rather than
  being dropped (`deepred predict` lists such objects in a rejects file instead). Chunks already written stay.
  The ensemble is a qp.hist with DeepRed's point estimates in ancil (deepred.pdfs.qp_io).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ceci.config import StageParameter as Param
from rail.core.common_params import SharedParams
from rail.core.data import ModelHandle, QPHandle, TableHandle
from rail.estimation.estimator import CatEstimator

from deepred.predict.own_cutouts import _check_item
from deepred.predict.inputs import InferenceError
from deepred.predict.inputs.catalog import frame_items
from deepred.contracts.model_json import MODEL_JSON
from deepred.contracts.predictions import output_columns
from deepred.predict.predictor import Predictor, load_model
from deepred.pdfs.qp_io import ancil_columns, pdf_ensemble


def model_card_path(model: str | Path) -> Path:
    """model.json of a model folder given as the folder or as its model.json (RAIL's open_model wants a file)."""
    path = Path(model)
    return path / MODEL_JSON if path.is_dir() else path


class DeepRedModelHandle(ModelHandle):
    """A DeepRed model folder as RAIL's `model` input: reading it gives the folder, which the estimator loads
    with deepred.predict.predictor.load_model on its configured device (never pickle)."""

    suffix = "json"

    @classmethod
    def _open(cls, path: str, **kwargs: Any) -> Path:
        return cls._read(path)

    @classmethod
    def _read(cls, path: str, **kwargs: Any) -> Path:
        card = Path(path)
        if card.name != MODEL_JSON:
            raise InferenceError(f"{path}: not a DeepRed model folder or its {MODEL_JSON}")
        return card.parent


class DeepRedEstimator(CatEstimator):
    """Redshift PDFs of a trained DeepRed model (any kind with PDFs) from FITS cutouts listed in a catalogue."""

    name = "DeepRedEstimator"
    config_options = CatEstimator.config_options.copy()
    config_options.update(
        device=Param(str, "auto", msg="torch device: auto (a GPU when present), cpu, cuda or cuda:N"),
        batch_size=Param(int, 256, msg="cutouts per forward pass"),
        image_dir=Param(str, "", msg="folder relative cutout paths start from (default: the input file's folder, "
                                     "else the working directory)"),
        band_map=Param(dict, {}, msg="FILTER/BAND header value (or file-name token) -> model band"),
        crop=Param(bool, False, msg="center-crop cutouts larger than the model's size"),
        id_width=Param(int, 64, msg="bytes of the output's fixed-width id column (qp's chunked HDF5 writer "
                                    "allocates it from the first chunk)"),
        hdf5_groupname=SharedParams.copy_param("hdf5_groupname"),  # a copy: its default changes below
    )
    config_options["hdf5_groupname"].set_default("")  # a catalogue is a flat table, not RAIL's photometry group
    inputs = [("model", DeepRedModelHandle), ("input", TableHandle)]
    outputs = [("output", QPHandle)]

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        self.predictor: Predictor | None = None

    def open_model(self, **kwargs: Any) -> Predictor:
        """Load the model given as `model` (module docstring); it must give PDFs."""
        model = kwargs.get("model")
        if isinstance(model, (str, Path)) and str(model) not in ("", "None", "none"):
            kwargs["model"] = str(model_card_path(model))
        super().open_model(**kwargs)
        if self.model is None:
            raise InferenceError(f"{self.instance_name}: no model; give model= a DeepRed model folder")
        self.predictor = (self.model if isinstance(self.model, Predictor) else
                          load_model(self.model, self.config.device, self.config.batch_size))
        if self.predictor.output_grid is None:
            raise InferenceError(f"{self.predictor.model_dir}: model {self.predictor.name} gives point estimates "
                                 "only; a RAIL estimator returns PDFs (a qp ensemble)")
        return self.predictor

    def _input_where(self) -> Path:
        """The catalogue as deepred.predict.inputs sees it: relative paths start from this path's folder."""
        path = self.get_handle("input", allow_missing=True).path
        on_disk = path not in (None, "None", "none")
        if self.config.image_dir:
            return Path(self.config.image_dir) / (Path(path).name if on_disk else "(input table)")
        return Path(path) if on_disk else Path(os.getcwd()) / "(input table)"

    def _process_chunk(self, start: int, end: int, data: Any, first: bool) -> None:
        rows = _as_frame(self._convert_table_format(data, "numpyDict"))
        where, pred = self._input_where(), self.predictor
        id_column = self.config.id_col if self.config.id_col in rows else None
        items = [_check_item(item, pred.cutout, pred.bands, self.config.crop)
                 for item in frame_items(rows, where, pred.bands, None, self.config.band_map, id_column)]
        bad = [item for item in items if item.reason is not None]
        if bad:
            raise InferenceError(
                f"{where}: rows {start}-{end}: {len(bad)} object(s) cannot be used, e.g. {bad[0].object_id} "
                f"({bad[0].file}): {bad[0].reason}; the output needs one PDF per input row")
        res = pred.predict_raw(np.stack([item.image for item in items]))
        frame = pd.DataFrame({"object_id": [item.object_id for item in items],
                              **output_columns(res, summaries=True, pdf=False)})
        truth = self.config.redshift_col if self.config.redshift_col in rows else None
        if truth:
            frame[truth] = pd.to_numeric(rows[truth], errors="coerce").to_numpy(dtype=float)
        ancil = ancil_columns(frame, self.config.id_width, truth, where)
        ensemble = pdf_ensemble(pred.output_grid, res["pdf"], ancil)
        # id and redshift are in ancil already (fixed-width bytes: qp cannot write unicode in chunks); an empty
        # `data` still gets RAIL's distribution_type column
        self._do_chunk_output(ensemble, start, end, first, data={})


def _as_frame(table: dict) -> pd.DataFrame:
    """A chunk as a DataFrame, byte strings (HDF5 tables) decoded to str."""
    cols = {}
    for name, values in table.items():
        values = np.asarray(values)
        cols[name] = np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values
    return pd.DataFrame(cols)


__all__ = ["DeepRedEstimator", "DeepRedModelHandle", "model_card_path"]
