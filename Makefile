# parkgate: every target does its own set-up (idempotent, quick when done).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UMQTT  := build/lib/umqtt/simple.py
SYSTEM := build/.system
# The board `make firmware` builds; unix-sim is the simulator's 32-bit image
# (build/firmware/unix-sim/micropython), which every simulated gate runs.
BOARD  ?= unix-sim

export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup firmware sim-image demo test lint bench clean

setup: $(STAMP) $(UMQTT) $(SYSTEM)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(UMQTT): host_tools/fetch_umqtt.py | $(STAMP)
	$(BIN)/python host_tools/fetch_umqtt.py build/lib

$(SYSTEM): host_tools/setup_system.sh
	host_tools/setup_system.sh
	mkdir -p build && touch $@

firmware: setup
	$(BIN)/python host_tools/build_firmware.py $(BOARD)

# Cached: returns at once when no frozen file, board file or manifest changed.
sim-image: setup
	@$(BIN)/python host_tools/build_firmware.py unix-sim >/dev/null

demo: setup sim-image
	$(BIN)/parkgate demo

lint: setup
	$(BIN)/python -m parkgate_tools.lint

test: setup sim-image
	$(BIN)/python -m pytest -q

bench: setup sim-image
	$(BIN)/python -m parkgate_tools.bench

clean:
	rm -rf $(VENV) build run
