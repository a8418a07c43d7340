# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make run    build the virtual environment, then run the whole DAG on the default (simulated) config
#   make test   build the virtual environment, then run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: venv run test dryrun lint clean

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

dryrun: venv
	$(BIN)/snakemake -n --cores $(CORES)

lint: venv
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint

clean:
	rm -rf $(VENV) .snakemake
