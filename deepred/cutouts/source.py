"""The catalogue-driven source (`source.kind: cutouts`): a target table in, Parquet + NPY shards out.

1. Targets: a table (CSV, Parquet or FITS, pinned among `source.files`) with an id, RA, Dec, the label(s)
   and optional extras (E(B-V), grade, class...), mapped to catalogue columns by `source.columns`.
2. Plan: the provider names, per target and band, the image that covers it (an SDSS frame by
   run/camcol/field, a KiDS tile by position, a service cutout by URL).
3. Fetch (`fetch_images`, rule `cutout_images`, a local rule run by `download_all`): every distinct image
   once, however many targets it holds, concurrently with a polite limit, resumable, cached under
   `data/raw/{dataset}/images/`, parsed, and verified against (or recorded in) the lock
   `config/pins/{dataset}.lock.yaml`. A stamp `images.fetched.json` lists what was fetched and what could not be.
4. Cut (`build_cutouts`, rule `cutouts`, offline): targets are visited grouped by image (an LRU cache keeps
   the few images in use decoded), each band is resampled onto one TAN grid centred on the target
   (deepred.cutouts.resample), in nanomaggies per output pixel; a target too close to an image edge, a
   band without coverage, or an unusable file go to `rejects.parquet` with the reason. Accepted cutouts are
   written a shard at a time (`cutouts/shards/images_{k}.npy`, float32 (n, bands, H, W)) with
   `cutouts/truth.parquet` (one row per accepted target, in shard order) and `cutouts/meta.json`.
5. Normalize reads that folder (`read_cutouts`) like any other raw source; its rejects are carried into
   `data/processed/{dataset}/rejects.parquet`.

Memory stays flat in the number of targets: besides the target table (a few hundred bytes per target),
one shard of cutouts and the cached images are held at a time.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError
from deepred.contracts.raw import RawChunk, RawSource
from deepred.core.io import write_json
from deepred.cutouts.cut import build_cutouts, cut_one
from deepred.cutouts.fetch import Fetcher
from deepred.cutouts.providers import ImageRequest, read_decoded, write_decoded
from deepred.cutouts.targets import (
    OUT,
    SURVEYS,
    _settings,
    _target_dict,
    cache_dir,
    load_targets,
    lock_path,
    make_provider,
    plan,
    raw_dir,
)
from deepred.fetch.download import DownloadError
from deepred.fetch.layout import FETCH_STAMP
from deepred.fetch.pins import Lock

__all__ = ["FETCH_STAMP", "OUT", "SURVEYS", "build_cutouts", "cache_dir", "cut_one", "fetch_images", "load_targets",
           "lock_path", "make_provider", "plan", "raw_dir", "read_cutouts"]

log = logging.getLogger("deepred.cutouts")


# ------------------------------------------------------------------------------------------------- fetch
def fetch_images(config: dict, dataset: str, stamp: str | Path | None = None) -> dict:
    """Download (or verify in the cache) every image the targets need; write the stamp; return it."""
    src = config["datasets"][dataset]["source"]
    targets, _ = load_targets(config, dataset)
    provider = make_provider(config, dataset)
    wanted: dict[str, ImageRequest] = {}  # distinct images only (targets' requests are not all held at once)
    cols = provider.required_columns()
    for row in targets.itertuples(index=False):
        for r in provider.requests(_target_dict(row, cols)).values():
            if isinstance(r, ImageRequest):
                for one in (r, *r.companions):
                    wanted.setdefault(one.key, one)
    lock = Lock(lock_path(config, dataset))
    root = cache_dir(config, dataset)
    after = None
    if provider.decodes and src.get("keep_decoded", True):
        def after(key, path, entry, checked):
            if read_decoded(root, key, entry.get("sha256")) is not None:
                return
            data, header = checked if checked is not None else provider.check(path, None)
            write_decoded(root, key, entry["sha256"], data, header)

    fetcher = Fetcher(root, lock, _settings(config), max_connections=int(src.get("max_connections", 4)),
                      delay_s=float(src.get("request_delay_s", 0.0)), check=provider.check, after=after,
                      permanent=getattr(provider, "permanent_answer", None))
    t0 = time.monotonic()
    # new entries are written to the lock once, when the batch ends (also after an error), not once per image
    with lock.batch():
        outcomes = _probe_first(fetcher, wanted, dataset)
        outcomes.update(fetcher.fetch_all({k: r for k, r in wanted.items() if k not in outcomes}))
    _stop_if_uncalibrated(outcomes.values(), dataset)
    fatal = [o for o in outcomes.values() if o.fatal]
    if fatal and src.get("download_failures", "error") == "reject":
        for o in fatal:  # their targets become rejects with this reason; the next run asks again
            log.warning("%s: %s (its targets are rejected)", o.key, o.problem)
        fatal = []
    if fatal:
        listed = "; ".join(o.problem for o in fatal[:5])
        raise DownloadError(f"dataset '{dataset}': {len(fatal)} of {len(wanted)} images could not be fetched "
                            f"({listed}{' ...' if len(fatal) > 5 else ''}); rerun to resume")
    unavailable = [o for o in outcomes.values() if o.path is None]
    if wanted and len(unavailable) == len(wanted):  # a wrong base URL or template, not a few missing images
        raise DownloadError(f"dataset '{dataset}': none of the {len(wanted)} images could be fetched (first: "
                            f"{unavailable[0].problem}); check source.provider's base_url / url_template")
    record = {
        "dataset": dataset,
        "provider": provider.name,
        "lock": str(lock_path(config, dataset)),
        "n_images": len(wanted),
        "n_downloaded": sum(o.downloaded for o in outcomes.values()),
        "seconds": round(time.monotonic() - t0, 3),
        "missing": {k: o.problem for k, o in sorted(outcomes.items()) if o.path is None},
    }
    log.info("%s: %d images (%d downloaded, %d unavailable) in %.1f s", dataset, record["n_images"],
             record["n_downloaded"], len(record["missing"]), record["seconds"])
    write_json(stamp or raw_dir(config, dataset) / FETCH_STAMP, record)
    return record


def _probe_first(fetcher: Fetcher, wanted: dict, dataset: str) -> dict:
    """Fetch the first image and its companions alone, and stop if their calibration cannot be established:
    a wrong assumption about the survey's headers costs one file, not the whole download."""
    first = next((r for r in wanted.values() if r.role == "sci"), None)
    if first is None:
        return {}
    probe = {r.key: r for r in (first, *first.companions)}
    outcomes = fetcher.fetch_all(probe)
    _stop_if_uncalibrated(outcomes.values(), dataset, first=True)
    return outcomes


