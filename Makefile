# Two commands on a fresh machine:  `make run`  and  `make test`  (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED ?= 0
# `ray start` turns token authentication on; the job CLI must use it too.
export RAY_AUTH_MODE ?= token

.PHONY: run test test-fast lint docs install ray-up ray-join job ray-down mlflow-server clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,server,docs]'
	@# the hf extra's transformers (pyproject.toml): 2,951 modules, a few of which any run
	@# imports, so they are not all byte-compiled up front (about 20 s of the install)
	$(PY) -m pip install --quiet --no-compile 'transformers>=4.45'
	touch $@

install: $(VENV)/.installed

## install, then run the default sweep (sweeps/quick.yaml) on a local Ray instance
run: $(VENV)/.installed
	$(PY) -m fpzo_ray.sweep

## install, then run the test suite, on two workers (pytest-xdist): most tests wait on
## subprocesses and Ray, so two share two cores well (tests/conftest.py groups them; each
## test process computes on one thread). Three were no faster (measured twice).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=40

## the tests that start no Ray and nothing slow (769 tests, about 3 minutes on 2 cores)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not ray and not slow"

## ruff (lint and format) and mypy, as CI runs them
lint: $(VENV)/.installed
	$(PY) -m ruff check fpzo_ray tests examples mkdocs_hooks.py
	$(PY) -m ruff format --check fpzo_ray tests examples mkdocs_hooks.py
	$(PY) -m mypy

## the documentation site (mkdocs.yml: MkDocs Material, the API page by mkdocstrings) in
## site/: open site/index.html. --strict: a warning (a broken link or anchor, a page missing
## from the nav, a docstring griffe cannot read) fails it. NO_MKDOCS_2_WARNING silences
## Material's banner about its end of life (May 2027), which is not a warning of the build.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

## a local one-node Ray cluster, the default sweep submitted to it as a Ray job, and stop.
## Ray 2.60 authenticates with a token: made here once (~/.ray/auth_token, readable by you
## only); a worker node joins with the same file (or RAY_AUTH_TOKEN) and `make ray-join`.
## `ray job stop` waits RAY_JOB_STOP_WAIT_TIME_S (Ray's default 3 s) before SIGKILL: 30 s
## lets a sweep stop its trials and close its MLflow runs.
ray-up: $(VENV)/.installed
	. $(VENV)/bin/activate && ray get-auth-token --generate > /dev/null && \
	  chmod 600 "$$HOME/.ray/auth_token" && \
	  RAY_JOB_STOP_WAIT_TIME_S=30 ray start --head $(RAY_START_FLAGS)
ray-join: $(VENV)/.installed
	. $(VENV)/bin/activate && ray start --address=$(HEAD):6379
job: $(VENV)/.installed
	. $(VENV)/bin/activate && ray job submit --working-dir . -- python -m fpzo_ray.sweep
ray-down:
	. $(VENV)/bin/activate && ray stop

MLFLOW_DATA ?= results/mlflow-server
MLFLOW_PORT ?= 5000
MLFLOW_ARTIFACTS ?= results/mlflow-artifacts
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PG_PORT ?= 5432
## an MLflow tracking server in the foreground (clusters/mlflow-server.sh): PostgreSQL of its own
## in MLFLOW_DATA, artifacts in MLFLOW_ARTIFACTS (a path or s3://...); Ctrl-C stops both. Runs
## log to it with the MLFLOW_TRACKING_URI it prints; for a cluster, MLFLOW_HOST=0.0.0.0. Needs
## psycopg2-binary (the `server` extra). `make clean` deletes the default MLFLOW_DATA.
mlflow-server: $(VENV)/.installed
	PYTHON=$(PY) clusters/mlflow-server.sh --data $(MLFLOW_DATA) --pg-port $(MLFLOW_PG_PORT) \
	  --port $(MLFLOW_PORT) --host $(MLFLOW_HOST) --artifacts $(MLFLOW_ARTIFACTS)

clean:
	rm -rf results .pytest_cache
