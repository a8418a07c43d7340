"""Redshifts for users' own cutouts: the prediction writer and the driver (the models: deepred.predict.predictor).

The command line (`deepred predict`, deepred/cli.py) is a thin layer over `predict_cutouts`; the inputs
(a folder of FITS cutouts, an NPY cube, a catalogue) are read by deepred.predict.inputs, one `Item` per object.

Pixels are expected in calibrated linear flux, as the training data before normalization (the raw images
of data/raw/{dataset}/); they get the scaling (method and per-band softening) recorded in the model's metadata
(deepred.data.normalize.scale_images), so predictions equal the pipeline's for the same pixels.
Objects that cannot be used (not a FITS image, wrong size, NaN pixels, a band missing) are not fatal:
they go to the rejects file with the file and the reason, and the others are written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from deepred.contracts.model_json import weights_sha256
from deepred.contracts.pixels import MAX_ABS_PIXEL, pixel_problem
from deepred.contracts.predictions import MODEL_KEY, PDF_GRID_KEY, PDF_SUMMARY, output_columns
from deepred.contracts.table_io import PARQUET_SUFFIXES, table_format
from deepred.core.io import atomic_path, write_json
from deepred.core.provenance import provenance
from deepred.pdfs.qp_io import QP_SUFFIX, spool_beside, spooled_to_qp
from deepred.predict.inputs import InferenceError, Item
from deepred.predict.predictor import Predictor, load_predictor, resolve_model_dir  # noqa: F401 (the model loading)

log = logging.getLogger("deepred.predict.own_cutouts")

PIXEL_SCALE_RTOL = 0.02  # relative difference above which a pixel-scale mismatch is reported

# ---------------------------------------------------------------------------------------------- output


def output_format(path: Path, fmt: str | None) -> str:
    if fmt == "qp" or (fmt is None and path.name.lower().endswith(QP_SUFFIX)):
        if not path.name.lower().endswith(QP_SUFFIX):  # qp.read tells the format from the suffix (deepred.pdfs.qp_io)
            raise InferenceError(f"{path}: --format qp writes an HDF5 qp ensemble; name the output *{QP_SUFFIX}")
        return "qp"
    if fmt:
        return fmt
    kind = table_format(path)
    if kind in ("csv", "parquet"):
        return kind
    raise InferenceError(f"{path}: cannot tell the output format from the name; use .parquet, .csv or "
                         f"{QP_SUFFIX} (qp), or --format")


def rejects_path_for(out: Path) -> Path:
    name = out.name
    for s in PARQUET_SUFFIXES + (".csv", QP_SUFFIX):
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    return out.with_name(name + ".rejects.csv")


def _parquet_schema(columns: list[str], metadata: dict[str, str]) -> pa.Schema:
    fields = [pa.field("object_id", pa.string())]
    fields += [pa.field(c, pa.float64()) for c in columns if c not in ("object_id", "pdf")]
    if "pdf" in columns:
        fields.append(pa.field("pdf", pa.list_(pa.float32())))
    return pa.schema(fields, metadata={k.encode(): v.encode() for k, v in metadata.items()})


def _write_parquet(sink: pq.ParquetWriter, schema: pa.Schema, columns: list[str], df: pd.DataFrame) -> None:
    sink.write_table(pa.Table.from_pandas(df[columns], schema=schema, preserve_index=False))  # one row group


def _write_csv(fh: TextIO, columns: list[str], df: pd.DataFrame) -> None:
    if "pdf" in df:
        df = df.assign(pdf=[" ".join(f"{v:.6g}" for v in p) for p in df["pdf"]])
    df[columns].to_csv(fh, header=False, index=False, lineterminator="\n")


@contextlib.contextmanager
def prediction_writer(path: Path, fmt: str, columns: list[str],
                      metadata: dict[str, str]) -> Iterator[Callable[[pd.DataFrame], None]]:
    """A function writing result batches to Parquet (one row group each), CSV (appends) or a qp ensemble (batches
    spooled to a Parquet file beside it, converted at the end: qp's HDF5 writer needs the row count first); the
    file appears at `path` only when the block ends without an error."""
    with atomic_path(path) as tmp:
        if fmt == "qp":
            with spool_beside(path) as spool:
                with prediction_writer(spool, "parquet", columns, metadata) as write:
                    yield write
                spooled_to_qp(spool, tmp, path)
        elif fmt == "parquet":
            schema = _parquet_schema(columns, metadata)
            with pq.ParquetWriter(tmp, schema) as sink:
                yield functools.partial(_write_parquet, sink, schema, columns)
        else:
            with open(tmp, "w", newline="") as fh:
                fh.write(",".join(columns) + "\n")
                yield functools.partial(_write_csv, fh, columns)


@contextlib.contextmanager
def rejects_writer(path: Path) -> Iterator[TextIO]:
    """The rejects CSV (object_id, file, reason), written atomically like the predictions."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        fh.write("object_id,file,reason\n")
        yield fh


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class Summary:
    n_ok: int = 0
    n_rejected: int = 0
    output: str = ""
    rejects: str = ""
    seconds: float = 0.0
    pixel_scales: dict = field(default_factory=dict)  # mismatched scale -> count

    def as_dict(self) -> dict:
        return {"n_ok": self.n_ok, "n_rejected": self.n_rejected, "output": self.output, "rejects": self.rejects,
                "seconds": round(self.seconds, 3), "pixel_scale_mismatches": self.pixel_scales}


def _check_item(item: Item, cutout: int, bands: list[str], crop: bool, max_abs_pixel: float = MAX_ABS_PIXEL) -> Item:
    if item.reason is not None:
        return item
    img = item.image
    h, w = img.shape[-2:]
    if (h, w) != (cutout, cutout):
        if crop and h >= cutout and w >= cutout:
            y0, x0 = (h - cutout) // 2, (w - cutout) // 2
            img = img[:, y0:y0 + cutout, x0:x0 + cutout]
        else:
            hint = " (--crop center-crops larger cutouts)" if h >= cutout and w >= cutout else ""
            item.reason = f"cutout is {h}x{w} px; the model takes {cutout}x{cutout}{hint}"
            item.image = None
            return item
    problem = pixel_problem(img, bands, max_abs_pixel)  # non-finite, blank or absurd: never a silent prediction
    if problem:
        item.reason = problem
        item.image = None
        return item
    item.image = np.ascontiguousarray(img, dtype=np.float32)
    return item


def _gives_pdf(predictor: Predictor) -> bool:
    return predictor.gives_pdf  # a PDF head, or any model with a calibration (deepred.pdfs.calibration)


def _output_columns(predictor: Predictor, with_pdf: bool, fmt: str = "parquet") -> list[str]:
    """object_id, z_pred, the PDF summaries of a PDF model, and the PDF itself when asked or for a qp ensemble
    (PDF models only)."""
    columns = ["object_id", "z_pred"] + (list(PDF_SUMMARY) if _gives_pdf(predictor) else [])
    if with_pdf or fmt == "qp":
        if not _gives_pdf(predictor):
            asked = "--format qp writes PDFs" if fmt == "qp" else "--pdf asked"
            raise InferenceError(f"{predictor.model_dir}: {asked}, but this model ({predictor.name}) gives "
                                 "point estimates only")
        columns.append("pdf")
    return columns


def _output_metadata(predictor: Predictor) -> dict[str, str]:
    """The Parquet schema metadata: the model, and the PDF grid of a PDF model."""
    metadata = {MODEL_KEY: json.dumps({"model_dir": str(predictor.model_dir), "model": predictor.name,
                                       "dataset": predictor.dataset, "bands": predictor.bands})}
    if _gives_pdf(predictor):
        metadata[PDF_GRID_KEY] = json.dumps([float(g) for g in predictor.grid])
    return metadata


@dataclass
class _Run:
    """One prediction run: where results and rejects go, the batch being filled, and the summary."""

    predictor: Predictor
    write: Callable[[pd.DataFrame], None]
    rejects: TextIO
    summary: Summary
    with_pdf: bool
    batch_size: int
    crop: bool
    pixel_scale: float | None  # the user's --pixel-scale; None: each file's own
    max_abs_pixel: float = MAX_ABS_PIXEL
    ids: list = field(default_factory=list)
    images: list = field(default_factory=list)
    scale_unchecked: bool = False  # "pixel scale not checked" was logged (once per run)

    def stream(self, items: Iterable[Item], bar) -> None:
        for item in items:
            item = _check_item(item, self.predictor.cutout, self.predictor.bands, self.crop, self.max_abs_pixel)
            if item.reason is not None:
                self.reject(item)
            else:
                self.check_scale(item)
                self.ids.append(item.object_id)
                self.images.append(item.image)
                if len(self.ids) >= self.batch_size:
                    self.flush()
            bar.update(1)
        self.flush()

    def reject(self, item: Item) -> None:
        self.summary.n_rejected += 1
        if self.summary.n_rejected <= 10:
            log.warning("rejected %s (%s): %s", item.object_id, item.file, item.reason)
        elif self.summary.n_rejected == 11:
            log.warning("more rejects: see %s", self.summary.rejects)
        pd.DataFrame([[item.object_id, item.file, item.reason]]).to_csv(
            self.rejects, header=False, index=False, lineterminator="\n")

    def flush(self) -> None:
        """Predict the batch and write it (one Parquet row group)."""
        if not self.ids:
            return
        res = self.predictor.predict_raw(np.stack(self.images))
        df = pd.DataFrame({"object_id": self.ids,
                           **output_columns(res, summaries=_gives_pdf(self.predictor), pdf=self.with_pdf)})
        self.write(df)
        self.summary.n_ok += len(self.ids)
        self.ids.clear()
        self.images.clear()

    def check_scale(self, item: Item) -> None:
        """Count cutouts whose pixel scale differs from the training data's (a warning per distinct scale)."""
        s = self.pixel_scale if self.pixel_scale is not None else item.pixel_scale
        ref = self.predictor.pixel_scale
        if s is None or ref is None:
            if not self.scale_unchecked:
                self.scale_unchecked = True
                why = ("the model records none" if ref is None else
                       f"{item.file} has no PIXSCALE/CD/CDELT keywords; give --pixel-scale to check it")
                log.info("pixel scale not checked: %s", why)
            return
        if abs(s - ref) > PIXEL_SCALE_RTOL * ref:
            key = f"{s:.4g}"
            if key not in self.summary.pixel_scales:
                log.warning('pixel scale %.4g"/px (%s) differs from the training data\'s %.4g"/px (%s): '
                            "predictions may be biased; resample the cutouts to the training scale",
                            s, item.file, ref, self.predictor.dataset)
            self.summary.pixel_scales[key] = self.summary.pixel_scales.get(key, 0) + 1


def _write_provenance(out: Path, predictor: Predictor, summary: Summary, extra: dict | None) -> None:
    prov = provenance(None, [])
    prov.update({
        "model_dir": str(predictor.model_dir),
        "model": predictor.name,
        "trained_on": predictor.dataset,
        "weights_sha256": weights_sha256(predictor.meta),
        "summary": summary.as_dict(),
        "pdf_grid": [float(g) for g in predictor.grid] if _gives_pdf(predictor) else None,
        **(extra or {}),
    })
    write_json(out.with_name(out.name + ".provenance.json"), prov)


def predict_cutouts(predictor: Predictor, items: Iterable[Item], out: str | Path, *, fmt: str | None = None,
                    rejects: str | Path | None = None, with_pdf: bool = False, batch_size: int = 256,
                    total: int | None = None, pixel_scale: float | None = None, crop: bool = False,
                    progress: bool = True, provenance_extra: dict | None = None,
                    max_abs_pixel: float = MAX_ABS_PIXEL) -> Summary:
    """Stream items through the model: good ones to `out` (row groups / CSV appends), bad ones to rejects.

    Both files appear only when every item went through; then `out`.provenance.json is written."""
    t0 = time.perf_counter()
    out = Path(out)
    fmt = output_format(out, fmt)
    rejects = Path(rejects) if rejects else rejects_path_for(out)
    columns = _output_columns(predictor, with_pdf, fmt)
    with_pdf = "pdf" in columns
    summary = Summary(output=str(out), rejects=str(rejects))
    with contextlib.ExitStack() as stack:
        write = stack.enter_context(prediction_writer(out, fmt, columns, _output_metadata(predictor)))
        rejects_fh = stack.enter_context(rejects_writer(rejects))
        bar = stack.enter_context(tqdm(total=total, unit="cutout", disable=not progress,
                                       desc=f"{predictor.name} predict", mininterval=1.0))
        _Run(predictor, write, rejects_fh, summary, with_pdf, batch_size, crop, pixel_scale,
             max_abs_pixel=max_abs_pixel).stream(items, bar)
    summary.seconds = time.perf_counter() - t0
    _write_provenance(out, predictor, summary, provenance_extra)
    return summary
