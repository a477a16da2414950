# voiced: the two commands a fresh machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup system-deps run test lint typecheck pytest bench clean

system-deps:
	@bash .ci/system-deps

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch and torchaudio must be matching CUDA builds from the index (they run on CPU too)
	$(BIN)/pip install -q "torch==2.11.*" "torchaudio==2.11.*"
	$(BIN)/pip install -q -e '.[dev]'
	# resemblyzer declares plain `webrtcvad`, which breaks on current setuptools;
	# webrtcvad-wheels provides the same module
	$(BIN)/pip install -q --no-deps "resemblyzer==0.1.4"
	touch $@

setup: system-deps $(VENV)/.installed

## the first command: set up, start voiced on the embedded defaults, play the samples
run: setup
	$(BIN)/voiced serve --config config/voiced.yaml --embedded-broker --demo

## the second command: set up and run the whole test suite (lint, types, tests)
test: setup lint typecheck pytest

lint:
	$(BIN)/ruff check voiced plugins tests

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q -ra --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache state