def _stop_if_uncalibrated(outcomes, dataset: str, first: bool = False) -> None:
    bad = [o for o in outcomes if o.uncalibrated]
    if bad:
        when = "on the first file, before downloading the rest" if first else f"on {len(bad)} file(s)"
        raise DownloadError(f"dataset '{dataset}': stopped {when}: {bad[0].problem}")


# ------------------------------------------------------------------------------------- raw-source adapter
def read_cutouts(folder: str | Path) -> RawSource:
    """The cut folder as a RawSource for deepred.data.normalize (rejects carried along)."""
    folder = Path(folder)
    for name in ("truth.parquet", "meta.json", "rejects.parquet"):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: missing (run the cutouts rule first)")
    meta = json.loads((folder / "meta.json").read_text())
    truth = pd.read_parquet(folder / "truth.parquet")
    rejects = pd.read_parquet(folder / "rejects.parquet").to_dict("records")
    shards = sorted((folder / "shards").glob("images_*.npy"))
    if len(shards) != meta["n_shards"]:
        raise DataError(f"{folder / 'shards'}: {len(shards)} shards, meta.json says {meta['n_shards']}")

    groups = truth.groupby("shard").indices

    def chunks(rows: int) -> Iterator[RawChunk]:
        for k, path in enumerate(shards):
            images = np.load(path, allow_pickle=False)
            part = truth.iloc[groups.get(k, [])].sort_values("row")
            if len(part) != len(images):
                raise DataError(f"{path}: {len(images)} cutouts, truth.parquet lists {len(part)} for shard {k}")
            yield RawChunk(truth=part.drop(columns=["shard", "row"]).reset_index(drop=True), images=images,
                           masks=None, origin=str(path))

    return RawSource(
        bands=list(meta["bands"]),
        pixel_scale=float(meta["pixel_scale"]),
        survey=str(meta["survey"]),
        n_objects=int(len(truth)),
        chunks=chunks,
        inputs=[folder / "truth.parquet", folder / "meta.json"],
        meta=meta,
        rejects=rejects,
    )
