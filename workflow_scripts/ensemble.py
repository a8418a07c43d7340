"""Snakemake script: stacked and mean ensembles of the backbones for one dataset (fit on val only)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.predict.ensemble import fit_ensembles  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

members = snakemake.params.members  # noqa: F821
fit_ensembles(
    snakemake.wildcards.dataset,  # noqa: F821
    config,
    dict(zip(members, snakemake.input.predictions)),  # noqa: F821
    model_root=Path(snakemake.output.stacked_model).parent.parent.parent,  # noqa: F821
    pred_root=Path(snakemake.output.stacked).parent.parent,  # noqa: F821
)
