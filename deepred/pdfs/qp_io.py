"""Redshift PDFs as qp ensembles (LSST DESC qp, the format RAIL's estimators write and its evaluators read).

Written by `deepred predict --format qp` (deepred.predict.own_cutouts), the pipeline's results/pdfs/ (rules/pdfs.smk) and
the RAIL estimator (deepred.predict.rail); read back with `qp.read(path)`.

The representation, and why: a DeepRed PDF is one probability mass per grid point, spread uniformly over its bin
(deepred.core.metrics.grid_edges; the summaries' quantiles, PIT and CRPS all use that convention). That is exactly a
`qp.hist` (qp-prob 1.1.4, qp/parameterizations/hist/hist.py: `bins` are the n + 1 edges, `pdfs` the n densities,
normalized so that sum(pdfs * widths) = 1; the PDF is constant inside a bin and the CDF linear across it), so qp's
median and 68% interval equal DeepRed's z_median, z_lo68 and z_hi68, and its mean equals z_mean (tests/pdfs/test_qp.py).
`qp.interp` (what pz-rail-deepdisc writes) would instead draw straight lines between bin centres and renormalize
with the trapezoid rule: another distribution, whose mean, quantiles and PIT differ from DeepRed's own.

File facts, from the installed sources:
- HDF5 through qp's chunked writer, Ensemble.initializeHdf5Write / writeHdf5Chunk / finalizeHdf5Write (what
  RAIL's QPHandle uses, rail/core/data.py): groups `meta` (bins, pdf_name, pdf_version), `data` (pdfs), `ancil`.
- The name must end in `.hdf5`: tables_io maps only that suffix to its h5py reader (tables_io/types.py
  FILE_FORMAT_SUFFIXS; `.h5` is pandas' HDF5), and qp.read decodes byte-string ancil columns only for it
  (qp/core/factory.py `read`).
- The chunked writer allocates every column from the first chunk's dtypes (Ensemble._get_allocation_kwds): a
  unicode column cannot be allocated at all ("No conversion path for dtype <U"), and a later chunk's longer byte
  string is silently truncated. Object ids are therefore fixed-width UTF-8 bytes (`S{width}`), the width known
  before the first chunk.
- Ancil names: `id` and `redshift` are what CatEstimator._do_chunk_output attaches (rail/estimation/estimator.py);
  `zmode`, `zmean`, `zmedian` are RAIL's point-estimate keys (rail/core/point_estimation.py; PointToPointEvaluator
  reads `point_estimate_key`, default "zmode"); DeepRed's own z_pred and PDF summaries keep their names.
- Truth for RAIL's evaluators comes from a separate table (`truth` input of rail/evaluation/*_evaluator.py), read
  in the group `hdf5_groupname` (default "photometry", rail/core/common_params.py) under the column
  `reference_dictionary_key` / `redshift_col` (default "redshift"): write_truth writes that table.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deepred.contracts.predictions import PDF_GRID_KEY, PDF_SUMMARY, pdf_matrix, test_set_predictions
from deepred.contracts.processed import DataError, ProcessedDataset, test_set_rows
from deepred.core.io import atomic_path
from deepred.core.metrics import grid_edges

QP_SUFFIX = ".hdf5"
ID_KEY = "id"  # CatEstimator's ancil name of the object id
TRUTH_KEY = "redshift"  # RAIL's redshift_col default and its evaluators' reference_dictionary_key default
TRUTH_GROUP = "photometry"  # RAIL's hdf5_groupname default, where the evaluators read the truth table
RAIL_POINT_KEYS = {"zmode": "z_mode", "zmean": "z_mean", "zmedian": "z_median"}  # RAIL's name: DeepRed's
CHUNK_ROWS = 4096  # rows converted at a time from a spooled prediction file


class QpFormatError(ValueError):
    """Data that cannot become a qp ensemble (a bad name, an id too long); the message names the file."""


def check_qp_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.name.lower().endswith(QP_SUFFIX):
        raise QpFormatError(f"{path}: a qp ensemble is HDF5 and must be named *{QP_SUFFIX} (qp.read tells the "
                            "format from the suffix)")
    return path


def pdf_ensemble(grid, pdfs, ancil: dict | None = None):
    """A qp.hist ensemble of bin masses `pdfs` (N, n_bins) on the bin centres `grid` (see the module docstring)."""
    import qp

    edges = grid_edges(grid)
    density = np.asarray(pdfs, dtype=np.float64) / np.diff(edges)
    ens = qp.Ensemble(qp.hist, data={"bins": edges, "pdfs": density})
    if ancil:
        ens.set_ancil(ancil)
    return ens


def id_bytes(ids, width: int | None = None, where: str | Path = "") -> np.ndarray:
    """Object ids as fixed-width UTF-8 bytes (`S{width}`; width None: the longest id's)."""
    encoded = [str(i).encode("utf-8") for i in ids]
    longest = max((len(e) for e in encoded), default=1)
    width = width or longest
    if longest > width:
        bad = next(e for e in encoded if len(e) > width).decode()
        raise QpFormatError(f"{where}: object id {bad!r} is longer than {width} bytes, the width of the id column")
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def ancil_columns(frame: pd.DataFrame, id_width: int | None = None, truth: str | None = None,
                  where: str | Path = "") -> dict[str, np.ndarray]:
    """The ancil of prediction rows: id, z_pred and the PDF summaries (DeepRed's names), RAIL's zmode/zmean/
    zmedian, and with `truth` (a column name) the true redshift as `redshift`."""
    out = {ID_KEY: id_bytes(frame["object_id"], id_width, where)}
    for col in ("z_pred", *PDF_SUMMARY):
        if col in frame:
            out[col] = frame[col].to_numpy(dtype=np.float64)
    out.update({rail: out[ours] for rail, ours in RAIL_POINT_KEYS.items() if ours in out})
    if truth is not None:
        out[TRUTH_KEY] = frame[truth].to_numpy(dtype=np.float64)
    return out


def write_chunks(path: str | Path, grid, chunks: Iterable[tuple[np.ndarray, dict]], n_rows: int) -> None:
    """Write (pdfs, ancil) chunks, n_rows in all, as one qp ensemble at `path` (any name: the caller's
    temporary file) with qp's chunked HDF5 writer; a run without rows writes an empty ensemble."""
    fout, start, ens = None, 0, None
    try:
        for pdfs, ancil in chunks:
            ens = pdf_ensemble(grid, pdfs, ancil)
            if fout is None:
                groups, fout = ens.initializeHdf5Write(str(path), n_rows)
            ens.writeHdf5Chunk(groups, start, start + ens.npdf)
            start += ens.npdf
        if fout is None:  # no chunk: allocate from an empty one
            ens = pdf_ensemble(grid, np.zeros((0, len(grid))), {ID_KEY: id_bytes([])})
            groups, fout = ens.initializeHdf5Write(str(path), 0)
        if start != n_rows:
            raise QpFormatError(f"{path}: {start} rows written, {n_rows} announced")
        ens.finalizeHdf5Write(fout)  # writes `meta` and closes the file
        fout = None
    finally:
        if fout is not None:
            fout.close()


def write_ensemble(path: str | Path, grid, pdfs, ancil: dict) -> None:
    """One whole ensemble, written atomically at `path` (*.hdf5)."""
    path = check_qp_path(path)
    with atomic_path(path) as tmp:
        write_chunks(tmp, grid, [(pdfs, ancil)], len(pdfs))


@contextlib.contextmanager
def spool_beside(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` (same disk) for the batches of a streamed run; removed in any case."""
    fd, spool = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".spool.parquet", dir=path.parent)
    os.close(fd)
    try:
        yield Path(spool)
    finally:
        Path(spool).unlink(missing_ok=True)


def spooled_to_qp(spool: str | Path, out: str | Path, where: str | Path) -> None:
    """Convert a prediction Parquet file with a `pdf` column and its grid in the metadata (deepred.predict.own_cutouts's
    spool) into a qp ensemble at `out`, CHUNK_ROWS rows at a time (memory flat in the number of objects)."""
    pf = pq.ParquetFile(spool)
    grid = np.asarray(json.loads(pf.schema_arrow.metadata[PDF_GRID_KEY.encode()]), dtype=float)
    width = max([1] + [pc.max(pc.binary_length(b.column(0))).as_py() or 1
                       for b in pf.iter_batches(batch_size=CHUNK_ROWS, columns=["object_id"])])

    def chunks() -> Iterator[tuple[np.ndarray, dict]]:
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
            frame = batch.to_pandas()
            yield np.stack(frame["pdf"].to_numpy()), ancil_columns(frame, width, where=where)

    write_chunks(out, grid, chunks(), pf.metadata.num_rows)


def write_truth(path: str | Path, object_ids, z_true) -> None:
    """The truth table of RAIL's evaluators: group `photometry`, columns object_id and redshift (module docstring)."""
    import h5py

    path = check_qp_path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fout:
        group = fout.create_group(TRUTH_GROUP)
        group["object_id"] = id_bytes(object_ids, where=path)
        group[TRUTH_KEY] = np.asarray(z_true, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# The pipeline's results/pdfs/ (rules/pdfs.smk): one test set's rows, as the metrics rule selects them
# ----------------------------------------------------------------------------------------------------


def _test_set(config: dict, test_set: str, processed_dir: str | Path):
    dataset = config["test_sets"][test_set]["dataset"]
    return (test_set_rows(config, test_set, processed_dir), ProcessedDataset(processed_dir).catalog,
            config["datasets"][dataset]["label_column"])


def write_test_set_pdfs(config: dict, test_set: str, model: str, pred_path: str | Path, processed_dir: str | Path,
                        out: str | Path) -> int:
    """The test set's PDFs of one model as a qp ensemble at `out`, in the test set's row order (the rows
    deepred.results.tables.test_set_predictions checks and selects for the metrics), the truth in ancil `redshift`."""
    return write_test_set_files(config, test_set, {model: (pred_path, out)}, processed_dir)[model]


def write_test_set_files(config: dict, test_set: str, models: dict, processed_dir: str | Path,
                         truth_out: str | Path | None = None) -> dict[str, int]:
    """One job per test set (rule pdfs_qp): every model's PDFs ({model: (prediction file, output)}) and the truth
    table. Every model is read and checked before the first file is written, so a point-only model or a damaged
    prediction file stops the job with its name and leaves no partial set."""
    rows, catalog, label = _test_set(config, test_set, processed_dir)
    ready = {model: _model_pdfs(model, pred, rows, catalog, label) for model, (pred, _) in models.items()}
    for model, (grid, pdfs, ancil) in ready.items():
        write_ensemble(models[model][1], grid, pdfs, ancil)
    if truth_out is not None:
        _write_rows_truth(truth_out, rows, label)
    return {model: len(pdfs) for model, (_, pdfs, _) in ready.items()}


def _write_rows_truth(out: str | Path, rows, label: str) -> None:
    write_truth(out, rows["object_id"].astype(str), rows[label].to_numpy(dtype=float))


def _model_pdfs(model: str, pred_path, rows, catalog, label):

    sel, grid = test_set_predictions(pred_path, rows, catalog, label)
    if grid is None:
        raise DataError(f"{pred_path}: no 'pdf' column: model '{model}' gives point estimates only, so it has "
                        "no PDFs to write as a qp ensemble")
    return grid, pdf_matrix(sel, grid, pred_path), ancil_columns(sel, truth="z_true", where=pred_path)


def write_test_set_truth(config: dict, test_set: str, processed_dir: str | Path, out: str | Path) -> int:
    """The test set's truth table for RAIL's evaluators, rows in the order of its ensembles (write_test_set_pdfs)."""
    rows, _, label = _test_set(config, test_set, processed_dir)
    _write_rows_truth(out, rows, label)
    return len(rows)
