"""results/tables/hybrid_controls.csv: where a hybrid's gain over photometry comes from.

Per test set and hybrid backbone, one row per variant, each against the photometric baseline on the same test rows:
- `hybrid`: hybrid_<backbone> (image embedding + photometric features);
- `shuffled`: the same network trained and tested with each object's image swapped for another object's of its
  split, its photometry kept (deepred.models.hybrid.swap_images). If it matches photometry alone while `hybrid`
  beats it, the gain is the pixels';
- `noimage`: the same head with the image branch zeroed: photometry through the hybrid's head (the head's own
  contribution, against the trees);
- `image_only`: the backbone alone (the paper's DeepRed row), for reference.
R = NMAD(variant) / NMAD(photometry), with a paired-bootstrap interval: one set of resample indices per test set
(the metrics jobs' seed, deepred.results.tables), applied to both models, so R_ci says whether the variant is better
than photometry on these objects, not whether two independent samples differ. `reading` spells the interval out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepred.contracts.predictions import test_set_predictions
from deepred.contracts.processed import ProcessedDataset, test_set_rows
from deepred.core import metrics as M
from deepred.core.model_names import HYBRID_CONTROLS, PHOTOMETRY_BASELINE, hybrid_backbones
from deepred.results.tables import bootstrap_seed

VARIANTS = ("hybrid", *HYBRID_CONTROLS, "image_only")
COLUMNS = ["test_set", "dataset", "backbone", "variant", "model", "n", "nmad", "nmad_ci_lo", "nmad_ci_hi",
           "photometry_nmad", "R_photometry", "R_ci_lo", "R_ci_hi", "reading"]


def variant_model(backbone: str, variant: str) -> str:
    return {"hybrid": f"hybrid_{backbone}", "image_only": backbone}.get(variant, f"hybrid_{backbone}_{variant}")


def reading(lo: float, hi: float) -> str:
    if hi < 1:
        return "better than photometry"
    if lo > 1:
        return "worse than photometry"
    return "no different from photometry"


def _nmads(path, rows, catalog, label, idx) -> tuple[float, np.ndarray]:
    sel, _ = test_set_predictions(path, rows, catalog, label)
    s = M.sample_arrays(sel["z_pred"].to_numpy(float), sel["z_true"].to_numpy(float))
    return M.metric_values("nmad", s, {}), M.metric_values("nmad", s, {}, idx)


def test_set_controls(config: dict, test_set: str, pred: dict[str, str], processed_dir) -> list[dict]:
    """The rows of one test set; `pred[model]` is each model's prediction file for the test set's dataset."""
    mcfg, ts = config["metrics"], config["test_sets"][test_set]
    label = config["datasets"][ts["dataset"]]["label_column"]
    catalog = ProcessedDataset(processed_dir).catalog
    rows = test_set_rows(config, test_set, processed_dir)
    resamples = max(int(mcfg["bootstrap_resamples"]), 1)  # paired intervals are this table's point
    idx = M.bootstrap_indices(len(rows), resamples, bootstrap_seed(config, test_set))
    alpha = 100 * (1 - mcfg["ci_level"]) / 2
    phot, phot_boot = _nmads(pred[PHOTOMETRY_BASELINE], rows, catalog, label, idx)
    out = []
    for backbone in hybrid_backbones(config):
        for variant in VARIANTS:
            model = variant_model(backbone, variant)
            nmad, boot = _nmads(pred[model], rows, catalog, label, idx)
            ratio = boot / np.where(phot_boot > 0, phot_boot, np.nan)
            lo, hi = np.nanpercentile(ratio, [alpha, 100 - alpha])
            n_lo, n_hi = np.percentile(boot, [alpha, 100 - alpha])
            out.append({"test_set": test_set, "dataset": ts["dataset"], "backbone": backbone, "variant": variant,
                        "model": model, "n": len(rows), "nmad": nmad, "nmad_ci_lo": n_lo, "nmad_ci_hi": n_hi,
                        "photometry_nmad": phot, "R_photometry": nmad / phot if phot else np.nan,
                        "R_ci_lo": lo, "R_ci_hi": hi, "reading": reading(lo, hi)})
    return out


def controls_table(config: dict, pred: dict[tuple[str, str], str], processed: dict[str, str]) -> pd.DataFrame:
    """Every test set's rows; pred[(model, test_set)] a prediction file, processed[test_set] its dataset folder."""
    rows = []
    for ts in config["test_sets"]:
        files = {m: p for (m, t), p in pred.items() if t == ts}
        rows += test_set_controls(config, ts, files, processed[ts])
    return pd.DataFrame(rows, columns=COLUMNS)
