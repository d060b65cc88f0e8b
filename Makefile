# Every target bootstraps .venv from a bare python3 (3.11+), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_DIRS := $(wildcard src simulators tests benchmarks)

.PHONY: venv demo test lint format bench bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv resolves and installs the same packages as pip in ~20 s rather than a minute (CI and
	@# every fresh clone pay this); where uv cannot be had or fails, pip does the install.
	@# --compile-bytecode as pip does: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
	@# nothing would ever compile them, and every process would start twice as slowly.
	$(BIN)/python -m pip install --quiet 'uv>=0.4' \
	  && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]' \
	  || { echo 'make: installing with pip instead of uv' >&2; \
	       $(BIN)/python -m pip install --quiet --upgrade pip \
	       && $(BIN)/python -m pip install --quiet -e '.[dev]'; }
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trajmon demo

# Two workers: most tests wait on simulator processes and sockets, so the suite takes ~3 min
# instead of ~5 on two cores; whole files per worker (loadfile), so a module's simulator or
# recorded run is built once. More workers would crowd the tests that check real-time behaviour.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy --strict src simulators benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix $(PY_DIRS)
	$(BIN)/ruff format $(PY_DIRS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
