"""Redshifts for users' own cutouts: the trained-model adapter, the prediction writer and the driver.

The command line (`deepred predict`, deepred/cli.py) is a thin layer over `predict_cutouts`; the inputs
(a folder of FITS cutouts, an NPY cube, a catalogue) are read by deepred.inputs, one `Item` per object.

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

from deepred.data.normalize import SCALINGS, scale_images
from deepred.data.table_io import PARQUET_SUFFIXES, table_format
from deepred.inputs import InferenceError, Item
from deepred.io import atomic_path, sha256_file, write_json
from deepred.provenance import provenance

log = logging.getLogger("deepred.inference")

PIXEL_SCALE_RTOL = 0.02  # relative difference above which a pixel-scale mismatch is reported

# ---------------------------------------------------------------------------------------------- models


@dataclass
class Predictor:
    """A trained model ready for raw cutouts: what it expects and a predict function on scaled pixels."""

    model_dir: Path
    kind: str  # neural | hogsvr | ensemble
    name: str
    dataset: str | None
    bands: list[str]
    cutout: int
    pixel_scale: float | None
    scaling: dict  # stats.json's scaling of the training data: method (+ asinh softening per band)
    head: str  # point | pdf
    grid: np.ndarray | None
    meta: dict
    predict_scaled: Callable[[np.ndarray], dict]  # scaled float32 (N,C,H,W) -> {z_pred, ...}
    device: str = "cpu"

    def predict_raw(self, images: np.ndarray) -> dict:
        """Scale raw-flux cutouts as in training, then predict."""
        return self.predict_scaled(scale_images(np.asarray(images, dtype=np.float32), self.scaling))


def available_models(results_dir: str | Path) -> list[str]:
    root = Path(results_dir) / "models"
    if not root.is_dir():
        return []
    return sorted(f"{m.name}/{d.name}" for m in root.iterdir() if m.is_dir() for d in m.iterdir()
                  if d.is_dir() and (d / "model.json").exists())


def resolve_model_dir(spec: str | Path, results_dir: str | Path = "results") -> Path:
    """A model folder given as a path, or as `{model}/{dataset}` under {results_dir}/models/."""
    p = Path(spec)
    candidates = [p, Path(results_dir) / "models" / p]
    for c in candidates:
        if c.is_dir() and (c / "model.json").exists():
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


def _read_meta(model_dir: Path) -> dict:
    path = model_dir / "model.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InferenceError(f"{path}: unreadable model metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise InferenceError(f"{path}: expected a JSON object")
    return meta


def _scaling(value, where: str) -> dict:
    """The training data's scaling record, checked: a known method, and asinh's per-band softening."""
    method = value.get("method") if isinstance(value, dict) else None
    if method not in SCALINGS:
        raise InferenceError(f"{where}: scaling {value!r} is not one of {', '.join(SCALINGS)}")
    if method == "asinh" and not value.get("softening"):
        raise InferenceError(f"{where}: asinh scaling without its per-band softening; retrain on current data")
    return value


def _training_stats(meta: dict, model_dir: Path) -> dict:
    """stats.json of the training data, when the model's metadata does not carry what we need."""
    inputs = (meta.get("provenance") or {}).get("inputs") or {}
    for p in inputs:
        if Path(p).name == "stats.json" and Path(p).exists():
            return json.loads(Path(p).read_text())
    return {}


def _kind(model_dir: Path, meta: dict) -> str:
    if meta.get("model") == "hogsvr" or (model_dir / "model.npz").exists():
        return "hogsvr"
    if (model_dir / "model.safetensors").exists():
        return "neural"
    if "members" in meta or str(meta.get("model", "")).startswith("ensemble"):
        return "ensemble"
    raise InferenceError(
        f"{model_dir}: unknown model format (neither model.safetensors, model.npz nor an ensemble's model.json)"
    )


def _auto_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device '{device}' requested but no CUDA GPU is available")
    return device


