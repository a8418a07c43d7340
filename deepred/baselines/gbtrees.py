"""Gradient-boosted regression trees as plain arrays: fitted with scikit-learn's HistGradientBoostingRegressor, then
kept, saved and evaluated without it (no pickle, like HOG+SVR's support vectors).

A fitted HistGradientBoostingRegressor predicts the baseline plus, tree after tree, the value of the leaf each row
reaches, going left where `x[feature] <= num_threshold` (and where x is NaN and `missing_go_to_left`); its trees'
nodes are structured arrays (PREDICTOR_RECORD_DTYPE) in `_predictors`. That is sklearn 1.9's
ensemble/_hist_gradient_boosting/_predictor.pyx (_predict_one_from_raw_data) and gradient_boosting.py
(_raw_predict: zeros + baseline, then `+=` per iteration); `TreeEnsemble.predict` does the same additions in the
same order, so its numbers equal sklearn's bit for bit (tests/baselines/test_photometry.py checks it). Leaf values already
carry the learning rate. Only numerical splits are supported (no categorical features).

`fit_tree_grid` fits one regressor per grid point on the training rows (one OpenMP thread: the same numbers on
every machine), scores every boosting stage on the validation rows by NMAD, and keeps the best grid point truncated
at its best stage: the number of trees is chosen on validation without a refit.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np

from deepred.core.metrics import nmad

log = logging.getLogger("deepred.baselines.gbtrees")

_NODE_FIELDS = ("feature", "threshold", "left", "right", "is_leaf", "missing_left", "value")
ARRAYS = _NODE_FIELDS + ("tree_offsets", "baseline")  # what save_arrays writes and from_arrays reads


class TreeError(ValueError):
    """A tree file or fitted model that cannot be used; the message says what is wrong."""


@dataclass
class TreeEnsemble:
    """Every node of every tree, concatenated; left/right are indices into the concatenation."""

    feature: np.ndarray  # int64 (n_nodes,)
    threshold: np.ndarray  # float64
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    is_leaf: np.ndarray  # bool
    missing_left: np.ndarray  # bool
    value: np.ndarray  # float64
    tree_offsets: np.ndarray  # int64 (n_trees,): each tree's root
    baseline: float
    n_features: int

    @classmethod
    def from_sklearn(cls, model, n_iter: int) -> "TreeEnsemble":
        """The first n_iter boosting iterations of a fitted single-output HistGradientBoostingRegressor."""
        if model.n_trees_per_iteration_ != 1 or model._loss.link.__class__.__name__ != "IdentityLink":
            raise TreeError("only single-output regressors with an identity link are supported")
        nodes = [predictors[0].nodes for predictors in model._predictors[:n_iter]]
        if any(n["is_categorical"].any() for n in nodes):
            raise TreeError("categorical splits are not supported")
        offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]]).astype(np.int64)
        cat = np.concatenate(nodes)
        shift = np.repeat(offsets, [len(n) for n in nodes])
        return cls(
            feature=cat["feature_idx"].astype(np.int64), threshold=cat["num_threshold"].astype(np.float64),
            left=cat["left"].astype(np.int64) + shift, right=cat["right"].astype(np.int64) + shift,
            is_leaf=cat["is_leaf"].astype(bool), missing_left=cat["missing_go_to_left"].astype(bool),
            value=cat["value"].astype(np.float64), tree_offsets=offsets,
            baseline=float(np.asarray(model._baseline_prediction).ravel()[0]), n_features=int(model.n_features_in_),
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, n_features) -> (N,) float64, as sklearn's predict (see the module docstring)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise TreeError(f"features of shape {x.shape}; the trees take (N, {self.n_features})")
        node = np.broadcast_to(self.tree_offsets, (len(x), len(self.tree_offsets))).copy()
        for _ in range(len(self.value)):  # one level per pass; a path is never longer than the node count
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            v = np.take_along_axis(x, self.feature[node], axis=1)
            go_left = np.where(np.isnan(v), self.missing_left[node], v <= self.threshold[node])
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        values = self.value[node]
        out = np.zeros(len(x)) + self.baseline
        for t in range(values.shape[1]):  # tree after tree, as sklearn adds them
            out += values[:, t]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in _NODE_FIELDS}
        out.update(is_leaf=self.is_leaf.astype(np.uint8), missing_left=self.missing_left.astype(np.uint8),
                   tree_offsets=self.tree_offsets, baseline=np.array([self.baseline]))
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], n_features: int, where) -> "TreeEnsemble":
        missing = [k for k in ARRAYS if k not in a]
        if missing:
            raise TreeError(f"{where}: arrays {missing} missing")
        n = len(a["value"])
        bad = [k for k in _NODE_FIELDS if len(a[k]) != n]
        links = np.concatenate([a["left"], a["right"], a["tree_offsets"]])
        if bad or (n and (links.min() < 0 or links.max() >= n)) or a["feature"].max(initial=0) >= n_features:
            raise TreeError(f"{where}: inconsistent tree arrays (lengths {bad or 'ok'}, links or features out of "
                            "range)")
        return cls(feature=a["feature"].astype(np.int64), threshold=a["threshold"].astype(np.float64),
                   left=a["left"].astype(np.int64), right=a["right"].astype(np.int64),
                   is_leaf=a["is_leaf"].astype(bool), missing_left=a["missing_left"].astype(bool),
                   value=a["value"].astype(np.float64),
                   tree_offsets=a["tree_offsets"].astype(np.int64), baseline=float(a["baseline"][0]),
                   n_features=int(n_features))


def _regressor(max_iter: int, lr, leaves, min_leaf, cfg: dict, seed: int):
    """One grid point's regressor (no early stopping: the tree count is chosen on validation, or given)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=max_iter, learning_rate=float(lr), max_leaf_nodes=int(leaves), min_samples_leaf=int(min_leaf),
        l2_regularization=float(cfg["l2_regularization"]), early_stopping=False, random_state=seed)


