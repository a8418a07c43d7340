"""deepred.fetch.archive_zip: only the needed members, streamed, CRC and size checked, hostile archives refused, nothing
written outside the destination, members verified against (and recorded in) the lock, no re-extraction."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path

import pytest
from realformats import add_raw_member, corrupt_member, write_dgl_folders, write_zip_of

from deepred.fetch.archive_zip import ArchiveError, extract_members, lock_key
from deepred.fetch.download import ChecksumError
from deepred.fetch.pins import Lock

NAMES = ["GROUP_1_ims_14.npy", "GROUP_1_mds_14.npy", "GROUP_2_ims_14.npy", "GROUP_2_mds_14.npy"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dgl") / "dataset"
    write_dgl_folders(root, systems_per_group=2, subsets={"des_deep_data": 14, "full_data": 7})
    return root


def _files_outside(tmp_path: Path, dest: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents and p.suffix != ".zip"
            and "dataset" not in p.parts]


@pytest.mark.parametrize("top", [None, "dataset"])
def test_extracts_only_needed_members_with_or_without_a_top_folder(tmp_path, folders, top):
    z = write_zip_of(folders, tmp_path / "dataset.zip", top=top)
    lock = Lock(tmp_path / "pins" / "dgl.lock.yaml")
    dest = tmp_path / "raw" / "des_deep"
    rep = extract_members(z, "des_deep_data", NAMES, dest, lock=lock)
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(NAMES)  # no lcs, no full_data
    for n in NAMES:
        assert (dest / n).read_bytes() == (folders / "des_deep_data" / n).read_bytes()
        assert rep[n]["extracted"] is True
        entry = Lock(lock.path).get(lock_key("dataset.zip", f"des_deep_data/{n}"))  # key without the top folder
        assert entry["sha256"] == hashlib.sha256((dest / n).read_bytes()).hexdigest()
    # a second extraction finds everything in place and verified: nothing is written again
    mtimes = {n: (dest / n).stat().st_mtime_ns for n in NAMES}
    rep2 = extract_members(z, "des_deep_data", NAMES, dest, lock=Lock(lock.path))
    assert not any(r["extracted"] for r in rep2.values())
    assert {n: (dest / n).stat().st_mtime_ns for n in NAMES} == mtimes


def test_a_changed_member_is_extracted_again(tmp_path, folders):
    z = write_zip_of(folders, tmp_path / "dataset.zip")
    lock = Lock(tmp_path / "l.lock.yaml")
    dest = tmp_path / "raw"
    extract_members(z, "des_deep_data", NAMES[:1], dest, lock=lock)
    good = (dest / NAMES[0]).read_bytes()
    (dest / NAMES[0]).write_bytes(b"\0" * len(good))  # damaged in place, same size
    rep = extract_members(z, "des_deep_data", NAMES[:1], dest, lock=Lock(lock.path))
    assert rep[NAMES[0]]["extracted"] and (dest / NAMES[0]).read_bytes() == good


@pytest.mark.parametrize(
    "name,mode,why",
    [
        ("../x", None, "'..' component"),
        ("des_deep_data/../../evil.npy", None, "'..' component"),
        ("/etc/evil", None, "absolute path"),
        ("C:/evil", None, "absolute path"),
        ("des_deep_data/link", stat.S_IFLNK | 0o777, "symbolic link"),
        ("des_deep_data/fifo", stat.S_IFIFO | 0o644, "special file"),
    ],
)
def test_hostile_members_refuse_the_whole_archive(tmp_path, folders, name, mode, why):
    z = write_zip_of(folders, tmp_path / "dataset.zip")
    add_raw_member(z, name, b"/etc/passwd" if mode and stat.S_ISLNK(mode) else b"pwned", mode)
    dest = tmp_path / "raw" / "des_deep"
    with pytest.raises(ArchiveError, match=why) as exc:
        extract_members(z, "des_deep_data", NAMES, dest)
    assert name in str(exc.value) and "nothing extracted" in str(exc.value)
    assert not dest.exists() or not any(dest.iterdir())
    assert not (tmp_path / "x").exists() and not (tmp_path / "raw" / "evil.npy").exists()


def test_duplicate_member_names_are_refused(tmp_path, folders):
    z = write_zip_of(folders, tmp_path / "dataset.zip")
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate as it writes it
        add_raw_member(z, f"des_deep_data/{NAMES[0]}", b"shadow")
    with pytest.raises(ArchiveError, match="appears twice"):
        extract_members(z, "des_deep_data", NAMES, tmp_path / "raw")


def test_corrupt_member_fails_its_crc_and_leaves_nothing(tmp_path, folders):
    z = write_zip_of(folders, tmp_path / "dataset.zip", compression=zipfile.ZIP_STORED)
    corrupt_member(z, f"des_deep_data/{NAMES[2]}")
    dest = tmp_path / "raw"
    with pytest.raises(ArchiveError, match=r"GROUP_2_ims_14.npy.*(CRC|corrupt)"):
        extract_members(z, "des_deep_data", NAMES, dest)
    assert not (dest / NAMES[2]).exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_member_above_the_bound_is_refused(tmp_path, folders):
    z = write_zip_of(folders, tmp_path / "dataset.zip")
    with pytest.raises(ArchiveError, match="above the bound of 1000 "):
        extract_members(z, "des_deep_data", NAMES, tmp_path / "raw", max_member_bytes=1000)
    # a highly compressible member (a bomb in miniature) is refused by its ratio
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("des_deep_data/GROUP_1_ims_14.npy", b"\0" * (20 << 20))
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_members(bomb, "des_deep_data", NAMES[:1], tmp_path / "raw")


def test_missing_member_is_named(tmp_path, folders):
    z = write_zip_of(folders, tmp_path / "dataset.zip")
    with pytest.raises(ArchiveError, match="lsst_data/GROUP_1_ims_14.npy.* not in the archive"):
        extract_members(z, "lsst_data", NAMES, tmp_path / "raw")


def test_member_not_matching_the_lock_is_removed(tmp_path, folders):
    z = write_zip_of(folders, tmp_path / "dataset.zip")
    lock = Lock(tmp_path / "l.lock.yaml")
    lock.record(lock_key("dataset.zip", f"des_deep_data/{NAMES[0]}"), {"size": 1, "sha256": "0" * 64})
    with pytest.raises(ChecksumError, match="l.lock.yaml"):
        extract_members(z, "des_deep_data", NAMES[:1], tmp_path / "raw", lock=lock)
    assert not (tmp_path / "raw" / NAMES[0]).exists()


def test_not_a_zip(tmp_path):
    bad = tmp_path / "dataset.zip"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        extract_members(bad, "des_deep_data", NAMES, tmp_path / "raw")
