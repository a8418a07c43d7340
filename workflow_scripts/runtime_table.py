"""Snakemake script: the runtime table (per rule: jobs, wall, CPU, max RSS, shares; the scheduler's own CPU)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.core.io import write_csv  # noqa: E402
from deepred.results.runtime import known_names, last_scheduler_record, read_benchmarks, runtime_table  # noqa: E402
from deepred.workflow.paths import Layout  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)
root = Layout(config).benchmark_dir()
table = runtime_table(read_benchmarks(root, known_names(config)), last_scheduler_record(root))
write_csv(snakemake.output.table, table, float_format="%.6g")  # noqa: F821
