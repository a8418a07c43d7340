"""deepred.fetch.download against a real loopback HTTP server (tests/realformats.RangeServer): verified fetch,
resume with Range after an interrupted transfer, restart when Range is ignored, checksum mismatch, HTTP errors,
offline mode with no server, and the manifest path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from realformats import RangeServer, file_specs

from deepred.fetch.download import (
    ChecksumError,
    DownloadError,
    DownloadSettings,
    FileSpec,
    fetch,
    fetch_manifest,
    pin_folder,
    verify_file,
)

FAST = DownloadSettings(retries=3, backoff_s=0.0, timeout_s=10)


@pytest.fixture
def served(tmp_path):
    """A 3 MB random file in a served folder; yields (server, spec, raw folder)."""
    src = tmp_path / "archive"
    src.mkdir()
    (src / "big.bin").write_bytes(np.random.default_rng(1).bytes(3_000_000))
    with RangeServer(src) as srv:
        spec = FileSpec.from_config(file_specs(src, srv.url)[0])
        yield srv, spec, tmp_path / "raw"


def test_fetch_verifies_renames_and_skips_when_present(served, caplog):
    srv, spec, raw = served
    caplog.set_level("INFO", logger="deepred.fetch.download")
    dest = fetch(spec, raw / spec.name, DownloadSettings(retries=3, backoff_s=0.0, timeout_s=10, progress_min_mb=1))
    assert any("100.0% of 3.0 MB" in r.getMessage() for r in caplog.records)  # progress for large files
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == spec.sha256
    assert not (raw / "big.bin.part").exists()
    assert [r["status"] for r in srv.requests] == [200]
    fetch(spec, dest, FAST)  # present and verified: no second request
    assert len(srv.requests) == 1


def test_interrupted_transfer_resumes_with_range(served):
    srv, spec, raw = served
    srv.cut("big.bin", 1_234_567)
    dest = fetch(spec, raw / spec.name, FAST)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == spec.sha256
    first, second = srv.requests
    assert first["range"] is None and first["sent"] == 1_234_567
    assert second["range"] == "bytes=1234567-" and second["status"] == 206
    assert second["sent"] == spec.size - 1_234_567  # only the missing bytes were sent again


def test_partial_file_survives_a_failed_run_and_next_run_resumes(served):
    srv, spec, raw = served
    srv.cut("big.bin", 1_000_000)
    with pytest.raises(DownloadError, match="partial file .* is kept"):
        fetch(spec, raw / spec.name, DownloadSettings(retries=0, timeout_s=10))
    assert (raw / "big.bin.part").stat().st_size == 1_000_000
    assert not (raw / "big.bin").exists()
    fetch(spec, raw / spec.name, FAST)
    assert srv.requests[-1]["range"] == "bytes=1000000-"
    assert verify_file(raw / "big.bin", spec, use_stamp=False)["sha256"] == spec.sha256


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    src = tmp_path / "archive"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(500_000))
    with RangeServer(src, honor_range=False) as srv:
        spec = FileSpec.from_config(file_specs(src, srv.url)[0])
        srv.cut("f.bin", 200_000)
        dest = fetch(spec, tmp_path / "raw" / "f.bin", FAST)
        assert dest.read_bytes() == (src / "f.bin").read_bytes()
        assert srv.requests[1]["status"] == 200 and srv.requests[1]["sent"] == 500_000


def test_checksum_mismatch_deletes_partial_and_names_both_sums(served):
    srv, spec, raw = served
    wrong = "0" * 64
    bad = FileSpec(name=spec.name, url=spec.url, size=spec.size, sha256=wrong)
    with pytest.raises(ChecksumError) as exc:
        fetch(bad, raw / spec.name, FAST)
    msg = str(exc.value)
    assert wrong in msg and spec.sha256 in msg and "deleted" in msg
    assert not (raw / "big.bin.part").exists() and not (raw / "big.bin").exists()


def test_size_mismatch_is_reported(served):
    srv, spec, raw = served
    with pytest.raises(ChecksumError, match="size 3000000 bytes, expected 2999999"):
        fetch(FileSpec(name=spec.name, url=spec.url, size=spec.size - 1, sha256=spec.sha256), raw / "x.bin", FAST)


def test_http_404_fails_at_once_without_retries(served):
    srv, spec, raw = served
    missing = FileSpec(name="nope.bin", url=spec.url.replace("big.bin", "nope.bin"), sha256=spec.sha256)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(missing, raw / "nope.bin", DownloadSettings(retries=5, backoff_s=5.0))
    assert len(srv.requests) == 1


def test_unpinned_file_is_refused(served):
    srv, spec, raw = served
    with pytest.raises(DownloadError, match="pins no sha256/md5"):
        fetch(FileSpec(name=spec.name, url=spec.url), raw / spec.name, FAST)


def test_md5_only_spec_as_zenodo_publishes(served):
    srv, spec, raw = served
    md5 = hashlib.md5((srv.httpd.root / "big.bin").read_bytes()).hexdigest()
    fetch(FileSpec(name=spec.name, url=spec.url, size=spec.size, md5=md5), raw / spec.name, FAST)
    with pytest.raises(ChecksumError, match=f"md5 {md5}, expected {'f' * 32}"):
        verify_file(raw / spec.name, FileSpec(name=spec.name, md5="f" * 32), use_stamp=False)


def test_offline_mode_verifies_placed_files_without_network(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    data = os.urandom(10_000)
    (raw / "placed.bin").write_bytes(data)
    spec = FileSpec(
        name="placed.bin", url="http://127.0.0.1:9/never", size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    offline = DownloadSettings(offline=True)
    assert fetch(spec, raw / "placed.bin", offline) == raw / "placed.bin"  # port 9 is never contacted
    with pytest.raises(DownloadError, match="offline mode is on"):
        fetch(FileSpec(name="absent.bin", url=spec.url, sha256=spec.sha256), raw / "absent.bin", offline)
    (raw / "placed.bin").write_bytes(data[:-1] + b"\0")  # corrupted after placement (same size)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch(spec, raw / "placed.bin", offline)
    monkeypatch.setenv("DEEPRED_OFFLINE", "1")
    assert DownloadSettings.from_config({"download": {"offline": False}}).offline


def test_verified_stamp_is_ignored_after_the_file_changes(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"x" * 1000)
    spec = FileSpec(name="a.bin", sha256=hashlib.sha256(b"x" * 1000).hexdigest())
    verify_file(p, spec)
    assert (tmp_path / ".a.bin.verified.json").exists()
    p.write_bytes(b"y" * 1000)
    os.utime(p, ns=(1, 1))  # a different mtime invalidates the stamp
    with pytest.raises(ChecksumError):
        verify_file(p, spec)


def test_manifest_fetches_every_listed_file(tmp_path):
    src = tmp_path / "archive"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        (src / "sub" / f"c{i}.fits").write_bytes(os.urandom(5000 + i))
    with RangeServer(src) as srv:
        rows = file_specs(src, srv.url)
        manifest = tmp_path / "raw" / "manifest.csv"
        manifest.parent.mkdir()
        manifest.write_text("name,url,size,sha256\n" + "".join(f"{r['name']},{r['url']},{r['size']},{r['sha256']}\n" for r in rows))
        done = tmp_path / "raw" / ".manifest.verified"
        paths = fetch_manifest(manifest, done, FAST)
    assert [p.read_bytes() for p in paths] == [(src / r["name"]).read_bytes() for r in rows]
    assert json.loads(done.read_text())["files"] == [r["name"] for r in rows]
    assert [s["name"] for s in pin_folder(tmp_path / "raw")] == ["manifest.csv"] + [r["name"] for r in rows]


def test_cli_fetches_nothing_offline_and_reports_missing_files(tmp_path, capsys):
    """`python -m deepred.fetch.download --offline` on a login-node-prepared folder: verifies, exit 0; missing: exit 1."""
    import yaml

    from deepred.fetch.__main__ import main

    raw = tmp_path / "data" / "raw" / "sdss"
    raw.mkdir(parents=True)
    (raw / "cube.npy").write_bytes(b"a" * 100)
    (raw / "labels.csv").write_bytes(b"objID,z,EBV\n")
    assert main(["pin", str(raw)]) == 0
    pinned = yaml.safe_load(capsys.readouterr().out)
    assert [p["name"] for p in pinned] == ["cube.npy", "labels.csv"]
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
    cfg["data_dir"] = str(tmp_path / "data")
    cfg["datasets"] = {
        "sdss": {"source": {"kind": "sdss", "cube": "cube.npy", "labels": "labels.csv", "files": pinned},
                 "bands": ["u", "g", "r", "i", "z"], "cutout": 64, "label_column": "z_lens"}
    }
    cfg["test_sets"] = {"sdss": {"dataset": "sdss", "table": "sdss"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--configfile", str(tmp_path / "c.yaml"), "--offline"]) == 0
    (raw / "labels.csv").unlink()
    assert main(["--configfile", str(tmp_path / "c.yaml"), "--offline"]) == 1
