# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing, installs
# the pinned CPU torch wheel, the package with its dev extras, and the system packages the tests need.
# Idempotent: stamps record what is done, so a second run skips it.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# Debian packages: the Fashion-MNIST IDX files (tests train on them); chromium (the report test opens the HTML);
# jq (a README example pipes `cadence train --json` into it; tests/test_readme.py runs it);
# redis-server (the stream tests start their own on a free loopback port);
# postgresql (the distributed-tuning tests start their own server: initdb in a temp folder, a loopback port).
SYSTEM_PACKAGES ?= dataset-fashion-mnist chromium jq redis-server postgresql
STAMP := $(VENV)/.installed-$(subst =,-,$(subst <,,$(subst >,,$(TORCH))))

.PHONY: demo test lint format bench system-deps clean venv

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

system-deps:
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

demo: $(STAMP)
	$(BIN)/cadence compare --data digits

test: $(STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Bench-only packages: the `bench` extra, then deep-river without its dependencies: it pins torch<2.6 and
# would replace the CPU torch wheel (its other dependencies are in the extra). Not part of `make test`.
$(VENV)/.bench-installed: pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/pip install --quiet --no-deps "deep-river==0.3.4"
	touch $@

bench: $(STAMP) system-deps $(VENV)/.bench-installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
	find src -name '*.so' -delete  # the compiled kernels pip builds in place (also ones left by an older layout)
