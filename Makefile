# Every set-up step lives here: a fresh machine needs only python3.11 and pip.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
AIRFLOW3 ?= 3.3.2
AIRFLOW2 ?= 2.11.2
VENV3 := .venv
VENV2 := .venv-af2

export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1
export AIRFLOW__CORE__LOAD_EXAMPLES := False

# uv runs as a module of the interpreter that installed it: no PATH assumptions on a fresh machine. Run so,
# it prefers that interpreter over VIRTUAL_ENV: every install names its target with --python.
UV := $(PYTHON) -m uv

.PHONY: help venv venv2 uv chromium lint typecheck unit unit-af2 integration wheel-check test demo bench clean

help:
	@echo "make demo   - segment sample images through the local emulator with the example DAG"
	@echo "make test   - ruff, mypy, unit tests on Airflow $(AIRFLOW3) and $(AIRFLOW2), integration tests"

.PHONY: uv
uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv

# The stamp depends on pyproject.toml so that a changed dependency reinstalls.
$(VENV3)/.installed: pyproject.toml | uv
	test -x $(VENV3)/bin/python || $(UV) venv -q -p $(PYTHON) $(VENV3)
	$(UV) pip install --python $(VENV3)/bin/python -q --compile-bytecode -e ".[emulator]" --group test \
		"apache-airflow==$(AIRFLOW3)"
	touch $@

$(VENV2)/.installed: pyproject.toml | uv
	test -x $(VENV2)/bin/python || $(UV) venv -q -p $(PYTHON) $(VENV2)
	$(UV) pip install --python $(VENV2)/bin/python -q --compile-bytecode -e ".[emulator]" --group test \
		"apache-airflow==$(AIRFLOW2)"
	touch $@

venv: $(VENV3)/.installed
venv2: $(VENV2)/.installed

lint: venv
	$(VENV3)/bin/ruff check .
	$(VENV3)/bin/ruff format --check .

typecheck: venv
	$(VENV3)/bin/mypy

unit: venv
	$(VENV3)/bin/python -m pytest -q tests/unit

unit-af2: venv2
	$(VENV2)/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration/test_hooks_against_emulator.py

# The browser test drives Debian's Chromium (a test tool's own browser download cannot work here).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }

integration: venv chromium
	$(VENV3)/bin/python -m pytest -q tests/integration

# What a user gets from the wheel alone, outside this repository: the demo command and the DAG test helper.
WHEEL_VENV := .venv-wheel
wheel-check: uv
	rm -rf dist $(WHEEL_VENV)
	$(UV) build -q --wheel --out-dir dist .
	$(UV) venv -q -p $(PYTHON) $(WHEEL_VENV)
	$(UV) pip install --python $(WHEEL_VENV)/bin/python -q --compile-bytecode \
		"$$(ls dist/*.whl)[emulator]" "apache-airflow==$(AIRFLOW3)" pytest pytest-timeout
	work=$$(mktemp -d) && cp tests/wheel/test_from_the_wheel.py "$$work"/ && cd "$$work" && \
		$(CURDIR)/$(WHEEL_VENV)/bin/python -m pytest -q -p no:cacheprovider --timeout 900 test_from_the_wheel.py

test: lint typecheck unit unit-af2 integration wheel-check

demo: venv
	$(VENV3)/bin/python scripts/demo.py

bench: venv
	$(VENV3)/bin/python benchmarks/poll_cost.py

clean:
	rm -rf $(VENV3) $(VENV2) $(WHEEL_VENV) dist .pytest_cache .mypy_cache .ruff_cache demo-output test-artifacts
