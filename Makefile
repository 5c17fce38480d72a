# Every target makes its own virtual environment when it is missing, so that
# `make run` and `make test` are the whole set-up on a fresh machine.
#
# PYTHON picks the interpreter; each one gets a virtual environment of its
# own, so `make test PYTHON=python3.13t` (free-threaded CPython) leaves the
# default .venv alone.  --prefer-binary: on free-threaded builds some packages
# publish wheels only for older releases, and a source build needs tools
# (a Rust toolchain for hypothesis' newest) that the machine may not have.
PYTHON ?= python3
DEFAULT_PYTHON := $(filter python3,$(PYTHON))
VENV   ?= $(if $(DEFAULT_PYTHON),.venv,.venv-$(notdir $(PYTHON)))
# The linters (the dev extra) go into the default environment only: `make lint`
# runs there, and some of mypy's dependencies publish no free-threaded wheels.
ALL_EXTRAS := test,dev,stress
RUN_EXTRAS := test,stress
EXTRAS ?= $(if $(DEFAULT_PYTHON),$(ALL_EXTRAS),$(RUN_EXTRAS))
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# How long the race hunt runs, in seconds, over all its tunable sets.
HUNT_SECONDS ?= 60

.PHONY: run test hunt lint bench docs page-size clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --prefer-binary -e '.[$(EXTRAS)]'
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

# What docs/ shows from commands: the sections a command prints (rewritten in
# place, see docs/generated.py), the tutorial's pictures, the producer/consumer
# page and its snapshot, and the page seen in headless Chromium at its first,
# middle and last frames, alone and beside arena_max=1 (needs Debian's chromium).
TIMELINE_TRACE := stress/traces/python-producer-consumer.trace.gz
docs: $(STAMP)
	$(PY) docs/generated.py --write
	$(PY) -m arenas.timeline --tutorial docs/img
	$(PY) -m arenas.timeline $(TIMELINE_TRACE) --html docs/img/timeline-producer-consumer.html \
	    --png docs/img/timeline-producer-consumer.png
	$(PY) tests/cdp.py docs/img/timeline-producer-consumer.html docs/img/timeline
	mkdir -p build
	$(PY) -m arenas.timeline $(TIMELINE_TRACE) --compare arena_max=1 --html build/timeline-compare.html
	$(PY) tests/cdp.py build/timeline-compare.html docs/img/timeline-compare middle

# The page sizes docs/tutorial.md quotes: the largest shipped trace's page, and
# a synthetic trace of a million events in four threads.
page-size: $(STAMP)
	mkdir -p build
	$(PY) -m arenas.timeline stress/traces/python-json-threads.trace.gz --html build/json-threads.html
	$(PY) -m stress synth -o build/million.trace.gz --events 1000000
	$(PY) -m arenas.timeline build/million.trace.gz --html build/million.html
	@wc -c build/json-threads.html build/million.html

lint: $(STAMP)
	test -n "$(DEFAULT_PYTHON)" || { echo "make lint runs in the default .venv (PYTHON=python3)"; exit 2; }
	$(VENV)/bin/ruff check arenas tests stress docs/generated.py
	$(VENV)/bin/ruff format --check arenas tests stress docs/generated.py
	$(VENV)/bin/mypy

clean:
	rm -rf .venv .venv-* build *.egg-info .pytest_cache .mypy_cache .ruff_cache
