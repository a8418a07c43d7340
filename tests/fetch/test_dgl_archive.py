"""DeepGraviLens from its real archive, against a loopback Zenodo (tests/realformats.ZenodoServer): the record
JSON gives URL, size and published md5 of dataset.zip; it is downloaded once (resumable), locked, and each
dataset extracts its subset folder; reruns make no request; offline runs and other users verify against the
lock; broken and hostile archives stop with a clear error and nothing outside data/raw."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from realformats import (
    ZenodoServer,
    add_raw_member,
    corrupt_member,
    write_dgl_folders,
    write_zip_of,
)

from deepred.fetch.archive_zip import ArchiveError
from deepred.contracts.config import validate_config
from deepred.contracts.processed import DataError
from deepred.data.sources import open_source
from deepred.fetch.dataset import fetch_dataset
from deepred.fetch.download import ChecksumError, DownloadError, DownloadSettings
from deepred.fetch.pins import Lock

ROOT = Path(__file__).resolve().parents[2]
REC = 7860294
FAST = DownloadSettings(retries=2, backoff_s=0.0, timeout_s=10)
SUBSETS = {"des_deep": ("des_deep_data", 14), "des_wide": ("full_data", 7)}


@pytest.fixture(scope="module")
def dgl_tree(tmp_path_factory):
    """The four subset folders in the real layout (2 groups x 3 systems x 8 copies each)."""
    root = tmp_path_factory.mktemp("zenodo_src") / "dataset"
    truth = write_dgl_folders(root, systems_per_group=3)
    return root, truth


def _config(tmp_path: Path, api: str, datasets=SUBSETS) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data_dir"] = str(tmp_path / "data")
    cfg["download"] = {"zenodo_api": api, "retries": 2, "backoff_s": 0.0, "timeout_s": 10}
    cfg["datasets"], cfg["test_sets"] = {}, {}
    for d, (subset, T) in datasets.items():
        cfg["datasets"][d] = {
            "source": {
                "kind": "deepgravilens", "subset": subset,
                "archive": {"zenodo": {"record": REC, "file": "dataset.zip"}},
                "lock": str(tmp_path / "config" / "pins" / "deepgravilens.lock.yaml"),
                "files": [{"name": f"GROUP_{k}_{r}_{T}.npy"} for k in (1, 2) for r in ("ims", "mds")],
            },
            "bands": ["g", "r", "i", "z"], "cutout": 45, "label_column": "z_lens", "scaling": "none",
            "splits": {"train": 0.4, "val": 0.3, "test": 0.3}, "rows_per_shard": 32,
        }
        cfg["test_sets"][d] = {"dataset": d, "table": d}
    return validate_config(cfg)


def _fetch_all(cfg) -> None:
    for d in cfg["datasets"]:
        fetch_dataset(cfg, d, Path(cfg["data_dir"]) / "raw" / d, FAST)


def _outside_raw(tmp_path: Path) -> list[str]:
    """Files written anywhere under tmp_path but data/raw/ (the served archive folder excepted)."""
    return sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
        if p.is_file() and "served" not in p.parts and (tmp_path / "data" / "raw") not in p.parents
        and p.parent != tmp_path / "config" / "pins"
    )


@pytest.mark.parametrize("top", [None, "dataset"])
def test_download_once_lock_extract_and_rerun_without_network(tmp_path, dgl_tree, top):
    src, truth = dgl_tree
    z = write_zip_of(src, tmp_path / "served" / "dataset.zip", top=top)
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z, "models.zip": z})  # the record holds models.zip too; never fetched
        cfg = _config(tmp_path, srv.url + "/api")
        _fetch_all(cfg)
        assert [r["path"] for r in srv.requests] == [f"api/records/{REC}", f"api/records/{REC}/files/dataset.zip/content"]
        lock = Lock(tmp_path / "config" / "pins" / "deepgravilens.lock.yaml")
        zentry = lock.get("dataset.zip")
        assert zentry["md5"] == hashlib.md5(z.read_bytes()).hexdigest()
        assert zentry["sha256"] == hashlib.sha256(z.read_bytes()).hexdigest() and zentry["size"] == z.stat().st_size
        assert zentry["url"].endswith("/files/dataset.zip/content") and f"zenodo record {REC}" in zentry["source"]
        assert len([n for n in lock.names() if n.startswith("dataset.zip!")]) == 8  # 2 subsets x 4 members
        for d, (subset, T) in SUBSETS.items():
            raw = tmp_path / "data" / "raw" / d
            assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == sorted(
                f"GROUP_{k}_{r}_{T}.npy" for k in (1, 2) for r in ("ims", "mds"))  # no light curves
            assert (raw / "GROUP_2_ims_14.npy" if T == 14 else raw / "GROUP_2_ims_7.npy").read_bytes() == (
                src / subset / f"GROUP_2_ims_{T}.npy").read_bytes()
            assert (raw / ".archive.extracted.json").is_file()
        # a rerun (both datasets) touches the network zero times and extracts nothing
        n = len(srv.requests)
        mtimes = sorted(p.stat().st_mtime_ns for p in (tmp_path / "data" / "raw").rglob("GROUP_*"))
        _fetch_all(cfg)
        assert len(srv.requests) == n
        assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "data" / "raw").rglob("GROUP_*")) == mtimes
    assert _outside_raw(tmp_path) == []
    # the reader verifies the members against the lock (pickles included) and groups the 8 copies
    source = open_source(cfg, "des_deep")
    rows = sum(len(c.truth) for c in source.chunks(64))
    assert rows == 2 * 3 * 8 - 16  # group 1's star-only and empty-sky systems dropped (2 x 8 copies)


def test_interrupted_download_resumes_with_range(tmp_path, dgl_tree):
    z = write_zip_of(dgl_tree[0], tmp_path / "served" / "dataset.zip")
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z})
        path = f"api/records/{REC}/files/dataset.zip/content"
        srv.cut(path, z.stat().st_size // 3)
        cfg = _config(tmp_path, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]})
        _fetch_all(cfg)
        gets = [r for r in srv.requests if r["path"] == path]
        assert gets[0]["sent"] == z.stat().st_size // 3
        assert gets[1]["range"] == f"bytes={z.stat().st_size // 3}-" and gets[1]["status"] == 206
    assert Lock(tmp_path / "config" / "pins" / "deepgravilens.lock.yaml").get("dataset.zip")["sha256"] == \
        hashlib.sha256(z.read_bytes()).hexdigest()


def test_published_md5_mismatch_stops_before_anything_is_kept(tmp_path, dgl_tree):
    z = write_zip_of(dgl_tree[0], tmp_path / "served" / "dataset.zip")
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z}, md5={"dataset.zip": "f" * 32})
        cfg = _config(tmp_path, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]})
        with pytest.raises(ChecksumError, match=f"expected {'f' * 32}") as exc:
            _fetch_all(cfg)
    assert hashlib.md5(z.read_bytes()).hexdigest() in str(exc.value)
    assert not (tmp_path / "config" / "pins" / "deepgravilens.lock.yaml").exists()
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file() and not p.name.endswith(".json")]


def _hostile(kind: str, zip_path: Path) -> str:
    if kind == "traversal":
        add_raw_member(zip_path, "../x", b"pwned")
    elif kind == "absolute":
        add_raw_member(zip_path, "/tmp/deepred-evil", b"pwned")
    elif kind == "symlink":
        add_raw_member(zip_path, "des_deep_data/GROUP_9_ims_14.npy", b"/etc/passwd", 0o120777)
    elif kind == "corrupt":
        corrupt_member(zip_path, "des_deep_data/GROUP_2_mds_14.npy")
    return {"traversal": "'..' component", "absolute": "absolute path", "symlink": "symbolic link",
            "corrupt": "GROUP_2_mds_14.npy.*(CRC|corrupt)"}[kind]


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "corrupt"])
def test_hostile_or_broken_archives_stop_with_nothing_outside_data_raw(tmp_path, dgl_tree, kind):
    z = write_zip_of(dgl_tree[0], tmp_path / "served" / "dataset.zip", compression=zipfile.ZIP_STORED)
    why = _hostile(kind, z)
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z})  # published md5 matches: the download passes, extraction refuses
        cfg = _config(tmp_path, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]})
        with pytest.raises(ArchiveError, match=why):
            _fetch_all(cfg)
    assert _outside_raw(tmp_path) == []
    assert not (tmp_path / "x").exists() and not Path("/tmp/deepred-evil").exists()
    raw = tmp_path / "data" / "raw" / "des_deep"
    extracted = [p.name for p in raw.iterdir()] if raw.exists() else []
    if kind == "corrupt":  # members before the corrupt one were verified and kept; the corrupt one never lands
        assert "GROUP_2_mds_14.npy" not in extracted and ".archive.extracted.json" not in extracted
    else:  # refused before anything was written
        assert extracted == []


def test_offline_and_other_users_verify_against_the_committed_lock(tmp_path, dgl_tree):
    z = write_zip_of(dgl_tree[0], tmp_path / "served" / "dataset.zip")
    first = tmp_path / "first"
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z})
        _fetch_all(_config(first, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]}))
    # another user: the committed lock and the archive copied by hand; offline, and no server at all
    other = tmp_path / "other"
    (other / "config" / "pins").mkdir(parents=True)
    shutil.copy(first / "config" / "pins" / "deepgravilens.lock.yaml", other / "config" / "pins")
    placed = other / "data" / "raw" / "_archives" / f"zenodo-{REC}" / "dataset.zip"
    placed.parent.mkdir(parents=True)
    shutil.copy(z, placed)
    cfg = _config(other, "http://127.0.0.1:9/api", {"des_deep": SUBSETS["des_deep"]})
    offline = DownloadSettings(offline=True)
    fetch_dataset(cfg, "des_deep", other / "data" / "raw" / "des_deep", offline)
    assert len(list((other / "data" / "raw" / "des_deep").glob("GROUP_*"))) == 4
    # a different archive under the same name is refused by the lock, naming it
    third = tmp_path / "third"
    shutil.copytree(other / "config", third / "config")
    bad = third / "data" / "raw" / "_archives" / f"zenodo-{REC}" / "dataset.zip"
    bad.parent.mkdir(parents=True)
    write_zip_of(dgl_tree[0], bad, compression=zipfile.ZIP_STORED)
    with pytest.raises(ChecksumError, match="deepgravilens.lock.yaml"):
        fetch_dataset(_config(third, "http://127.0.0.1:9/api", {"des_deep": SUBSETS["des_deep"]}), "des_deep",
                      third / "data" / "raw" / "des_deep", offline)
    # an archive placed by hand that no lock pins is not trusted as found: offline it is refused ...
    fifth = tmp_path / "fifth"
    (fifth / "data" / "raw" / "_archives" / f"zenodo-{REC}").mkdir(parents=True)
    shutil.copy(z, fifth / "data" / "raw" / "_archives" / f"zenodo-{REC}" / "dataset.zip")
    from deepred.fetch.dataset import extract_dataset

    cfg5 = _config(fifth, "http://127.0.0.1:9/api", {"des_deep": SUBSETS["des_deep"]})
    with pytest.raises(DownloadError, match="no entry for 'dataset.zip' and offline mode is on"):
        extract_dataset(cfg5, "des_deep", fifth / "data" / "raw" / "des_deep", offline)
    # ... online it is checked against the record's published md5 (no download) before it is locked
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z}, md5={"dataset.zip": "e" * 32})
        with pytest.raises(ChecksumError, match="e" * 32):
            extract_dataset(_config(fifth, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]}), "des_deep",
                            fifth / "data" / "raw" / "des_deep", FAST)
        assert [r["path"] for r in srv.requests] == [f"api/records/{REC}"]
    assert not (fifth / "config" / "pins" / "deepgravilens.lock.yaml").exists()
    assert not list((fifth / "data" / "raw").glob("des_deep/GROUP_*"))
    # offline without a lock entry: a clear message, no network
    with pytest.raises(DownloadError, match="no entry for 'dataset.zip' and offline mode is on"):
        fetch_dataset(_config(tmp_path / "fourth", "http://127.0.0.1:9/api", {"des_deep": SUBSETS["des_deep"]}),
                      "des_deep", tmp_path / "fourth" / "data" / "raw" / "des_deep", offline)


def test_metadata_pickle_is_verified_against_the_lock_before_unpickling(tmp_path, dgl_tree, monkeypatch):
    z = write_zip_of(dgl_tree[0], tmp_path / "served" / "dataset.zip")
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z})
        cfg = _config(tmp_path, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]})
        _fetch_all(cfg)
    mds = tmp_path / "data" / "raw" / "des_deep" / "GROUP_1_mds_14.npy"
    data = bytearray(mds.read_bytes())
    data[-5] ^= 0x01  # tampered after extraction, same size
    mds.write_bytes(bytes(data))
    import deepred.data.readers.deepgravilens as dglr

    def never(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("unpickled before verification")

    monkeypatch.setattr(dglr, "load_metadata_pickle", never)
    with pytest.raises(DataError, match="the pickle was NOT loaded"):
        open_source(cfg, "des_deep")


def test_pins_cli_update_then_download_then_verify(tmp_path, dgl_tree, capsys):
    from deepred.cli import main

    z = write_zip_of(dgl_tree[0], tmp_path / "served" / "dataset.zip")
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z})
        cfg = _config(tmp_path, srv.url + "/api", {"des_deep": SUBSETS["des_deep"]})
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        lock_path = tmp_path / "config" / "pins" / "deepgravilens.lock.yaml"
        # update: the published size and md5 go into the lock before anything is downloaded
        assert main(["pins", "update", "--configfile", str(tmp_path / "cfg.yaml")]) == 0
        pending = Lock(lock_path).get("dataset.zip")
        assert pending["md5"] == hashlib.md5(z.read_bytes()).hexdigest() and "sha256" not in pending
        n = len(srv.requests)
        _fetch_all(cfg)  # the download uses the lock's URL and md5: no second record request
        assert [r["path"] for r in srv.requests[n:]] == [f"api/records/{REC}/files/dataset.zip/content"]
        assert Lock(lock_path).get("dataset.zip")["sha256"] == hashlib.sha256(z.read_bytes()).hexdigest()
        capsys.readouterr()
        assert main(["pins", "verify", "--configfile", str(tmp_path / "cfg.yaml"), "--rehash"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 5 and all(line.endswith(": ok") for line in lines)  # the zip and 4 members
        # a member damaged in place: verify names it and fails
        ims = tmp_path / "data" / "raw" / "des_deep" / "GROUP_2_ims_14.npy"
        ims.write_bytes(b"\0" * ims.stat().st_size)
        assert main(["pins", "verify", "--configfile", str(tmp_path / "cfg.yaml")]) == 1
        assert "des_deep: dataset.zip!des_deep_data/GROUP_2_ims_14.npy: MISMATCH" in capsys.readouterr().out
        # the record changes (a new dataset.zip): update replaces the entry and forgets the members
        z2 = write_zip_of(dgl_tree[0], tmp_path / "served2" / "dataset.zip", top="dataset")
        srv.publish(REC, {"dataset.zip": z2})
        assert main(["pins", "update", "--configfile", str(tmp_path / "cfg.yaml")]) == 0
        assert "the record changed" in capsys.readouterr().out
        lock = Lock(lock_path)
        assert lock.names() == ["dataset.zip"] and lock.get("dataset.zip")["md5"] == hashlib.md5(z2.read_bytes()).hexdigest()
