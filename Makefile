# Two commands on a fresh machine: `make demo` and `make test`. Both create the venv and install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit integration bench api clean compose-check migration

$(STAMP): pyproject.toml
	@command -v git >/dev/null || (echo "git is required (apt-get install git)" && exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/orchestrator demo

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

test: lint typecheck
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/run.py

api: install
	$(BIN)/orchestrator api

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache .mypy_cache .ruff_cache *.egg-info

compose-check:
	@if docker compose version >/dev/null 2>&1; then docker compose config --quiet; \
	else docker-compose -f compose.yaml config --quiet; fi && echo "compose.yaml is valid"

migration: install  ## make migration MSG="what changed": autogenerate an Alembic revision from the models
	$(BIN)/python -c "import asyncio, sys; from core.db import new_revision; asyncio.run(new_revision(sys.argv[1]))" "$(MSG)"
