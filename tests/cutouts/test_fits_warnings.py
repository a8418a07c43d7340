"""Only astropy's truncation warning makes a FITS file unreadable; a harmless header warning does not (issue 28).

The null-padded header is a real astropy.io.fits warning on read ("Header block contains null bytes instead of
spaces for padding", astropy/io/fits/header.py), the kind a real survey file can carry.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from deepred.contracts.raw import truncation_is_fatal
from deepred.cutouts.base import ProviderError, read_fits_hdu


def _null_padded(path):
    fits.PrimaryHDU(np.arange(64, dtype=np.float32).reshape(8, 8)).writeto(path)
    raw = bytearray(path.read_bytes())
    i = raw.find(b"END" + b" " * 77) + 80
    while i < 2880 and raw[i:i + 1] == b" ":
        raw[i] = 0
        i += 1
    path.write_bytes(bytes(raw))
    return path


def test_a_harmless_header_warning_keeps_the_file(tmp_path):
    path = _null_padded(tmp_path / "nullpad.fits")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with fits.open(path) as hdul:
            hdul[0].data  # noqa: B018 (the warning is real on this file)
    assert any("null bytes" in str(w.message) for w in seen)
    data, _ = read_fits_hdu(path, memmap=False)
    assert data.shape == (8, 8) and float(data[7, 7]) == 63.0


def test_a_truncated_file_is_still_refused(tmp_path):
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(path)
    path.write_bytes(path.read_bytes()[:2980])
    with pytest.raises(ProviderError, match="unreadable or truncated FITS"):
        read_fits_hdu(path, memmap=False)


def test_only_the_truncation_warning_raises():
    with truncation_is_fatal():
        warnings.warn("Header block contains null bytes instead of spaces", AstropyUserWarning)
        with pytest.raises(AstropyUserWarning):
            warnings.warn("File may have been truncated: actual file length (1) is smaller", AstropyUserWarning)
