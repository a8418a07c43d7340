"""Snakemake script: SHAP attributions + localization scores of one trained network on its dataset."""

from deepred.core.logs import setup_logging, snakemake_log

setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.explain.attributions import explain_model  # noqa: E402

explain_model(
    Path(snakemake.input.meta).parent,  # noqa: F821
    Path(snakemake.input.catalog).parent,  # noqa: F821
    snakemake.config,  # noqa: F821
    Path(snakemake.output.per_image).parent,  # noqa: F821
    model=snakemake.wildcards.model,  # noqa: F821
    dataset=snakemake.wildcards.dataset,  # noqa: F821
)
