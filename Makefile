# Curate: `make run` and `make test` do all the set-up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n auto

.PHONY: install run test test-postgres bench scale-quick gpu-wheels clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: install, migrate the SQLite database under ./data, create the admin account,
## load the demo dataset into an empty database, then serve at http://127.0.0.1:8000 with a worker.
run: install
	$(VENV)/bin/curate init
	$(VENV)/bin/curate serve

## make test: install and run the whole suite (set CURATE_TEST_POSTGRES_URL to add Postgres).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install
	CURATE_TEST_POSTGRES_URL=$${CURATE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres} $(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	$(PY) bench/import_export.py
	$(PY) bench/training.py
	$(PY) bench/annotators.py
	$(PY) bench/label_errors.py
	$(PY) bench/recipes.py
	$(PY) bench/oof_passes.py
	$(PY) bench/security.py
	$(PY) bench/scale.py

## make scale-quick: the scale bench at 50k samples on Postgres (CI runs it): fails if any
## listing's plan scans the predictions table.
scale-quick: install
	$(PY) bench/scale.py --quick

## make gpu-wheels: the wheels bench/gpu_run.sh installs on a GPU machine without fastai
## (CPython 3.12, --no-deps, versions from constraints.txt), into bench/wheels/.
gpu-wheels: install
	PYTHON=$(PY) sh bench/gpu_wheels.sh bench/wheels

clean:
	rm -rf $(VENV) .pytest_cache test-output
