# voiced: the two commands a fresh machine needs are `make run` and `make test`.
#
# Python packages come from uv.lock only (exact versions and hashes; torch and torchaudio
# as one matching pair). `make setup` never resolves anew; `make lock` does, on purpose.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .venv-uv
UV     := $(TOOLS)/bin/uv
UV_VERSION ?= 0.13.9

# uv must use the Python found here, never download one
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup system-deps uv lock lock-check uv-pin run test lint typecheck doctor pytest clean

system-deps:
	@bash .ci/system-deps

# uv itself, from hash-pinned wheels (scripts/uv-requirements.txt)
$(UV): scripts/uv-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps \
		-r scripts/uv-requirements.txt
	touch $@

uv: $(UV)

## install exactly what uv.lock names (fails, rather than re-resolving, if it is stale)
$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --extra dev --python $(PYTHON)
	touch $@

setup: system-deps lock-check $(VENV)/.installed

## re-resolve uv.lock after editing pyproject.toml (UPGRADE=1: newest allowed versions)
lock: | $(UV)
	$(UV) lock $(if $(UPGRADE),--upgrade,)

lock-check: | $(UV)
	@$(UV) lock --check --quiet || { \
		echo "uv.lock is out of date with pyproject.toml: run 'make lock' and commit uv.lock" >&2; \
		exit 1; }

uv-pin: | $(UV)
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --generate-hashes --no-header - -o /tmp/uv-req.txt
	{ sed -n '1,2p' scripts/uv-requirements.txt; cat /tmp/uv-req.txt; } > scripts/uv-requirements.txt.new
	mv scripts/uv-requirements.txt.new scripts/uv-requirements.txt

## the first command: set up, start voiced on the embedded defaults, play the samples
run: setup
	$(BIN)/voiced serve --config config/voiced.yaml --embedded-broker --demo

## the second command: set up and run the whole test suite (lint, types, doctor, tests)
test: setup lint typecheck doctor pytest

lint:
	$(BIN)/ruff check voiced plugins tests

typecheck:
	$(BIN)/mypy

doctor:
	$(BIN)/voiced doctor --config config/voiced.yaml

pytest:
	$(BIN)/pytest -q -ra --durations=15

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache state