def fit_tree_grid(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cfg: dict,
                  seed: int) -> tuple[TreeEnsemble, dict]:
    """The grid point and stage with the lowest validation NMAD: (trees, {"chosen", "grid"})."""
    from threadpoolctl import threadpool_limits

    if len(x_train) < 2 or len(x_val) < 1:
        raise TreeError(f"gradient boosting needs >= 2 training and >= 1 validation rows, got {len(x_train)}, "
                        f"{len(x_val)}")
    grid, best = [], None
    for lr, leaves, min_leaf in itertools.product(cfg["learning_rate"], cfg["max_leaf_nodes"], cfg["min_samples_leaf"]):
        t0 = time.perf_counter()
        gbr = _regressor(int(cfg["max_iter"]), lr, leaves, min_leaf, cfg, seed)
        with threadpool_limits(limits=1, user_api="openmp"):
            gbr.fit(x_train, y_train)
            scores = [nmad(p, y_val) for p in gbr.staged_predict(x_val)]
        stage = int(np.argmin(scores))  # first best stage: the fewest trees among ties
        grid.append({"learning_rate": float(lr), "max_leaf_nodes": int(leaves), "min_samples_leaf": int(min_leaf),
                     "n_trees": stage + 1, "val_nmad": float(scores[stage]),
                     "fit_s": round(time.perf_counter() - t0, 3)})
        log.info("gradient boosting learning_rate=%g max_leaf_nodes=%d min_samples_leaf=%d: validation NMAD %.4f at "
                 "%d trees", lr, leaves, min_leaf, scores[stage], stage + 1)
        if best is None or scores[stage] < best[0]:
            best = (scores[stage], gbr, grid[-1])
    _, gbr, chosen = best
    return TreeEnsemble.from_sklearn(gbr, chosen["n_trees"]), {"chosen": chosen, "grid": grid}


def out_of_fold(x: np.ndarray, y: np.ndarray, chosen: dict, cfg: dict, seed: int, folds: int) -> np.ndarray:
    """Predictions for the rows of (x, y), each from trees fitted without it: `folds` seeded folds, each fitted at
    the chosen grid point and tree count (no grid search). What a model stacked on these trees may train on: their
    in-sample predictions are far better than they are on rows they never saw."""
    from threadpoolctl import threadpool_limits

    if len(x) < folds or folds < 2:
        raise TreeError(f"out-of-fold predictions need >= 2 folds and as many rows, got {folds} folds, {len(x)} rows")
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    out = np.empty(len(x))
    for k in range(folds):
        gbr = _regressor(int(chosen["n_trees"]), chosen["learning_rate"], chosen["max_leaf_nodes"],
                         chosen["min_samples_leaf"], cfg, seed)
        with threadpool_limits(limits=1, user_api="openmp"):
            gbr.fit(x[fold != k], y[fold != k])
            out[fold == k] = gbr.predict(x[fold == k])
    return out
