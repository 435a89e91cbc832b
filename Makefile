# A newcomer's entry points: `make demo`, `make test`, `make lint`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test test-fast lint fmt bench screenshots mutation clean

help:
	@echo "make demo   - set up .venv, start the Graph simulator, audit the demo fleet, print report paths"
	@echo "make test   - set up .venv and run the whole test suite"
	@echo "make lint   - ruff (lint + format check) and mypy --strict"
	@echo "make bench  - benchmarks that print figures (simulator fleet generator, fleet audit, fault mode,"
	@echo "              issue 13's scale figures; BENCH_ARGS=--large adds 1,000 x 2,000)"
	@echo "make screenshots - PNG screenshots of the HTML report into docs/ (needs chromium)"
	@echo "make mutation - mutation testing of the core (mutmut); MODULES=\"evaluate collect\" for some, JOBS=N"

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/auditor demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check auditor tests benchmarks tools
	$(BIN)/ruff format --check auditor tests benchmarks tools
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format auditor tests benchmarks tools
	$(BIN)/ruff check --fix auditor tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fleet_generator.py
	$(BIN)/python benchmarks/bench_audit_fleet.py --tenants 100 --users 500
	$(BIN)/python benchmarks/bench_capture.py --tenants 10 --users 2000
	$(BIN)/python benchmarks/bench_faults.py --rates 0 0.1 0.3
	$(BIN)/python benchmarks/bench_scale.py $(BENCH_ARGS)

screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py

# Not part of CI (it takes a while): installs mutmut into .venv, mutates the core modules one by one and
# prints the kill rate per module and the surviving mutants (tools/mutation.py; README "Testing").
MODULES ?=
JOBS    ?= 1
MUTMUT  := $(VENV)/.mutmut-installed

$(MUTMUT): $(STAMP)
	$(BIN)/python -m pip install --quiet 'mutmut>=3.8,<4'
	@touch $(MUTMUT)

mutation: $(MUTMUT)
	$(BIN)/python tools/mutation.py --jobs $(JOBS) $(MODULES)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache reports/out
