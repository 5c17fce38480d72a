# Every target makes its own virtual environment when it is missing, so that
# `make run` and `make test` are the whole set-up on a fresh machine.
#
# PYTHON picks the interpreter; each one gets a virtual environment of its
# own, so `make test PYTHON=python3.13t` (free-threaded CPython) leaves the
# default .venv alone.  --prefer-binary: on free-threaded builds some packages
# publish wheels only for older releases, and a source build needs tools
# (a Rust toolchain for hypothesis' newest) that the machine may not have.
PYTHON ?= python3
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# How long the race hunt runs, in seconds, over all its tunable sets.
HUNT_SECONDS ?= 60

.PHONY: run test hunt lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --prefer-binary -e '.[test,dev,stress]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m stress

test: $(STAMP)
	$(PY) -m pytest -n auto -q

hunt: $(STAMP)
	ARENAS_HUNT_SECONDS=$(HUNT_SECONDS) $(PY) -m pytest -q -m stress tests/test_race_hunt.py tests/test_adversarial.py

bench: $(STAMP)
	$(PY) -m stress fastpath
	$(PY) -m stress scaling

lint: $(STAMP)
	$(VENV)/bin/ruff check arenas tests stress
	$(VENV)/bin/ruff format --check arenas tests stress
	$(VENV)/bin/mypy

clean:
	rm -rf .venv .venv-* build *.egg-info .pytest_cache .mypy_cache .ruff_cache
