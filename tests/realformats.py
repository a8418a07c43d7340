"""Small files in the exact real formats (DeepGraviLens, SDSS Pasquet form, KiDS FITS cutouts) and a real
loopback HTTP server with Range support, for the download and reader tests and benchmarks/bench_download.py.

Nothing here is mocked: the files are what the archives hold (same layouts, dtypes, pickles and FITS headers,
at small N) and the server is a real http.server on 127.0.0.1 that the code under test talks HTTP to.
"""

from __future__ import annotations

import io
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from deepred.fetch.download import pin_folder

DGL_KEYS = ("PLANE_1-REDSHIFT-g", "PLANE_2-REDSHIFT-g")


# --------------------------------------------------------------------------------------------- HTTP server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        rel = unquote(urlparse(self.path).path).lstrip("/")
        routed = getattr(srv, "routes", {}).get(rel)  # ZenodoServer: API paths mapped to files
        path = routed if routed is not None else (srv.root / rel).resolve()
        rng = self.headers.get("Range")
        entry = {"path": rel, "range": rng, "start": 0, "sent": 0, "status": None}
        srv.requests.append(entry)
        if (routed is None and srv.root not in path.parents) or not path.is_file():
            entry["status"] = 404
            self.send_error(404)
            return
        size = path.stat().st_size
        start = 0
        if rng and srv.honor_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= size:
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        entry["start"] = start
        entry["status"] = 206 if start else 200
        self.send_response(entry["status"])
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        cut = srv.cut_after.pop(rel, None)  # simulate a dropped connection after this many body bytes
        if cut is None:  # zero-copy, as production web servers do
            with open(path, "rb") as fh:
                entry["sent"] = self.connection.sendfile(fh, start, size - start)
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            while block := fh.read(1 << 20):
                if cut is not None and entry["sent"] + len(block) >= cut:
                    block = block[: cut - entry["sent"]]
                    self.wfile.write(block)
                    entry["sent"] += len(block)
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(block)
                entry["sent"] += len(block)


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 in a thread: `with Server(...) as srv:` serves at srv.url and logs every
    request in srv.requests (its handler appends them). Subclasses set their handler and its state."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.requests = []
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict]:
        return self.httpd.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class RangeServer(LoopbackServer):
    """`with RangeServer(folder) as srv:` serves folder at srv.url; srv.requests logs every GET."""

    def __init__(self, root: str | Path, honor_range: bool = True):
        super().__init__(_Handler)
        self.httpd.root = Path(root).resolve()
        self.httpd.cut_after = {}
        self.httpd.honor_range = honor_range

    def cut(self, name: str, after_bytes: int) -> None:
        """The next GET of `name` sends only `after_bytes` body bytes, then drops the connection."""
        self.httpd.cut_after[name] = after_bytes


def file_specs(folder: str | Path, base_url: str | None) -> list[dict]:
    """source.files entries (name, url, size, sha256) for every file under folder, served at base_url."""
    specs = pin_folder(folder)
    for s in specs:
        s["url"] = f"{base_url}/{s['name']}" if base_url else None
    return specs


# ------------------------------------------------------------------------------------- DeepGraviLens
class _OldInt64Index:
    """Stand-in written into the pickle under pandas<2's name pandas.core.indexes.numeric.Int64Index."""


class _OldPandasPickler(pickle.Pickler):
    """Pickles integer indexes the way pandas 1.x did: _new_Index(Int64Index, {'data': ..., 'name': ...})."""

    def reducer_override(self, obj):
        if isinstance(obj, pd.Index) and not isinstance(obj, pd.RangeIndex) and obj.dtype.kind == "i":
            from pandas.core.indexes.base import _new_Index

            return _new_Index, (_OldInt64Index, {"data": np.asarray(obj, dtype=np.int64), "name": obj.name})
        return NotImplemented


def old_pandas_pickle(obj) -> bytes:
    """Protocol-2 pickle bytes that reference pandas 1.x / numpy 1.x class paths (as the archive's files do).

    Protocol 2 names globals as text lines ("c<module>\\n<name>\\n"), so the old locations can be written in."""
    buf = io.BytesIO()
    _OldPandasPickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    data = data.replace(
        f"c{_OldInt64Index.__module__}\n_OldInt64Index\n".encode(), b"cpandas.core.indexes.numeric\nInt64Index\n"
    )
    return data.replace(b"cnumpy._core.", b"cnumpy.core.")


