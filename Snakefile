# DeepRed: every table and figure of the study is a target of this workflow.
# Entry point: `snakemake --cores 2` (default target `all`), or `snakemake --profile slurm <target>`.
import sys
import time

from snakemake.utils import min_version

min_version("9.0")


# The deepred package of this checkout, even without install. Config files are read with duplicate keys refused
# and syntax errors (a tab) named by file and line: config.yaml before Snakemake's own loader (which says
# neither), and the --configfile files, which Snakemake's command line has read already (a repeated key won).
sys.path.insert(0, workflow.basedir)
from deepred.contracts.config_checks import check_config_files

check_config_files(["config.yaml", *workflow.configfiles])


configfile: "config.yaml"


# the scheduler's own wall and CPU go to results/benchmarks/scheduler.tsv (onsuccess)
STARTED = time.time()


report: "report/workflow.rst"  # `snakemake --report results/report.html`


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/download.smk"
include: "rules/slurm.smk"
include: "rules/baselines.smk"
include: "rules/train.smk"
include: "rules/metrics.smk"
include: "rules/shap.smk"
include: "rules/pdfs.smk"
include: "rules/scale_study.smk"


# Cheap bookkeeping rules and the downloads say `localrule: True` in their own definition: they run in the main
# Snakemake process, also under `--profile slurm` (a SLURM job each would cost a queue wait and a status poll for
# seconds of work; compute nodes often have no internet).
rule all:
    default_target: True
    input:
        PLAN.all_targets(),
        P.table("runtime"),
    localrule: True


onsuccess:
    # the scheduler's own CPU for an invocation that ran jobs (the runtime table's `snakemake (scheduler)` row)
    ran = sum(1 for _ in workflow.dag.needrun_jobs(exclude_finished=False))
    if ran:
        from deepred.results.runtime import record_scheduler

        record_scheduler(P.benchmark_dir(), STARTED, ran)
