"""Redshift PDFs: calibration on the validation split, the calibration table's stages, qp ensembles."""
