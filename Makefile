# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make run    build the virtual environment, then run the whole DAG on the default (simulated) config
#   make test   build the virtual environment, then run the fast test tier (every module, < 6 min on 2 cores)
#   make test-workflow   Snakemake end-to-end tests; make test-slurm   tests against the local SLURM cluster
#   make test-all   every tier (.ci/run runs `make test` first, then the other two tiers)
#   make gpu-check   on a machine with a CUDA GPU: benchmarks/bench_gpu.py (< 8 min), results/benchmarks/gpu_check.json
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: venv run test test-workflow test-slurm test-all dryrun lint clean gpu-check

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Stamp file: reinstall when the pins change.
$(VENV)/.installed: $(BIN)/activate pyproject.toml requirements.lock
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/snakemake --cores $(CORES) --profile profiles/default

# Both cores (pytest-xdist); the tiers are pytest markers (pyproject.toml).
PYTEST := $(BIN)/python -m pytest -q -n $(CORES)

test: venv
	$(PYTEST) -m "not workflow and not slurm"

test-workflow: venv
	$(PYTEST) -m "workflow and not slurm"

test-slurm: venv
	$(BIN)/python -m pytest -q -m slurm

test-all: test test-workflow test-slurm

# Outside the DAG: no Snakemake target depends on it. Without a GPU it says so in one line and exits 0.
# The script stops starting new work after 450 s; `timeout` holds the 8-minute limit (the JSON keeps what was done).
gpu-check: venv
	timeout -k 10 480 $(BIN)/python benchmarks/bench_gpu.py --config config/paper.yaml --out results/benchmarks/gpu_check.json

dryrun: venv
	$(BIN)/snakemake -n --cores $(CORES)

lint: venv
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint

clean:
	rm -rf $(VENV) .snakemake
