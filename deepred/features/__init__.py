"""Features measured on the cutouts, shared by every model that reads them (photometry.py: the measurement;
table.py: the per-dataset features file, contracts.processed.FEATURES_FILE)."""
