"""The runtime table: per-rule sums of the jobs' benchmark files, stale jobs left out, the scheduler's own row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepred.contracts.config import validate_config
from deepred.results.runtime import (
    SCHEDULER_ROW,
    known_names,
    last_scheduler_record,
    read_benchmarks,
    record_scheduler,
    runtime_table,
)
from deepred.workflow.paths import Layout

REPO = Path(__file__).resolve().parents[2]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, wall, cpu, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


@pytest.fixture
def config():
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def test_rules_are_summed_and_stale_jobs_left_out(tmp_path, config):
    P = Layout({**config, "results_dir": str(tmp_path)})
    _bench(Path(P.benchmark("train", "resnet", "kids")), 30.0, 25.0, 900)
    _bench(tmp_path / "benchmarks/train/resnet/sdss.tsv", 10.0, 9.0, 1200)
    _bench(tmp_path / "benchmarks/metrics_test_set/kids_hpl.tsv", 2.0, 1.5, 200)
    _bench(tmp_path / "benchmarks/transfer_predict/resnet/kids__sdss.tsv", 4.0, 3.0, 300)
    _bench(tmp_path / "benchmarks/tables/all.tsv", 1.0, 0.5, 100)
    _bench(tmp_path / "benchmarks/train/retired_net/kids.tsv", 99.0, 99.0, 9999)  # a model no longer configured
    _bench(tmp_path / "benchmarks/train/resnet/old_survey.tsv", 99.0, 99.0, 9999)  # a dataset no longer configured
    jobs = read_benchmarks(P.benchmark_dir(), known_names(config))
    assert sorted(jobs["job"]) == ["all", "kids_hpl", "resnet/kids", "resnet/kids__sdss", "resnet/sdss"]
    table = runtime_table(jobs, {"cpu_s": "3.8", "wall_s": "60", "jobs": "5"}).set_index("rule")
    assert table.loc["train", "jobs"] == 2 and table.loc["train", "wall_s"] == 40.0
    assert table.loc["train", "cpu_s"] == 34.0
    assert table.loc["train", "max_rss_mb"] == 1200
    assert table.loc["total (jobs)", "wall_s"] == 47.0 and table.loc["total (jobs)", "jobs"] == 5
    assert table.loc["train", "wall_share"] == pytest.approx(40 / 47)
    assert table.loc[SCHEDULER_ROW, "cpu_share"] == pytest.approx(3.8 / 39.0)
    assert list(table.index[:2]) == ["train", "transfer_predict"]  # largest wall first


def test_the_scheduler_record_is_appended(tmp_path):
    assert last_scheduler_record(tmp_path) is None
    first = record_scheduler(tmp_path, started=0.0, jobs=3)
    second = record_scheduler(tmp_path, started=0.0, jobs=7)
    rows = pd.read_csv(tmp_path / "scheduler.tsv", sep="\t")
    assert list(rows["jobs"]) == [3, 7] and rows["cpu_s"].iloc[1] >= first["cpu_s"] > 0
    assert last_scheduler_record(tmp_path)["jobs"] == "7" and second["max_rss_mb"] > 0


def test_a_job_records_its_own_usage(tmp_path):
    """deepred.core.logs.write_usage (what every workflow script registers at exit) writes Snakemake's benchmark
    columns, which the runtime table reads; the peak memory is this process's, not the forking scheduler's."""
    import time

    from deepred.core.logs import write_usage

    path = tmp_path / "benchmarks" / "train" / "resnet" / "kids.tsv"
    t0 = time.time() - 2.0
    sum(i * i for i in range(200_000))  # some CPU
    write_usage(path, t0)
    jobs = read_benchmarks(tmp_path / "benchmarks", {"resnet", "kids"})
    row = jobs.iloc[0]
    assert row["rule"] == "train" and row["job"] == "resnet/kids" and row["wall_s"] >= 2.0
    assert 0 < row["cpu_s"] and 10 < row["max_rss_mb"] < 8000
