"""Torch-free basics every stage uses: atomic io, logs, seeds, the config schema, model names, metrics, provenance,
the package's import graph."""
