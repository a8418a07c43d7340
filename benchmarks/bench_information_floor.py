"""How much redshift the photometry of a processed dataset carries at its own training size.

    python benchmarks/bench_information_floor.py [--data-dir data] [--datasets sdss des_wide ...]

Reference points for the models' test NMADs (the project asks for at most half the training-median NMAD):
- training median: every test object gets the training split's median label;
- aperture photometry + gradient boosting: magnitudes in two circular apertures (4 and 8 px radius) per band
  and their colours, measured on the cutouts (asinh scaling undone with stats.json's softening), fed to
  scikit-learn's HistGradientBoostingRegressor trained on the same training split the networks get;
- catalogue magnitudes + gradient boosting: the simulator's noise-free total magnitudes and colours
  (columns mag_<band>), an upper bound no image model can beat with this SED population and training size.

A network well below the aperture line has learned more than colours; one well above it has not yet
learned the colours. Writes results/benchmarks/information_floor.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepred.contracts.processed import ProcessedDataset  # noqa: E402
from deepred.data.normalize import unscale_images  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.core.metrics import nmad  # noqa: E402

APERTURES_PX = (4, 8)


def aperture_features(images: np.ndarray) -> np.ndarray:
    """(N, bands, H, W) calibrated flux -> magnitudes in APERTURES_PX and adjacent-band colours."""
    h, w = images.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    feats = []
    for rad in APERTURES_PX:
        flux = images[:, :, r < rad].sum(-1)
        mag = -2.5 * np.log10(np.maximum(flux, 1e-3 * np.median(np.abs(flux)) + 1e-12))
        feats += [mag, np.diff(mag, axis=1)]
    return np.concatenate(feats, axis=1)


def gbm_nmad(x_train, y_train, x_test, y_test, seed: int) -> float:
    from sklearn.ensemble import HistGradientBoostingRegressor

    gbm = HistGradientBoostingRegressor(max_iter=500, learning_rate=0.05, random_state=seed)
    return nmad(gbm.fit(x_train, y_train).predict(x_test), y_test)


def floor_of(processed: Path, label: str, seed: int) -> dict:
    ds = ProcessedDataset(processed)
    cat = ds.catalog
    train, test = ds.split("train"), ds.split("test")
    if not len(train) or not len(test):
        raise SystemExit(f"{processed}: needs train and test rows")
    y_tr, y_te = train[label].to_numpy(float), test[label].to_numpy(float)
    scaling = ds.stats.get("scaling", {"method": "none"})
    if scaling.get("method") not in ("asinh", "none"):
        raise SystemExit(f"{processed}: scaling {scaling.get('method')!r} cannot be undone; aperture photometry needs flux")
    t0 = time.perf_counter()
    f_tr = aperture_features(unscale_images(ds.images(train), scaling))
    f_te = aperture_features(unscale_images(ds.images(test), scaling))
    out = {
        "n_train": len(train), "n_test": len(test), "label": label,
        "training_median_nmad": nmad(np.full(len(y_te), np.median(y_tr)), y_te),
        "aperture_gbm_nmad": gbm_nmad(f_tr, y_tr, f_te, y_te, seed),
    }
    mags = [f"mag_{b}" for b in ds.bands]
    if all(c in cat.columns for c in mags):
        m_tr, m_te = train[mags].to_numpy(float), test[mags].to_numpy(float)
        out["catalogue_mag_gbm_nmad"] = gbm_nmad(np.hstack([m_tr, np.diff(m_tr, axis=1)]), y_tr,
                                                  np.hstack([m_te, np.diff(m_te, axis=1)]), y_te, seed)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["half_median_target"] = out["training_median_nmad"] / 2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--datasets", nargs="*", default=None, help="default: every folder under <data-dir>/processed")
    ap.add_argument("--label", default="z_lens")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "information_floor.json"))
    args = ap.parse_args()
    root = Path(args.data_dir) / "processed"
    names = args.datasets or sorted(p.name for p in root.iterdir() if (p / "catalog.parquet").exists())
    if not names:
        raise SystemExit(f"no processed datasets under {root}: run the workflow first")
    result = {}
    for name in names:
        result[name] = floor_of(root / name, args.label, args.seed)
        print(name, json.dumps(result[name]), flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
