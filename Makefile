# Two commands on a fresh machine:  `make run`  and  `make test`  (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED ?= 0
# `ray start` turns token authentication on; the job CLI must use it too.
export RAY_AUTH_MODE ?= token

.PHONY: run test install ray-up job ray-down clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## install, then run the default sweep (sweeps/quick.yaml) on a local Ray instance
run: $(VENV)/.installed
	$(PY) -m fpzo_ray.sweep

## install, then run the test suite
test: $(VENV)/.installed
	$(PY) -m pytest -q

## a local one-node Ray cluster, the default sweep submitted to it as a Ray job, and stop
ray-up: $(VENV)/.installed
	. $(VENV)/bin/activate && ray start --head
job: $(VENV)/.installed
	. $(VENV)/bin/activate && ray job submit --working-dir . -- python -m fpzo_ray.sweep
ray-down:
	. $(VENV)/bin/activate && ray stop

clean:
	rm -rf results .pytest_cache
