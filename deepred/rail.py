"""`from deepred.rail import DeepRedEstimator` keeps working: the estimator lives in deepred.predict.rail."""

from deepred.predict.rail import DeepRedEstimator  # noqa: F401

__all__ = ["DeepRedEstimator"]
