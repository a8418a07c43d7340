"""The feature baselines: HOG+SVR and the photometric baseline (sep photometry into gradient-boosted trees)."""
