# One command sets up and runs each job; the venv is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU build first; a bare `torch` would pull the CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's chromium through Playwright, which never downloads a browser.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

run: setup
	$(BIN)/engram localnet

test: setup $(CHROMIUM)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/store_bench.py --json bench/results/store_bench.json
	$(BIN)/python bench/miner_bench.py --json bench/results/miner_bench.json
	$(BIN)/python bench/embed_bench.py --json bench/results/embed_bench.json
	$(BIN)/python bench/retrieval_bench.py --json bench/results/retrieval_bench.json