def _load_neural(model_dir: Path, device: str, batch_size: int):
    from deepred.models.checkpoint import load_trained  # the models area's loader; verifies the SHA-256

    try:
        trained = load_trained(model_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise InferenceError(f"{model_dir}: cannot load the trained model: {exc}") from exc
    if device != "cpu":
        trained.net.to(device)
    return trained.meta, (lambda x: trained.predict(x, batch_size=batch_size))


def _load_hogsvr(model_dir: Path):
    from deepred.hogsvr import HogSVRError, HogSVRModel

    try:
        model = HogSVRModel.load(model_dir)
    except HogSVRError as exc:
        raise InferenceError(str(exc)) from exc
    return lambda x: {"z_pred": model.predict_images(x)}


def _load_ensemble(model_dir: Path, device: str, batch_size: int):
    """deepred.ensemble's model; its members are loaded once here (EnsembleModel.predict reloads them per call)."""
    from deepred.ensemble import load_ensemble
    from deepred.models.checkpoint import load_trained

    try:
        ens = load_ensemble(model_dir)
        members = [load_trained((model_dir / ens.meta["member_dirs"][m]).resolve()) for m in ens.members]
    except (OSError, ValueError, KeyError) as exc:
        raise InferenceError(f"{model_dir}: cannot load the ensemble: {exc}") from exc
    for t in members:
        if device != "cpu":
            t.net.to(device)
        if [t.meta.get("bands"), t.meta.get("cutout")] != [ens.meta.get("bands"), ens.meta.get("cutout")]:
            raise InferenceError(f"{model_dir}: member {t.model_dir} takes bands {t.meta.get('bands')} and "
                                 f"{t.meta.get('cutout')} px, the ensemble {ens.meta.get('bands')} and "
                                 f"{ens.meta.get('cutout')} px")

    def predict(x):
        z = np.stack([t.predict(x, batch_size=batch_size)["z_pred"] for t in members], axis=1)
        return {"z_pred": ens.combine(z)}

    return ens.meta, predict


def load_predictor(spec: str | Path, results_dir: str | Path = "results", device: str | None = "auto",
                   batch_size: int = 256) -> Predictor:
    """Resolve and load a trained model (neural network, HOG+SVR or ensemble) for raw cutouts."""
    model_dir = resolve_model_dir(spec, results_dir)
    meta = _read_meta(model_dir)
    kind = _kind(model_dir, meta)
    device = _auto_device(device) if kind != "hogsvr" else "cpu"
    if kind == "neural":
        meta, fn = _load_neural(model_dir, device, batch_size)
    elif kind == "hogsvr":
        fn = _load_hogsvr(model_dir)
    else:
        meta, fn = _load_ensemble(model_dir, device, batch_size)
    stats = _training_stats(meta, model_dir)
    where = str(model_dir / "model.json")
    for key in ("bands", "cutout"):
        if key not in meta and key not in stats:
            raise InferenceError(f"{where}: no '{key}' recorded; cannot check inputs against the training data")
    scaling = meta.get("scaling", stats.get("scaling"))
    if scaling is None:
        raise InferenceError(f"{where}: no 'scaling' recorded; cannot scale cutouts as in training")
    grid = meta.get("grid")
    head = meta.get("head") or ("pdf" if grid is not None else "point")
    ps = meta.get("pixel_scale", stats.get("pixel_scale"))
    return Predictor(
        model_dir=model_dir,
        kind=kind,
        name=str(meta.get("model", model_dir.parent.name)),
        dataset=meta.get("dataset", stats.get("dataset")),
        bands=[str(b) for b in meta.get("bands", stats.get("bands"))],
        cutout=int(meta.get("cutout", stats.get("cutout"))),
        pixel_scale=None if ps is None else float(ps),
        scaling=_scaling(scaling, where),
        head=head,
        grid=None if grid is None else np.asarray(grid, dtype=np.float64),
        meta=meta,
        predict_scaled=fn,
        device=device,
    )


# ---------------------------------------------------------------------------------------------- output


def output_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    kind = table_format(path)
    if kind in ("csv", "parquet"):
        return kind
    raise InferenceError(f"{path}: cannot tell the output format from the name; use .parquet or .csv, or --format")


def rejects_path_for(out: Path) -> Path:
    name = out.name
    for s in PARQUET_SUFFIXES + (".csv",):
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
    """A function writing result batches to Parquet (one row group each) or CSV (appends); the file
    appears at `path` only when the block ends without an error."""
    with atomic_path(path) as tmp:
        if fmt == "parquet":
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


def _check_item(item: Item, cutout: int, bands: list[str], crop: bool) -> Item:
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
    finite = np.isfinite(img)
    if not finite.all():
        bad = [b for b, ok in zip(bands, finite.reshape(len(bands), -1).all(axis=1)) if not ok]
        item.reason = f"{int((~finite).sum())} non-finite pixels (NaN or inf) in band(s) {', '.join(bad)}"
        item.image = None
        return item
    item.image = np.ascontiguousarray(img, dtype=np.float32)
    return item


def _gives_pdf(predictor: Predictor) -> bool:
    return predictor.head == "pdf" and predictor.grid is not None


def _output_columns(predictor: Predictor, with_pdf: bool) -> list[str]:
    """object_id, z_pred, the PDF summaries of a PDF model, and the PDF itself when asked (PDF models only)."""
    from deepred.predict import PDF_SUMMARY  # the pipeline's prediction contract (imports torch: not at start)

    columns = ["object_id", "z_pred"] + (list(PDF_SUMMARY) if _gives_pdf(predictor) else [])
    if with_pdf:
        if not _gives_pdf(predictor):
            raise InferenceError(f"{predictor.model_dir}: --pdf asked, but this model ({predictor.name}) gives "
                                 "point estimates only")
        columns.append("pdf")
    return columns


def _output_metadata(predictor: Predictor) -> dict[str, str]:
    """The Parquet schema metadata: the model, and the PDF grid of a PDF model."""
    from deepred.predict import PDF_GRID_KEY

    metadata = {"deepred_model": json.dumps({"model_dir": str(predictor.model_dir), "model": predictor.name,
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
    ids: list = field(default_factory=list)
    images: list = field(default_factory=list)
    scale_unchecked: bool = False  # "pixel scale not checked" was logged (once per run)

    def stream(self, items: Iterable[Item], bar) -> None:
        for item in items:
            item = _check_item(item, self.predictor.cutout, self.predictor.bands, self.crop)
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
                           "z_pred": np.asarray(res["z_pred"], dtype=np.float64).reshape(-1)})
        if _gives_pdf(self.predictor):
            from deepred.predict import PDF_SUMMARY

            for c in PDF_SUMMARY:
                df[c] = np.asarray(res[c], dtype=np.float64).reshape(-1)
        if self.with_pdf:
            df["pdf"] = list(np.asarray(res["pdf"], dtype=np.float32))
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
    weights = predictor.model_dir / ("model.safetensors" if predictor.kind == "neural" else "model.npz")
    prov = provenance(None, [])
    prov.update({
        "model_dir": str(predictor.model_dir),
        "model": predictor.name,
        "trained_on": predictor.dataset,
        "weights_sha256": sha256_file(weights) if weights.exists() else None,
        "summary": summary.as_dict(),
        "pdf_grid": [float(g) for g in predictor.grid] if _gives_pdf(predictor) else None,
        **(extra or {}),
    })
    write_json(out.with_name(out.name + ".provenance.json"), prov)


def predict_cutouts(predictor: Predictor, items: Iterable[Item], out: str | Path, *, fmt: str | None = None,
                    rejects: str | Path | None = None, with_pdf: bool = False, batch_size: int = 256,
                    total: int | None = None, pixel_scale: float | None = None, crop: bool = False,
                    progress: bool = True, provenance_extra: dict | None = None) -> Summary:
    """Stream items through the model: good ones to `out` (row groups / CSV appends), bad ones to rejects.

    Both files appear only when every item went through; then `out`.provenance.json is written."""
    t0 = time.perf_counter()
    out = Path(out)
    fmt = output_format(out, fmt)
    rejects = Path(rejects) if rejects else rejects_path_for(out)
    columns = _output_columns(predictor, with_pdf)
    summary = Summary(output=str(out), rejects=str(rejects))
    with contextlib.ExitStack() as stack:
        write = stack.enter_context(prediction_writer(out, fmt, columns, _output_metadata(predictor)))
        rejects_fh = stack.enter_context(rejects_writer(rejects))
        bar = stack.enter_context(tqdm(total=total, unit="cutout", disable=not progress,
                                       desc=f"{predictor.name} predict", mininterval=1.0))
        _Run(predictor, write, rejects_fh, summary, with_pdf, batch_size, crop, pixel_scale).stream(items, bar)
    summary.seconds = time.perf_counter() - t0
    _write_provenance(out, predictor, summary, provenance_extra)
    return summary
