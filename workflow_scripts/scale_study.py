"""Snakemake script: the scale study's tables and figure from every point's predictions and model.json."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.results.figures import scale_study_figure  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.core.provenance import provenance  # noqa: E402
from deepred.results.scale_study import build_scale_tables  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp, out = snakemake.input, snakemake.output  # noqa: F821
# params.points: (dataset, model, n) in the order of the input lists (rules/scale_study.smk)
points = [{"dataset": ds, "model": m, "n_systems": int(n), "predictions": pred, "meta": meta}
          for (ds, m, n), pred, meta in zip(snakemake.params.points, inp.predictions, inp.meta)]  # noqa: F821
table, cross = build_scale_tables(points, config, out.table, out.crossover)
scale_study_figure(table, cross, config, out.png, out.pdf)
write_json(out.provenance, provenance(config, list(inp)))