def write_old_pickle_npy(path: Path, obj) -> None:
    """An .npy file holding a 0-d object array, as np.save(path, dict) wrote with numpy 1.x."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(old_pandas_pickle(arr))


def _blob(rng, z, cutout=45, nb=4):
    yy, xx = np.mgrid[:cutout, :cutout] - (cutout - 1) / 2.0
    sigma = 1.5 + 4.0 * (1 - z) / (1 + z)
    prof = np.exp(-0.5 * (xx**2 + yy**2) / sigma**2) * 300 / (1 + z) ** 2
    return (prof[None] * np.linspace(0.7, 1.3, nb)[:, None, None] + rng.normal(0, 1, (nb, cutout, cutout))).astype(
        np.float32
    )


def write_deepgravilens(folder: str | Path, systems_per_group: int = 6, groups=(1, 2), T: int = 14, seed: int = 0):
    """GROUP_{k}_{ims|lcs|mds}_{T}.npy for the given groups; every system stored 8 times as whole blocks
    (rotations 0/90/180/270, each followed by its mirror). Group 1 (no lens) carries placeholders: source
    plane 2.0, star-only lens plane 0.001-0.01 and empty sky 0.1. Returns a truth frame per row."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k in groups:
        n0 = systems_per_group
        z1 = rng.uniform(0.15, 0.75, n0)
        z2 = np.where(k == 1, 2.0, z1 + rng.uniform(0.2, 0.9, n0))
        if k == 1:
            z1[0] = rng.uniform(0.001, 0.01)  # a star-only system
            z1[1] = 0.1  # empty sky
        base = np.stack([_blob(rng, z) for z in z1])  # (n0, 4, 45, 45)
        blocks = []
        for r in range(4):
            rot = np.rot90(base, r, axes=(2, 3))
            blocks += [rot, rot[..., ::-1]]
        ims = np.concatenate(blocks)  # (8 n0, 4, 45, 45), whole blocks
        np.save(folder / f"GROUP_{k}_ims_{T}.npy", ims.reshape(len(ims), -1))  # stored flat, reshaped by readers
        np.save(folder / f"GROUP_{k}_lcs_{T}.npy", rng.normal(20, 1, (len(ims), T, 4)).astype(np.float32))
        # Metadata: one frame per system (T epochs), sliced from a larger frame (so its index is Int64).
        big = pd.DataFrame(
            {
                "MJD": np.tile(np.arange(T, dtype=float), n0),
                DGL_KEYS[0]: np.repeat(z1, T),
                DGL_KEYS[1]: np.repeat(z2, T),
                "PLANE_1-OBJECT_1-MAG_APPARENT-g": np.repeat(rng.uniform(18, 23, n0), T),
                "SEED": np.repeat(rng.integers(0, 2**31, n0), T),
            }
        )
        big.columns = pd.Index(list(big.columns), dtype=object)
        big.index = pd.Index(np.arange(1000 * k, 1000 * k + len(big)), dtype=np.int64)
        slices = [big.iloc[i * T : (i + 1) * T] for i in range(n0)]
        meta = {row: slices[row % n0] for row in range(len(ims))}
        write_old_pickle_npy(folder / f"GROUP_{k}_mds_{T}.npy", meta)
        for row in range(len(ims)):
            rows.append({"group": k, "row": row, "system": row % n0, "z_lens": z1[row % n0], "z_source": z2[row % n0]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- SDSS (Pasquet form)
def write_sdss(folder: str | Path, n: int, seed: int = 0, chunk: int = 2000, labels: str = "labels.csv"):
    """cube.npy (n, 64, 64, 5) float32 u,g,r,i,z channels last, written in chunks (n may be large), and a
    label table with objID, z (spectroscopic) and EBV."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.01, 0.35, n)
    cube = np.lib.format.open_memmap(folder / "cube.npy", mode="w+", dtype=np.float32, shape=(n, 64, 64, 5))
    yy, xx = np.mgrid[:64, :64] - 31.5
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sig = 2.0 + 6.0 * (0.4 - z[s:e])
        prof = np.exp(-0.5 * (xx**2 + yy**2)[None] / sig[:, None, None] ** 2) * 50
        block = prof[..., None] * np.linspace(0.5, 1.5, 5) + rng.normal(0, 0.5, (e - s, 64, 64, 5))
        cube[s:e] = block.astype(np.float32)
    cube.flush()
    del cube
    table = pd.DataFrame({"objID": 1237650000000000000 + np.arange(n), "z": z, "EBV": rng.uniform(0.0, 0.1, n)})
    if labels.endswith(".csv"):
        table.to_csv(folder / labels, index=False)
    else:
        table.to_parquet(folder / labels, index=False)
    return table


# ------------------------------------------------------------------------------------- KiDS
def write_kids(folder: str | Path, n: int, bands=("u", "g", "r", "i"), cutout: int = 45, seed: int = 0,
               catalog: str = "candidates.fits"):
    """cutouts/{ID}_{band}.fits (FILTER keyword like KiDS' 'r_SDSS', WCS scale 0.2"/px) and a catalogue
    (FITS table or CSV) with ID, RA, DEC, z and grade (A/B/C)."""
    from astropy.io import fits
    from astropy.table import Table

    folder = Path(folder)
    (folder / "cutouts").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"KIDS_J{1000 + i:04d}" for i in range(n)]
    z = rng.uniform(0.1, 0.8, n)
    for oid, zi in zip(ids, z):
        img = _blob(rng, zi, cutout, len(bands))
        for b, plane in zip(bands, img):
            hdu = fits.PrimaryHDU(plane)
            hdu.header["FILTER"] = f"{b}_SDSS"
            hdu.header["CD1_1"] = -0.2 / 3600
            hdu.header["CD2_2"] = 0.2 / 3600
            hdu.header["OBJECT"] = oid
            hdu.writeto(folder / "cutouts" / f"{oid}_{b}.fits", overwrite=True)
    grades = np.array(["A", "B", "C"])[np.arange(n) % 3]
    table = pd.DataFrame({"ID": ids, "RA": rng.uniform(150, 160, n), "DEC": rng.uniform(-3, 3, n), "z": z, "grade": grades})
    if catalog.endswith(".fits"):
        Table.from_pandas(table).write(folder / catalog, overwrite=True)
    else:
        table.to_csv(folder / catalog, index=False)
    return table


# ------------------------------------------------------------------------------------- DeepGraviLens dataset.zip
# The Zenodo record 7860294 serves the data as one `dataset.zip`; the authors' README says its content goes into a
# `dataset/` folder and their loader (networks/data_utils.py) reads dataset/{subset}/GROUP_{k}_{ims|lcs|mds}_{T}.npy.
DGL_SUBSETS = {"des_deep_data": 14, "full_data": 7, "high_cad_data": 14, "lsst_data": 14}


def write_dgl_folders(root: str | Path, systems_per_group: int = 3, groups=(1, 2), subsets=None) -> dict:
    """The four subset folders under root, in the real layout (write_deepgravilens per subset: 8 rotated /
    mirrored copies per system, older-pandas metadata pickles). Returns subset -> truth frame."""
    root = Path(root)
    out = {}
    for i, (subset, T) in enumerate((subsets or DGL_SUBSETS).items()):
        out[subset] = write_deepgravilens(root / subset, systems_per_group=systems_per_group, groups=groups, T=T, seed=i)
    return out


def write_zip_of(folder: str | Path, zip_path: str | Path, top: str | None = None, compression=None) -> Path:
    """Zip every file under folder (member names relative to it, optionally under one top-level folder)."""
    import zipfile

    folder, zip_path = Path(folder), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    comp = zipfile.ZIP_DEFLATED if compression is None else compression
    with zipfile.ZipFile(zip_path, "w", compression=comp) as zf:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = f.relative_to(folder).as_posix()
            zf.write(f, f"{top}/{rel}" if top else rel)
    return zip_path


def add_raw_member(zip_path: str | Path, name: str, data: bytes = b"x", mode: int | None = None) -> None:
    """Append a member with an arbitrary (possibly malicious) name and Unix mode, as a hostile archive would."""
    import zipfile

    info = zipfile.ZipInfo(name)
    info.create_system = 3
    if mode is not None:
        info.external_attr = mode << 16
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr(info, data)


def corrupt_member(zip_path: str | Path, name: str) -> None:
    """Flip one byte inside a STORED member's data (its CRC-32 no longer matches; the directory is intact)."""
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
        assert info.compress_type == zipfile.ZIP_STORED, "corrupt_member needs a stored member"
    raw = bytearray(Path(zip_path).read_bytes())
    # local header: 30 bytes + name + extra, then the data
    off = info.header_offset
    n_name = int.from_bytes(raw[off + 26 : off + 28], "little")
    n_extra = int.from_bytes(raw[off + 28 : off + 30], "little")
    pos = off + 30 + n_name + n_extra + info.file_size // 2
    raw[pos] ^= 0xFF
    Path(zip_path).write_bytes(bytes(raw))


def zenodo_record_json(record: int, files: dict[str, Path], base_url: str) -> dict:
    """A record as Zenodo's REST API returns it (GET /api/records/<id>), reduced to the fields used:
    files[] with key, size, checksum "md5:<hex>" and links.self (the download URL .../files/<key>/content)."""
    import hashlib

    entries = []
    for key, path in files.items():
        data_md5 = hashlib.md5(Path(path).read_bytes()).hexdigest()
        entries.append({
            "id": f"file-{key}", "key": key, "size": Path(path).stat().st_size, "checksum": f"md5:{data_md5}",
            "links": {"self": f"{base_url}/api/records/{record}/files/{key}/content"},
        })
    return {"id": record, "recid": str(record), "metadata": {"title": "DeepGraviLens (test copy)"}, "files": entries}


class ZenodoServer(RangeServer):
    """A loopback Zenodo: GET /api/records/<id> serves the record JSON, GET /api/records/<id>/files/<key>/content
    the file (with Range support); every request is logged in .requests. `publish(record, files, md5=...)`
    (re)writes the record; a wrong md5 for a key simulates a record whose published checksum does not match."""

    def __init__(self, root: str | Path, honor_range: bool = True):
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root, honor_range)
        self.httpd.routes = {}

    def publish(self, record: int, files: dict[str, Path], md5: dict[str, str] | None = None) -> dict:
        import json

        rec = zenodo_record_json(record, files, self.url)
        for e in rec["files"]:
            if md5 and e["key"] in md5:
                e["checksum"] = f"md5:{md5[e['key']]}"
        jpath = self.httpd.root / f"record-{record}.json"
        jpath.write_text(json.dumps(rec))
        self.httpd.routes[f"api/records/{record}"] = jpath
        for key, path in files.items():
            self.httpd.routes[f"api/records/{record}/files/{key}/content"] = Path(path).resolve()
        return rec
