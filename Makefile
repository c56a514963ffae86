# Every set-up step lives here: a fresh machine needs only python3.11 and pip.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
# The Airflow lines users run, each at its latest patch. The first venv (.venv, the newest line) also
# runs lint, types, the integration suite and the production shape.
AIRFLOW_LINES := 3.3.2 3.2.2 3.1.8 3.0.6 2.11.2
NEWEST := 3.3.2
# What the test venvs pin where an unconstrained resolve breaks Airflow itself (measured 2026-11/12).
# Users install Airflow with its constraint files, which pin these and more; they cannot be fetched here.
PINS_3.3.2 :=
PINS_3.2.2 := "fastapi<0.137" "svcs<26"
PINS_3.1.8 :=
PINS_3.0.6 := "fastapi<0.117" "universal-pathlib<0.3" "pyjwt<2.11"
PINS_2.11.2 :=
# The production shape's parts, beside the newest line, as Airflow's own extras bring them: the Celery
# executor, PostgreSQL's drivers (sync and async), StatsD.
PRODUCTION_EXTRAS := "apache-airflow[celery,postgres,statsd]==$(NEWEST)"

venv_of = $(if $(filter $(NEWEST),$(1)),.venv,.venv-$(1))
VENV := .venv

export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1
export AIRFLOW__CORE__LOAD_EXAMPLES := False

# uv runs as a module of the interpreter that installed it: no PATH assumptions on a fresh machine. Run so,
# it prefers that interpreter over VIRTUAL_ENV: every install names its target with --python.
UV := $(PYTHON) -m uv

.PHONY: help uv venv venvs chromium redis lint typecheck unit lines integration components-oldest \
	production wheel-check test demo bench clean $(addprefix line-,$(AIRFLOW_LINES))

help:
	@echo "make demo   - segment sample images through the local emulator with a shipped example DAG"
	@echo "make test   - lint, types, unit tests and example DAGs on Airflow $(AIRFLOW_LINES),"
	@echo "              integration tests on real components (3.3 and 3.0), the production shape, the wheel"

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv

# One venv per line. The stamp depends on pyproject.toml so that a changed dependency reinstalls.
.venv/.installed: pyproject.toml Makefile | uv
	test -x .venv/bin/python || $(UV) venv -q -p $(PYTHON) .venv
	$(UV) pip install --python .venv/bin/python -q --compile-bytecode -e ".[emulator]" --group test \
		"apache-airflow==$(NEWEST)" $(PINS_$(NEWEST)) $(PRODUCTION_EXTRAS)
	touch $@

.venv-%/.installed: pyproject.toml Makefile | uv
	test -x .venv-$*/bin/python || $(UV) venv -q -p $(PYTHON) .venv-$*
	$(UV) pip install --python .venv-$*/bin/python -q --compile-bytecode -e ".[emulator]" --group test \
		"apache-airflow==$*" $(PINS_$*)
	touch $@

venv: .venv/.installed
venvs: $(foreach line,$(AIRFLOW_LINES),$(call venv_of,$(line))/.installed)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

.SECONDEXPANSION:
# Each line: the unit tests, the hooks against the emulator, the example DAGs end to end under
# `airflow dags test`, and two nights of a catalogue (reuse and metrics, through that line's Stats).
# Independent of each other: `make -j2 lines` runs two at a time.
$(addprefix line-,$(AIRFLOW_LINES)): line-%: $$(call venv_of,$$*)/.installed
	$(call venv_of,$*)/bin/python -m pytest -q -p no:cacheprovider tests/unit \
		tests/integration/test_hooks_against_emulator.py tests/integration/test_incremental.py tests/lines

lines: $(addprefix line-,$(AIRFLOW_LINES))

unit: line-$(NEWEST)

# The browser test drives Debian's Chromium (a test tool's own browser download cannot work here).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }

# Redis for the production shape's Celery broker (PostgreSQL is on these machines already).
redis:
	@command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server >/dev/null; }

integration: venv chromium
	$(VENV)/bin/python -m pytest -q --durations=12 tests/integration --ignore=tests/integration/production

# Real components on the oldest 3.x line too: 3.0's triggerer is where the 3.x triggerer's history starts.
components-oldest: $(call venv_of,3.0.6)/.installed
	$(call venv_of,3.0.6)/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_airflow_components.py

production: venv redis
	$(VENV)/bin/python -m pytest -q --durations=5 tests/integration/production

# What a user gets from the wheel alone, outside this repository: the demo command and the DAG test helper.
WHEEL_VENV := .venv-wheel
wheel-check: uv
	rm -rf dist $(WHEEL_VENV)
	$(UV) build -q --wheel --out-dir dist .
	$(UV) venv -q -p $(PYTHON) $(WHEEL_VENV)
	$(UV) pip install --python $(WHEEL_VENV)/bin/python -q --compile-bytecode \
		"$$(ls dist/*.whl)[emulator]" "apache-airflow==$(NEWEST)" pytest pytest-timeout
	work=$$(mktemp -d) && cp tests/wheel/test_from_the_wheel.py "$$work"/ && cd "$$work" && \
		$(CURDIR)/$(WHEEL_VENV)/bin/python -m pytest -q -p no:cacheprovider --timeout 900 test_from_the_wheel.py

# Two cores: the lines go two at a time, and the wheel check (last in the list) takes the core the last
# line leaves free; the suites that start real Airflow components go one after another (each holds a
# scheduler, a triggerer and workers).
test: lint typecheck
	$(MAKE) --no-print-directory -j2 --output-sync=target lines wheel-check
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory components-oldest
	$(MAKE) --no-print-directory production

demo: venv
	$(VENV)/bin/python scripts/demo.py

bench: venv
	$(VENV)/bin/python benchmarks/poll_cost.py

clean:
	rm -rf .venv .venv-* dist .pytest_cache .mypy_cache .ruff_cache demo-output test-artifacts
