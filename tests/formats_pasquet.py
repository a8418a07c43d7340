"""A small `sdss.npz` in the layout of the Pasquet et al. (2019, A&A 621, A26) SDSS file as distributed.

What the real file is, and where that comes from (this project cannot download it; see also the reader,
deepred/data/readers/sdss_npz.py, which checks each point at run time):

- One NumPy .npz with members `cube` and `labels`. `cube`: float32, shape (659857, 64, 64, 5), 64x64 pixel
  u,g,r,i,z images, channels last. `labels`: a NumPy record array of 659857 rows (one per galaxy) and 64 columns.
  Source: biprateep/encapZulate-1, docs/data.md (the download page of Dey et al. 2021, which links the data at
  https://deepdip.iap.fr/#item/60ef1e05be2b8ebb048d951d).
- How its users load it: `data = np.load("sdss.npz"); cube = data["cube"]; labels = data["labels"]`, then the
  fields `labels['dered_petro_r']`, `labels['z']`, `labels["specObjID"]` (biprateep/encapZulate-1,
  src/encapzulate/scripts/make_binned_data.py, which cuts dered_petro_r < 17.8); `data_file['labels']['z']`,
  `data_file['labels']['EBV']` (a third-party training script loading `.../deepdip/sdss.npz`); fields `z`,
  `dered_petro_r`, `primtarget`, `ra`, `dec` with the cut z <= 0.4, dered_petro_r <= 17.8, primtarget >= 64
  (a third-party script "produces the dataset used in Pasquet et al. given the raw dataset"); keys `z`, `EBV`,
  `dered_petro_r` and the cut z <= 0.4, dered_petro_r <= 17.8 in umesh-timalsina/deepforge-redshift,
  deepforge_redshift/data_loaders.py (which memory-maps `cube.npy` and `labels.npy`, the npz's members unzipped).
- The selection query said to be the authors' (umesh-timalsina/redshift, redshift/preprocessing/spec_query.sql,
  547,199 rows on DR12) selects specObjID, bestObjID, objID, ra, dec, dered_petro_r = petroMag_r - extinction_r,
  zphot, e_bv_sfd, primtarget, ... with z <= 0.4 and dered_petro_r <= 17.8.

NOT confirmed, so mirrored here only as assumptions the reader does not rely on: that `labels` has `objID`
(the reader falls back to specObjID, then the row index); the fields' dtypes (float64 / int64 here); whether
the members are stored (np.savez, assumed, as `stored`) or deflated (np.savez_compressed: `compressed=True`);
the other ~55 of the 64 fields (a few stand-ins here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Fields of `labels` written here: the confirmed ones first, then stand-ins for the rest.
LABEL_FIELDS = [("specObjID", "<i8"), ("objID", "<i8"), ("ra", "<f8"), ("dec", "<f8"), ("z", "<f8"),
                ("zErr", "<f8"), ("EBV", "<f8"), ("dered_petro_r", "<f8"), ("primtarget", "<i8"), ("zphot", "<f8")]
Z_MAX, R_MAX = 0.4, 17.8  # the paper's selection: z < 0.4, dereddened Petrosian r <= 17.8


def pasquet_labels(n: int, seed: int = 0, drop=()) -> np.ndarray:
    """The label record array: about half the rows fail the selection (z or r), a few sit on its edges."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=[f for f in LABEL_FIELDS if f[0] not in drop])
    cols = {
        "specObjID": 299489676975171584 + 8192 * np.arange(n), "objID": 1237645876861272165 + np.arange(n),
        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-10, 70, n), "z": rng.uniform(0.01, 0.6, n),
        "zErr": rng.uniform(1e-5, 1e-4, n), "EBV": rng.uniform(0.0, 0.1, n),
        "dered_petro_r": rng.uniform(14.0, 19.0, n), "primtarget": rng.choice([64, 96, 1], n), "zphot": rng.uniform(0, 0.5, n),
    }
    edges = {1: (Z_MAX, 16.0), 2: (0.2, R_MAX), 3: (0.2, np.nan), 4: (np.nan, 16.0)}  # out, in, out, out
    for i, (z, r) in edges.items():
        if i < n:
            cols["z"][i], cols["dered_petro_r"][i] = z, r
    for name in labels.dtype.names:
        labels[name] = cols[name]
    return labels


def pasquet_cube(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64, 64, 5) float32 u,g,r,i,z channels last: sky noise plus a blob whose flux encodes the row index."""
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[:64, :64] - 31.5
    blob = np.exp(-0.5 * (xx**2 + yy**2) / 9.0)
    cube = rng.normal(0.0, 0.5, (n, 64, 64, 5)).astype(np.float32)
    cube += (blob[None, :, :, None] * (10.0 + np.arange(n))[:, None, None, None] * np.linspace(0.5, 1.5, 5)).astype(np.float32)
    return cube


def write_pasquet_npz(path: str | Path, n: int = 40, seed: int = 0, compressed: bool = False, drop=(),
                      cube: np.ndarray | None = None, labels: np.ndarray | None = None):
    """Write `path` (an sdss.npz: members cube and labels) as np.savez (stored) or np.savez_compressed
    (deflated); return (cube, labels) for the assertions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cube = pasquet_cube(n, seed) if cube is None else cube
    labels = pasquet_labels(len(cube), seed, drop) if labels is None else labels
    (np.savez_compressed if compressed else np.savez)(path, cube=cube, labels=labels)
    return cube, labels


def paper_rows(labels: np.ndarray) -> np.ndarray:
    """The rows the paper's selection keeps, computed independently of the reader."""
    z, r = labels["z"], labels["dered_petro_r"]
    return np.array([i for i in range(len(labels)) if z[i] < Z_MAX and r[i] <= R_MAX], dtype=np.int64)
