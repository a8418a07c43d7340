"""Snakemake script: render one simulated survey dataset into data/raw/{dataset}/."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.simulate import simulate_dataset  # noqa: E402

source = snakemake.params.source  # noqa: F821
simulate_dataset(
    preset=source["preset"],
    n_systems=source["n_systems"],
    seed=snakemake.params.seed,  # noqa: F821
    out_dir=Path(snakemake.output.meta).parent,  # noqa: F821
    bands=snakemake.params.bands,  # noqa: F821
    cutout=snakemake.params.cutout,  # noqa: F821
    class_fractions=source.get("class_fractions"),
    morphology=source.get("morphology", "v1"),
)
