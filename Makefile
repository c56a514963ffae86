# Every set-up step lives here: a fresh machine needs only python3.11 and pip (Debian's packages bring
# Chromium, Redis and, where missing, Node.js for Azurite, which wants Node 20 or later).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
# The Airflow lines users run, each at its latest patch. The first venv (.venv, the newest line) also
# runs lint, types, the integration suite and the production shape.
AIRFLOW_LINES := 3.3.2 3.2.2 3.1.8 3.0.6 2.11.2
NEWEST := 3.3.2
#: The money invariants run where the ledger's two homes differ: the task state store (3.3) and none (2.11).
INVARIANT_LINES := $(NEWEST) 2.11.2
# What an unconstrained resolve must be kept from where it breaks Airflow itself (measured 2026-11/12;
# cryptography 51 breaks get_fernet on 2.11 to 3.1). Users install Airflow with its constraint files,
# which pin these and more; they cannot be fetched here. The README lists the same pins.
PINS_3.3.2 :=
PINS_3.2.2 := "fastapi<0.137" "svcs<26"
PINS_3.1.8 := "cryptography<51"
PINS_3.0.6 := "fastapi<0.117" "universal-pathlib<0.3" "pyjwt<2.11" "cryptography<51"
PINS_2.11.2 := "cryptography<51"
# The production shape's parts, beside the newest line, as Airflow's own extras bring them: the Celery
# executor, PostgreSQL's drivers (sync and async), StatsD.
PRODUCTION_EXTRAS := "apache-airflow[celery,postgres,statsd]==$(NEWEST)"

venv_of = $(if $(filter $(NEWEST),$(1)),.venv,.venv-$(1))
VENV := .venv
# Every test venv installs from a lock (constraints/<line>.txt, committed): a release of someone else's
# package cannot change what `make test` runs until `make lock` is run on purpose and its diff committed.
lock_of = constraints/$(1).txt
# The object-store suite's venv: the newest line with S3, GCS and Azure Blob and their loopback servers.
STORES_VENV := .venv-stores
STORES_EXTRAS := "apache-airflow-providers-amazon[s3fs]" "moto[server]" "apache-airflow-providers-google>=22" \
	gcsfs gcp-storage-emulator "apache-airflow-providers-microsoft-azure" adlfs

export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1
export AIRFLOW__CORE__LOAD_EXAMPLES := False

# uv runs as a module of the interpreter that installed it: no PATH assumptions on a fresh machine. Run so,
# it prefers that interpreter over VIRTUAL_ENV: every install names its target with --python.
UV := $(PYTHON) -m uv
UV_VERSION := 0.13.10

.PHONY: lock help uv venv venvs chromium redis lint typecheck unit lines integration components-oldest \
	production stores wheel-check test demo bench bench-smoke clean $(addprefix line-,$(AIRFLOW_LINES))

help:
	@echo "make demo        - segment sample images through the local emulator with a shipped example DAG"
	@echo "make test        - every check: lint, types, the lines, the wheel, integration, stores, production"
	@echo "make unit        - the fast inner loop: the unit tests on the newest line ($(NEWEST)), about 3 minutes"
	@echo "make lint        - ruff check and ruff format --check"
	@echo "make typecheck   - mypy --strict on the package"
	@echo "make lines       - the unit tests, example DAGs (and on $(INVARIANT_LINES) the money invariants) on every line: $(AIRFLOW_LINES)"
	@echo "make line-X      - the same on one line, e.g. make line-2.11.2"
	@echo "make wheel-check - what a user gets from the wheel alone, outside this repository"
	@echo "make integration - real servers and Airflow components on the newest line (not the stores)"
	@echo "make stores      - S3, GCS and Azure Blob on their loopback emulators (moto, gcp-storage-emulator, Azurite)"
	@echo "make components-oldest - real Airflow components on 3.0.6"
	@echo "make production  - PostgreSQL, Celery on Redis, two workers and two triggerers"
	@echo "make bench       - the per-poll cost benchmark (benchmarks/ has the others)"
	@echo "make bench-smoke - every benchmark once with --smoke (tiny sizes, about 4 minutes): proves each still runs"
	@echo "make venv / venvs - the newest line's venv / every line's venv, installed from constraints/"
	@echo "make lock        - resolve constraints/*.txt anew from today's releases (on purpose; commit the diff)"
	@echo "make uv / chromium / redis - the tools the targets above install for themselves"
	@echo "make clean       - remove venvs, builds and outputs"

uv:
	@$(UV) --version 2>/dev/null | grep -Eqx "uv $(subst .,\.,$(UV_VERSION))( .*)?" || $(PYTHON) -m pip install -q "uv==$(UV_VERSION)"

# One venv per line. The stamp depends on pyproject.toml so that a changed dependency reinstalls.
# What each venv asks for beyond the project's own dependencies, its emulator extra and its test group.
REQUIRES_$(NEWEST) = "apache-airflow==$(NEWEST)" $(PINS_$(NEWEST)) $(PRODUCTION_EXTRAS)
$(foreach line,$(filter-out $(NEWEST),$(AIRFLOW_LINES)),$(eval REQUIRES_$(line) = "apache-airflow==$(line)" $$(PINS_$(line))))
REQUIRES_stores = "apache-airflow==$(NEWEST)" $(PINS_$(NEWEST)) $(STORES_EXTRAS)
LOCKS := $(AIRFLOW_LINES) stores

