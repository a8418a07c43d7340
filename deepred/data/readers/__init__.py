"""Readers of the real survey formats; each returns a deepred.contracts.raw.RawSource (no masks: real
sources do not know footprints). They verify every file against its pinned checksum before reading it."""

from deepred.data.readers.deepgravilens import read_deepgravilens
from deepred.data.readers.kids import read_kids
from deepred.data.readers.sdss import read_sdss

__all__ = ["read_deepgravilens", "read_kids", "read_sdss"]
