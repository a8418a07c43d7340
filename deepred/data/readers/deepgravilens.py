"""DeepGraviLens (Pinciroli Vago & Fraternali 2023, Neural Comput. Appl., doi:10.1007/s00521-023-08766-9;
Zenodo record 7860294) raw files of one subset folder:

- GROUP_{k}_ims_{T}.npy: images, reshaped to (N, 4, 45, 45), bands g, r, i, z (epochs already co-added);
- GROUP_{k}_lcs_{T}.npy: light curves (N, T, 4) (optional; only checked);
- GROUP_{k}_mds_{T}.npy: a pickled dict, one entry per row, each a pandas DataFrame slice (one row per
  epoch) pickled by an older pandas, with `PLANE_1-REDSHIFT-g` (lens plane) and `PLANE_2-REDSHIFT-g`
  (source plane).

k = 1..4 is the class group (`group_classes`). The published processing stores every system 8 times
(rotations by 0/90/180/270 degrees, each followed by its mirror, appended as whole blocks), so rows are
not independent: all copies of a system get one system_id, derived from a hash of its metadata (identical
for the copies), never from the row order; the split then keeps them together.

Pickle executes code when loaded. The metadata file is read into memory, its bytes are checked against the
pinned checksum, and only those same bytes are unpickled (no window for a swap in between). Files extracted from
the record's dataset.zip (source.archive) are pinned by their member's SHA-256 in the source's lock, recorded
after the archive's checksum and the member's CRC-32 passed (deepred.fetch.archive_zip, deepred.fetch.pins).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import pickle
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError
from deepred.contracts.raw import RawChunk, RawSource, read_rows
from deepred.fetch.source_files import source_specs, verified
from deepred.fetch.checksums import DownloadError, checksum_bytes

log = logging.getLogger("deepred.readers.deepgravilens")

DGL_BANDS = ["g", "r", "i", "z"]
DGL_CUTOUT = 45
LENS_KEY, SOURCE_KEY = "PLANE_1-REDSHIFT-g", "PLANE_2-REDSHIFT-g"
FILE_RE = re.compile(r"GROUP_(\d+)_(ims|lcs|mds)_(\d+)\.npy$")
# Subset folder -> (survey, pixel scale in arcsec): DES and DESI-DOT images are DECam, LSST 0.2"/px.
SUBSETS = {
    "des_deep_data": ("DES-deep", 0.263),
    "full_data": ("DES-wide", 0.263),
    "high_cad_data": ("DESI-DOT", 0.263),
    "lsst_data": ("LSST-wide", 0.2),
}
QF_PLACEHOLDER = 1  # quality_flag bit: the label is a placeholder value kept on purpose (placeholders.action keep)


class _CompatUnpickler(pickle.Unpickler):
    """pandas' own compatibility unpickler (old class locations such as Int64Index) plus numpy 1.x paths."""

    def find_class(self, module, name):
        from pandas.compat.pickle_compat import _class_locations_map

        module, name = _class_locations_map.get((module, name), (module, name))
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def load_metadata_pickle(data: bytes, origin: str) -> dict:
    """Unpickle an already checksum-verified .npy metadata file (an object array holding one dict)."""
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        header = read_header(fh)  # (shape, fortran_order, dtype)
    except ValueError as exc:
        raise DataError(f"{origin}: not an NPY file ({exc})") from exc
    if header[2] != np.dtype(object):
        raise DataError(f"{origin}: expected a pickled object array, found dtype {header[2]}")
    try:
        obj = _CompatUnpickler(fh, encoding="latin1").load()
    except (ImportError, AttributeError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(
            f"{origin}: the metadata pickle (written by an older pandas) cannot be loaded with pandas "
            f"{pd.__version__}: {type(exc).__name__}: {exc}. Convert it once with the pandas that wrote it "
            "(e.g. pandas 1.5: load, then save each entry with DataFrame.to_parquet) and point the config at that"
        ) from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(f"{origin}: expected a pickled dict of per-object metadata, found {type(obj).__name__}")
    return obj


def _metadata_table(meta: dict, n: int, origin: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Lens and source redshifts per row, and a content hash per row (the system key)."""
    try:
        keys = sorted(meta)
    except TypeError as exc:
        raise DataError(f"{origin}: metadata keys are not sortable row indices ({exc})") from exc
    if len(keys) != n:
        raise DataError(f"{origin}: {len(keys)} metadata entries for {n} images")
    z_lens, z_src, digests = np.empty(n), np.empty(n), []
    for i, key in enumerate(keys):
        df = meta[key]
        if isinstance(df, pd.Series):
            df = df.to_frame().T
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"{origin}: object {key}: metadata is a {type(df).__name__}, expected a DataFrame")
        missing = [c for c in (LENS_KEY, SOURCE_KEY) if c not in df.columns]
        if missing or len(df) == 0:
            raise DataError(f"{origin}: object {key}: metadata lacks {', '.join(missing) or 'rows'}")
        for arr, col in ((z_lens, LENS_KEY), (z_src, SOURCE_KEY)):
            vals = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            if not np.isfinite(vals).all() or np.ptp(vals) > 1e-9:
                raise DataError(f"{origin}: object {key}: {col} is not one finite value over the epochs ({vals[:4]}...)")
            arr[i] = vals[0]
        # Copies share identical metadata (values and columns), whatever their index labels.
        h = hashlib.blake2b(digest_size=10)
        h.update("\x1f".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df.reset_index(drop=True), index=False).to_numpy().tobytes())
        digests.append(h.hexdigest())
    return z_lens, z_src, digests


def _placeholder_masks(z_lens: np.ndarray, z_src: np.ndarray, ph: dict) -> tuple[np.ndarray, np.ndarray]:
    def near(z, values):
        return np.isin(np.round(z, 9), np.round(np.asarray(values, float), 9)) if values else np.zeros(len(z), bool)

    lens_ph = near(z_lens, ph.get("lens_plane_values", [0.1])) | (z_lens < ph.get("lens_plane_below", 0.011))
    src_ph = near(z_src, ph.get("source_plane_values", [2.0]))
    return lens_ph, src_ph


def read_deepgravilens(raw_dir: str | Path, src: dict, dataset: str, label_column: str = "z_lens") -> RawSource:
    raw_dir = Path(raw_dir)
    specs = source_specs(raw_dir, src)
    groups = _group_files(specs, dataset)
    classes = list(src.get("group_classes", ["no_lens", "gg_lens", "lensed_sn_ia", "lensed_sn_cc"]))
    ph = dict(src.get("placeholders") or {})
    action = ph.get("action", "drop")
    copies = int(src.get("copies", 8))
    subset = src.get("subset", "des_deep_data")
    survey, pixel_scale = SUBSETS.get(subset, (subset, 0.263))

    parts = []  # (ims path, memmap, truth, keep mask)
    inputs: list[Path] = []
    for k in sorted(groups):
        g = groups[k]
        for role in ("ims", "mds"):
            if role not in g:
                raise DataError(f"dataset '{dataset}': group {k} has no {role} file in source.files")
        if not 1 <= k <= len(classes):
            raise DataError(f"{g['ims']}: group {k} has no class in source.group_classes {classes}")
        ims_path, ims = _open_images(raw_dir, specs[g["ims"]])
        n = ims.shape[0] if ims.ndim else 0
        mds_path, (z_lens, z_src, digests) = _read_metadata(raw_dir, specs[g["mds"]], g["mds"], n)
        if "lcs" in g:
            inputs.append(_check_light_curves(raw_dir, specs[g["lcs"]], n))
        lens_ph, src_ph = _placeholder_masks(z_lens, z_src, ph)
        truth, n_systems = _group_truth(dataset, k, classes[k - 1], (z_lens, z_src, digests), (lens_ph, src_ph),
                                        copies, ims_path)
        label_ph = {"z_lens": lens_ph, "z_source": src_ph}.get(label_column, np.zeros(n, bool))
        keep = _apply_placeholders(truth, label_ph, label_column, action)
        log.info("%s: %d rows, %d systems, %d placeholder labels (%s)", ims_path, n, n_systems, int(label_ph.sum()), action)
        parts.append((ims_path, ims, truth, keep))
        inputs += [ims_path, mds_path]

    return RawSource(
        bands=list(DGL_BANDS),
        pixel_scale=float(src.get("pixel_scale", pixel_scale)),
        survey=str(src.get("survey", survey)),
        n_objects=int(sum(int(p[3].sum()) for p in parts)),
        chunks=functools.partial(_chunks, parts),
        inputs=inputs,
        meta={"kind": "deepgravilens", "subset": subset, "placeholders": action, "copies": copies},
    )


def _group_files(specs: dict, dataset: str) -> dict[int, dict[str, str]]:
    """group k -> {"ims" | "lcs" | "mds": file name} from the source's pinned files."""
    groups: dict[int, dict[str, str]] = {}
    for name in specs:
        m = FILE_RE.search(name)
        if m:
            groups.setdefault(int(m.group(1)), {})[m.group(2)] = name
    if not groups:
        raise DataError(f"dataset '{dataset}': source.files lists no GROUP_{{k}}_{{ims|lcs|mds}}_{{T}}.npy file")
    return groups


def _open_images(raw_dir: Path, spec) -> tuple[Path, np.ndarray]:
    """(path, memory-mapped images) of a verified GROUP_k_ims file whose rows reshape to (4, 45, 45)."""
    ims_path = verified(raw_dir, spec)
    try:
        ims = np.load(ims_path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{ims_path}: not a plain NPY array ({exc})") from exc
    per_row = int(np.prod(ims.shape[1:])) if ims.ndim else 0
    if per_row != len(DGL_BANDS) * DGL_CUTOUT**2:
        raise DataError(f"{ims_path}: shape {ims.shape} does not reshape to (N, 4, 45, 45) (g, r, i, z)")
    return ims_path, ims


def _read_metadata(raw_dir: Path, spec, name: str, n: int):
    """(path, (z_lens, z_source, digests)) of a GROUP_k_mds pickle: read once, those bytes verified against
    the pin, then those same bytes unpickled."""
    mds_path = raw_dir / name
    if not mds_path.is_file():
        raise DataError(f"{mds_path}: missing")
    data = mds_path.read_bytes()
    try:
        checksum_bytes(data, spec, str(mds_path))
    except DownloadError as exc:
        raise DataError(f"{exc}; the pickle was NOT loaded") from exc
    meta = load_metadata_pickle(data, str(mds_path))
    return mds_path, _metadata_table(meta, n, str(mds_path))


def _check_light_curves(raw_dir: Path, spec, n: int) -> Path:
    """The verified GROUP_k_lcs file, its shape checked against the images (it is not read further)."""
    lcs_path = verified(raw_dir, spec)
    lcs = np.load(lcs_path, mmap_mode="r", allow_pickle=False)
    if lcs.ndim != 3 or lcs.shape[0] != n or lcs.shape[2] != len(DGL_BANDS):
        raise DataError(f"{lcs_path}: light curves have shape {lcs.shape}, expected ({n}, T, 4)")
    return lcs_path


def _group_truth(dataset: str, k: int, obj_class: str, redshifts, placeholders, copies: int,
                 ims_path: Path) -> tuple[pd.DataFrame, int]:
    """(truth of group k's rows, number of systems); system_id from the metadata digest, so copies share it.

    redshifts = (z_lens, z_source, digests) per row; placeholders = (lens, source) masks, whose labels become NaN."""
    z_lens, z_src, digests = redshifts
    lens_ph, src_ph = placeholders
    n = len(z_lens)
    sys_ids = [f"{dataset}-g{k}-{d}" for d in digests]
    counts = pd.Series(sys_ids).value_counts()
    if copies and (counts != copies).any():
        log.warning(
            "%s: %d of %d systems do not have %d copies (counts %s)",
            ims_path, int((counts != copies).sum()), len(counts), copies, sorted(set(counts.tolist())),
        )
    truth = pd.DataFrame(
        {
            "object_id": [f"{dataset}-g{k}-{i:07d}" for i in range(n)],
            "system_id": sys_ids,
            "obj_class": obj_class,
            "z_lens": np.where(lens_ph, np.nan, z_lens),
            "z_source": np.where(src_ph, np.nan, z_src),
            "z_lens_raw": z_lens,
            "z_source_raw": z_src,
            "group": k,
            "copy": pd.Series(sys_ids).groupby(sys_ids).cumcount().to_numpy(),
            "quality_flag": np.zeros(n, np.int16),
        }
    )
    return truth, len(counts)


def _apply_placeholders(truth: pd.DataFrame, label_ph: np.ndarray, label_column: str, action: str) -> np.ndarray:
    """Rows to keep under placeholders.action; "keep" puts the raw label back in truth and flags it."""
    keep = np.ones(len(truth), bool)
    if action == "drop":
        keep = ~label_ph
    elif action == "keep" and label_column in ("z_lens", "z_source"):
        raw = truth[f"{label_column}_raw"].to_numpy()
        truth[label_column] = np.where(label_ph, raw, truth[label_column].to_numpy())
        truth.loc[label_ph, "quality_flag"] |= QF_PLACEHOLDER
    # action "nan": the label stays NaN; normalize rejects those rows (on_bad: skip) or stops (error).
    return keep


def _chunks(parts: list, rows: int) -> Iterator[RawChunk]:
    """Kept rows of every group, `rows` image rows at a time (images reshaped to (n, 4, 45, 45))."""
    for ims_path, ims, truth, keep in parts:
        for start in range(0, len(truth), rows):
            stop = min(start + rows, len(truth))
            sel = keep[start:stop]
            if not sel.any():
                continue
            block = read_rows(ims, start, stop).reshape(stop - start, len(DGL_BANDS), DGL_CUTOUT, DGL_CUTOUT)
            yield RawChunk(
                truth=truth.iloc[start:stop][sel].reset_index(drop=True),
                images=block[sel].astype(np.float32, copy=False),
                masks=None,
                origin=str(ims_path),
            )
