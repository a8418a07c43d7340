"""Snakemake script: fetch a cutouts source's survey images (rule cutout_images) or cut the targets from
them (rule cutouts)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.cutouts.source import build_cutouts, fetch_images  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

dataset = snakemake.wildcards.dataset  # noqa: F821
if snakemake.rule == "cutout_images":  # noqa: F821
    fetch_images(config, dataset, stamp=snakemake.output[0])  # noqa: F821
else:
    build_cutouts(config, dataset, out_dir=Path(snakemake.output.truth).parent, stamp=snakemake.input.stamp)  # noqa: F821
