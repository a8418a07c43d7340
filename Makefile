# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make run    build the virtual environment, then run the whole DAG on the default (simulated) config
#   make test   build the virtual environment, then run the test suite
#   make gpu-check   on a machine with a CUDA GPU: benchmarks/bench_gpu.py (< 8 min), results/benchmarks/gpu_check.json
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: venv run test dryrun lint clean gpu-check

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

test: venv
	$(BIN)/python -m pytest -q

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
