"""Catalogue-driven cutouts from the surveys' own files: SDSS frames, KiDS tiles, cutout services.

See deepred.cutouts.source (the pipeline), deepred.cutouts.providers (where the pixels live),
deepred.cutouts.resample (the target grid) and docs/real-data-surveys.md.
"""

from deepred.cutouts.providers import PROVIDERS, ImageRequest, Provider, ProviderError
from deepred.cutouts.source import build_cutouts, fetch_images, read_cutouts

__all__ = ["PROVIDERS", "ImageRequest", "Provider", "ProviderError", "build_cutouts", "fetch_images", "read_cutouts"]
