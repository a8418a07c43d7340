"""The results archive: results/archive/deepred-results-<date>.tar.gz with a verifiable manifest.

The tarball holds the study's tables, figures, per-test-set metrics and prediction files, plus
MANIFEST.json: the SHA-256 and size of every archived file, the resolved config, the code version, the
package versions (deepred.core.provenance) and the SHA-256 of the inputs that made them (model weights,
normalized catalogues), which are checksummed but not archived. `verify_archive` re-hashes every member
against the manifest. Members are written in sorted order with fixed owners and times, so the payload is
the same for the same files.

The <date> is config `metrics.archive_date` when set (a release date you choose), else the day the
workflow is parsed (UTC).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from deepred.workflow.plan import archive_date  # noqa: F401 (the archive's name)
from deepred.core.io import atomic_path, sha256_file
from deepred.core.provenance import provenance

MANIFEST = "MANIFEST.json"


class ArchiveError(ValueError):
    """The archive cannot be built or does not match its manifest; the message names the file."""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_archive(out_path, files: list[str | Path], root: str | Path, config: dict, inputs=()) -> dict:
    """Write the tarball of `files` (names relative to `root`) with its manifest; return the manifest."""
    root = Path(root).resolve()
    entries = {}
    for f in sorted({Path(f).resolve() for f in files}):
        if not f.is_file():
            raise ArchiveError(f"{f}: file to archive is missing")
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            raise ArchiveError(f"{f}: not under the archive root {root}") from None
        entries[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    manifest = {"files": entries, **provenance(config, list(inputs))}
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()
    with atomic_path(out_path) as tmp:
        # gzip's own header carries a time stamp: fix it to 0
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, MANIFEST, manifest_bytes)
                for rel in entries:
                    _add_bytes(tar, rel, (root / rel).read_bytes())
    return manifest


def verify_archive(path) -> dict:
    """Re-hash every member against MANIFEST.json; raise ArchiveError listing each mismatch."""
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise ArchiveError(f"{path}: not a readable .tar.gz ({exc})") from exc
    problems = []
    with tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        if MANIFEST not in members:
            raise ArchiveError(f"{path}: no {MANIFEST}")
        manifest = json.loads(tar.extractfile(members[MANIFEST]).read())
        listed = manifest.get("files", {})
        for name, want in sorted(listed.items()):
            if name not in members:
                problems.append(f"{name}: listed in the manifest, absent from the archive")
                continue
            got = hashlib.sha256(tar.extractfile(members[name]).read()).hexdigest()
            if got != want["sha256"]:
                problems.append(f"{name}: SHA-256 {got[:12]}... != manifest {want['sha256'][:12]}...")
        for name in sorted(set(members) - set(listed) - {MANIFEST}):
            problems.append(f"{name}: in the archive but not in the manifest")
    for key in ("config", "code_version", "packages", "inputs"):
        if key not in manifest:
            problems.append(f"manifest lacks '{key}'")
    if problems:
        raise ArchiveError(f"{path}: archive does not verify:\n  - " + "\n  - ".join(problems))
    return manifest


def main(argv=None) -> int:
    """`python -m deepred.results.archive verify FILE`: exit 0 when the archive verifies."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m deepred.results.archive")
    ap.add_argument("command", choices=["verify"])
    ap.add_argument("archive")
    args = ap.parse_args(argv)
    try:
        m = verify_archive(args.archive)
    except ArchiveError as exc:
        print(exc)
        return 1
    print(f"{args.archive}: {len(m['files'])} files verify (code {m['code_version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