# One venv per line, installed from its lock. The stamp depends on the lock and pyproject.toml.
define venv_rule
$(1)/.installed: pyproject.toml $(call lock_of,$(2)) | uv
	test -x $(1)/bin/python || $(UV) venv -q -p $(PYTHON) $(1)
	$(UV) pip install --python $(1)/bin/python -q --compile-bytecode -c $(call lock_of,$(2)) \
		-e ".[emulator]" --group test $(REQUIRES_$(2))
	touch $$@
endef
$(foreach line,$(AIRFLOW_LINES),$(eval $(call venv_rule,$(call venv_of,$(line)),$(line))))
$(eval $(call venv_rule,$(STORES_VENV),stores))

# Resolve every lock anew from today's releases: run on purpose, check `make test`, commit the diff.
define lock_one
	printf '%s\n' $(REQUIRES_$(1)) > constraints/.$(1).in
	$(UV) pip compile -q --upgrade --python-version 3.11 --no-header pyproject.toml constraints/.$(1).in \
		--extra emulator --group test -o $(call lock_of,$(1))
	rm constraints/.$(1).in

endef
lock: | uv
	mkdir -p constraints
	$(foreach name,$(LOCKS),$(call lock_one,$(name)))

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
		tests/integration/test_hooks_against_emulator.py tests/integration/test_incremental.py tests/lines \
		$(if $(filter $*,$(INVARIANT_LINES)),tests/invariants)

lines: $(addprefix line-,$(AIRFLOW_LINES))

# The inner loop: the newest line's unit tests alone (a line's whole set is `make line-<version>`).
unit: venv
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit

# The browser test drives Debian's Chromium (a test tool's own browser download cannot work here).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }

# Redis for the production shape's Celery broker (PostgreSQL is on these machines already).
redis:
	@command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server >/dev/null; }

# The benchmarks' smoke runs live in tests/integration but run once, under bench-smoke.
integration: venv chromium
	$(VENV)/bin/python -m pytest -q --durations=12 tests/integration --ignore=tests/integration/production \
		--ignore=tests/integration/test_benchmarks_smoke.py

# Real components on the oldest 3.x line too: 3.0's triggerer is where the 3.x triggerer's history starts.
components-oldest: $(call venv_of,3.0.6)/.installed
	$(call venv_of,3.0.6)/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_airflow_components.py

# Microsoft's Azurite, from its committed npm lock, for the Azure Blob suite.
AZURITE := tools/azurite/node_modules/.bin/azurite-blob
$(AZURITE): tools/azurite/package-lock.json
	@command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q nodejs npm >/dev/null; }
	npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error
	touch $@

# The object stores: S3 (moto's server), Google Cloud Storage (gcp-storage-emulator) and Azure Blob
# (Azurite), each started by the tests on 127.0.0.1 and stopped by process group.
stores: $(STORES_VENV)/.installed $(AZURITE)
	HITPAW_AZURITE=$(CURDIR)/$(AZURITE) $(STORES_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		--durations=8 tests/stores

production: venv redis
	$(VENV)/bin/python -m pytest -q --durations=5 tests/integration/production

# What a user gets from the wheel alone, outside this repository: the demo command and the DAG test helper.
WHEEL_VENV := .venv-wheel
wheel-check: uv
	rm -rf dist $(WHEEL_VENV)
	$(UV) build -q --wheel --out-dir dist .
	$(UV) venv -q -p $(PYTHON) $(WHEEL_VENV)
	$(UV) pip install --python $(WHEEL_VENV)/bin/python -q --compile-bytecode -c $(call lock_of,$(NEWEST)) \
		"$$(ls dist/*.whl)[emulator]" "apache-airflow==$(NEWEST)" pytest pytest-timeout
	work=$$(mktemp -d) && cp tests/wheel/test_from_the_wheel.py "$$work"/ && cd "$$work" && \
		$(CURDIR)/$(WHEEL_VENV)/bin/python -m pytest -q -p no:cacheprovider --timeout 900 test_from_the_wheel.py

# Two cores: the lines go two at a time, and the wheel check (last in the list) takes the core the last
# line leaves free; the suites that start real Airflow components go one after another (each holds a
# scheduler, a triggerer and workers).
test: lint typecheck
	$(MAKE) --no-print-directory -j2 --output-sync=target lines wheel-check
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory -j2 --output-sync=target bench-smoke stores
	$(MAKE) --no-print-directory components-oldest
	$(MAKE) --no-print-directory production

demo: venv
	$(VENV)/bin/python scripts/demo.py

bench: venv
	$(VENV)/bin/python benchmarks/poll_cost.py

# Every benchmark in its smoke mode (tiny sizes, no figure checked), one after another: three of them start
# real Airflow components. store_reuse.py runs in the object-store venv (moto, s3fs).
bench-smoke: venv $(STORES_VENV)/.installed
	HITPAW_STORES_PYTHON=$(CURDIR)/$(STORES_VENV)/bin/python $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
		--durations=0 tests/integration/test_benchmarks_smoke.py

clean:
	rm -rf .venv .venv-* dist .pytest_cache .mypy_cache .ruff_cache demo-output test-artifacts
