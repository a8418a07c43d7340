"""model.json: the one card of every trained model folder (network, HOG+SVR, ensemble), written and read here.

Kinds, told apart by their files:
- neural:   model.safetensors, its SHA-256 under "sha256" (and "weights_file"), plus the resolved config;
- hogsvr:   model.npz, its SHA-256 under "weights_sha256"; the training row count under hyper.n_train;
- photometry: as hogsvr (model.npz holds gradient-boosted trees, deepred/baselines/gbtrees.py); told apart by "model";
- ensemble: no weights of its own; "members", "weights", "intercept" and "member_dirs".
Every kind records bands, cutout, scaling (the training data's) and usually dataset and pixel_scale, and under
"calibration" the PDF calibration fitted on the validation split (deepred.pdfs.calibration; absent in older folders,
whose models then give what they always gave).

The two digest keys and the two n_train places are history. Files keep them: the digest is copied into the
prediction files' metadata and model.json is an input of later jobs' provenance, so renaming a key would
change the bytes of outputs. `weights_sha256` and `n_train` read either form.
"""

from __future__ import annotations

import json
from pathlib import Path

from deepred.core.model_names import ENSEMBLES, FEATURE_BASELINES
from deepred.core.io import sha256_file, write_json

MODEL_JSON = "model.json"
NEURAL, HOGSVR, PHOTOMETRY, ENSEMBLE = "neural", "hogsvr", "photometry", "ensemble"
WEIGHTS_FILE = {NEURAL: "model.safetensors", HOGSVR: "model.npz", PHOTOMETRY: "model.npz"}
# the weights' SHA-256, per kind (see above)
DIGEST_KEY = {NEURAL: "sha256", HOGSVR: "weights_sha256", PHOTOMETRY: "weights_sha256"}
# the photometric baseline's folder also holds its training rows' out-of-fold predictions (object_id, z_oof), what
# the residual hybrids train on (deepred.baselines.photometry.write_oof)
OOF_FILE = "oof_train.parquet"
CALIBRATION = "calibration"  # the calibration record (deepred.pdfs.calibration.Calibration.record), any kind
# the "model" name in a feature baseline's card (deepred.core.model_names.FEATURE_BASELINES): it tells the two model.npz apart
HOGSVR_MODEL, PHOTOMETRY_MODEL = FEATURE_BASELINES


def write_card(model_dir: str | Path, kind: str, meta: dict) -> dict:
    """Write model.json (after the weights, whose SHA-256 it records); return what was written."""
    model_dir = Path(model_dir)
    if kind in WEIGHTS_FILE:
        meta = dict(meta, **{DIGEST_KEY[kind]: sha256_file(model_dir / WEIGHTS_FILE[kind])})
    write_json(model_dir / MODEL_JSON, meta)
    return meta


def add_calibration(model_dir: str | Path, record: dict, error: type[Exception]) -> dict:
    """Store a calibration record in an existing model.json (written by the kind's fit just before); return it."""
    meta = dict(read_card(model_dir, error), **{CALIBRATION: record})
    write_json(Path(model_dir) / MODEL_JSON, meta)
    return meta


MAX_CARD_BYTES = 64 * 1024 * 1024  # a model card is kilobytes; anything this large is not one


def _load_card(path: Path, error: type[Exception]) -> dict:
    """A model.json file's object; a binary, huge, malformed or absurdly nested file is `error` naming it."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise error(f"{path}: {path.stat().st_size} bytes, not a model card")
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (binary data), not a model card") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply to be a model card") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable model metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise error(f"{path}: expected a JSON object")
    return meta


def read_card(model_dir: str | Path, error: type[Exception]) -> dict:
    """model.json of a model folder as a dict; `error` names the file when it is unreadable."""
    return _load_card(Path(model_dir) / MODEL_JSON, error)


def read_verified_card(model_dir: str | Path, kind: str, error: type[Exception],
                       missing_hint: str) -> tuple[dict, Path]:
    """(model.json, weights path) of a kind with weights, the weights' SHA-256 checked against the card."""
    model_dir = Path(model_dir)
    meta_path, weights, key = model_dir / MODEL_JSON, model_dir / WEIGHTS_FILE[kind], DIGEST_KEY[kind]
    for p in (meta_path, weights):
        if not p.is_file():
            raise error(f"{p}: missing ({missing_hint})")
    meta = _load_card(meta_path, error)
    digest = sha256_file(weights)
    if digest != meta.get(key):
        raise error(f"{weights}: SHA-256 {digest[:12]}... does not match {meta_path} ({str(meta.get(key))[:12]}...)")
    return meta, weights


def card_kind(model_dir: str | Path, meta: dict, error: type[Exception]) -> str:
    """neural | hogsvr | photometry | ensemble, from the folder's files and the card."""
    model_dir = Path(model_dir)
    if meta.get("model") == PHOTOMETRY_MODEL:
        return PHOTOMETRY
    if meta.get("model") == HOGSVR_MODEL or (model_dir / WEIGHTS_FILE[HOGSVR]).exists():
        return HOGSVR
    if (model_dir / WEIGHTS_FILE[NEURAL]).exists():
        return NEURAL
    if "members" in meta or meta.get("model") in ENSEMBLES:
        return ENSEMBLE
    raise error(
        f"{model_dir}: unknown model format (neither model.safetensors, model.npz nor an ensemble's model.json)"
    )


def weights_sha256(meta: dict) -> str | None:
    """The weights' SHA-256 of any kind's card (None for ensembles)."""
    return next((meta[k] for k in DIGEST_KEY.values() if meta.get(k)), None)


def n_train(meta: dict) -> int | None:
    """Training rows: top level for networks, hyper.n_train for HOG+SVR."""
    return meta.get("n_train") or (meta.get("hyper") or {}).get("n_train")


def training_stats(meta: dict) -> dict:
    """stats.json of the training data (from the card's provenance inputs), for cards that lack a field."""
    inputs = (meta.get("provenance") or {}).get("inputs") or {}
    for p in inputs:
        if Path(p).name == "stats.json" and Path(p).exists():
            return json.loads(Path(p).read_text())
    return {}
