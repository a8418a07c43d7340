"""DeepRed: redshifts of galaxies, strong lenses and lensed supernovae from survey images."""

__version__ = "0.1.0"
