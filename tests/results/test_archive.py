"""deepred.results.archive: the tarball's manifest verifies, and tampering or missing members are caught."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from deepred.results.archive import ArchiveError, archive_date, build_archive, main, verify_archive


def _files(tmp_path):
    root = tmp_path / "results"
    (root / "tables").mkdir(parents=True)
    (root / "figures").mkdir()
    (root / "tables" / "summary.csv").write_text("metric,value\nnmad,0.03\n")
    (root / "figures" / "improvement.png").write_bytes(b"\x89PNG fake but bytes")
    inp = tmp_path / "model.safetensors"
    inp.write_bytes(b"weights")
    return root, [root / "tables" / "summary.csv", root / "figures" / "improvement.png"], inp


def test_archive_round_trip(tmp_path):
    root, files, inp = _files(tmp_path)
    cfg = {"seed": 1, "metrics": {"archive_date": "2026-02-11"}}
    out = root / "archive" / f"deepred-results-{archive_date(cfg)}.tar.gz"
    assert out.name == "deepred-results-2026-02-11.tar.gz"
    m = build_archive(out, files, root, cfg, inputs=[inp])
    assert set(m["files"]) == {"tables/summary.csv", "figures/improvement.png"}
    assert m["config"] == cfg and m["packages"]["numpy"] != "not installed" and m["code_version"]
    assert m["inputs"] == {str(inp): hashlib.sha256(b"weights").hexdigest()}
    v = verify_archive(out)
    assert v["files"] == m["files"]
    assert main(["verify", str(out)]) == 0
    # same files -> same member bytes (fixed order, times and owners)
    out2 = tmp_path / "again.tar.gz"
    build_archive(out2, files, root, cfg, inputs=[inp])
    with tarfile.open(out, "r:gz") as a, tarfile.open(out2, "r:gz") as b:
        assert a.getnames() == b.getnames() == ["MANIFEST.json", "figures/improvement.png", "tables/summary.csv"]
        assert a.extractfile("tables/summary.csv").read() == b.extractfile("tables/summary.csv").read()


def _rewrite(src, dst, edit):
    """Copy a tar.gz member by member, letting `edit(name, data)` change or drop (None) members."""
    with tarfile.open(src, "r:gz") as a, gzip.open(dst, "wb") as g, tarfile.open(fileobj=g, mode="w") as b:
        for m in a.getmembers():
            data = edit(m.name, a.extractfile(m).read())
            if data is None:
                continue
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            b.addfile(info, io.BytesIO(data))


def test_tampering_is_caught(tmp_path):
    root, files, inp = _files(tmp_path)
    out = tmp_path / "a.tar.gz"
    build_archive(out, files, root, {"seed": 1})
    bad = tmp_path / "bad.tar.gz"
    _rewrite(out, bad, lambda n, d: d.replace(b"0.03", b"0.02") if n == "tables/summary.csv" else d)
    with pytest.raises(ArchiveError, match=r"tables/summary.csv: SHA-256 .* != manifest"):
        verify_archive(bad)
    assert main(["verify", str(bad)]) == 1
    gone = tmp_path / "gone.tar.gz"
    _rewrite(out, gone, lambda n, d: None if n.endswith(".png") else d)
    with pytest.raises(ArchiveError, match="improvement.png: listed in the manifest, absent"):
        verify_archive(gone)
    nomani = tmp_path / "nomani.tar.gz"
    _rewrite(out, nomani, lambda n, d: None if n == "MANIFEST.json" else d)
    with pytest.raises(ArchiveError, match="no MANIFEST.json"):
        verify_archive(nomani)
    extra = tmp_path / "extra.tar.gz"

    def add(n, d):
        if n == "MANIFEST.json":
            m = json.loads(d)
            del m["files"]["tables/summary.csv"]
            return json.dumps(m).encode()
        return d

    _rewrite(out, extra, add)
    with pytest.raises(ArchiveError, match="summary.csv: in the archive but not in the manifest"):
        verify_archive(extra)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ArchiveError, match="not a readable"):
        verify_archive(tmp_path / "junk.tar.gz")
    with pytest.raises(ArchiveError, match="file to archive is missing"):
        build_archive(tmp_path / "x.tar.gz", [root / "nope.csv"], root, {})
