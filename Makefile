# Every target makes its own virtual environment when it is missing, so that
# `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,stress]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m stress

test: $(STAMP)
	$(PY) -m pytest -n auto -q

bench: $(STAMP)
	$(PY) -m stress fastpath
	$(PY) -m stress scaling

lint: $(STAMP)
	$(VENV)/bin/ruff check arenas tests stress
	$(VENV)/bin/ruff format --check arenas tests stress
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
