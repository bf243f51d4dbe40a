# Two commands on a fresh machine: `make demo` and `make test`. Both create the venv and install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELHOUSE := .wheelhouse
GITHUB_OPENAPI := .cache/github-openapi
GITHUB_OPENAPI_VERSION := 23.0.2

.PHONY: install bytecode demo test lint layers typecheck unit integration bench api clean compose-check migration postgres pg sandbox sshd github-openapi chromium

$(STAMP): pyproject.toml
	@command -v git >/dev/null || (echo "git is required (apt-get install git)" && exit 1)
	@echo "Creating $(VENV) and installing the project (first run only; about a minute with uv)"
	$(PYTHON) -m venv $(VENV)
	@scripts/install.sh $(BIN)/python
	@touch $(STAMP)

install: $(STAMP)

bytecode: install  ## the project's own modules byte-compiled (what changed since; a fraction of a second)
	@scripts/compile-bytecode.sh $(BIN)/python

demo: bytecode sandbox
	$(BIN)/orchestrator demo

lint: install
	$(BIN)/ruff check .

layers: install  ## the import contracts in pyproject.toml: layering, graph schemas, no circles
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

unit: install sandbox $(WHEELHOUSE)
	$(BIN)/pytest tests/unit -q

integration: install postgres sandbox sshd chromium github-openapi $(WHEELHOUSE)
	$(BIN)/pytest tests/integration -q

test: bytecode lint layers typecheck postgres sandbox sshd chromium github-openapi $(WHEELHOUSE)
	$(BIN)/pytest -q

sshd:  ## OpenSSH's server, a real remote host the tests start on a loopback port (apt-get as root if missing)
	@scripts/ensure-sshd.sh

chromium:  ## Debian's chromium (and a font), the browser the console tests drive with Playwright (apt-get as root if missing)
	@command -v chromium >/dev/null 2>&1 || scripts/apt-install.sh chromium fonts-dejavu-core

sandbox:  ## bubblewrap, the sandbox generated code runs in (apt-get as root if missing)
	@scripts/ensure-bubblewrap.sh

# Wheels the tests build project venvs from, offline (tests never reach a package index).
$(WHEELHOUSE): tests/wheelhouse.txt | install
	$(BIN)/python -m pip download --disable-pip-version-check -q --only-binary :all: -d $(WHEELHOUSE) -r tests/wheelhouse.txt
	@touch $(WHEELHOUSE)

github-openapi: $(GITHUB_OPENAPI)/.installed-$(GITHUB_OPENAPI_VERSION)  ## GitHub's OpenAPI description (npm @octokit/openapi) the fake GitHub is validated against

$(GITHUB_OPENAPI)/.installed-$(GITHUB_OPENAPI_VERSION):
	@command -v npm >/dev/null || scripts/apt-install.sh npm
	npm install --prefix $(GITHUB_OPENAPI) --no-save --no-audit --no-fund --loglevel=error @octokit/openapi@$(GITHUB_OPENAPI_VERSION)
	@touch $@

postgres:  ## the PostgreSQL server binaries the tests start throwaway clusters with (apt-get as root if missing)
	@scripts/ensure-postgres.sh

pg: install postgres  ## a throwaway PostgreSQL on 127.0.0.1 for trying DATABASE_URL by hand; prints its URL, Ctrl-C stops
	$(BIN)/python -m tests.fixtures.postgres

bench: bytecode
	$(BIN)/python benchmarks/run.py

api: install
	$(BIN)/orchestrator api

clean:
	rm -rf $(VENV) $(WHEELHOUSE) .cache .orchestrator .pytest_cache .mypy_cache .ruff_cache *.egg-info

# A throwaway password only for interpolation: compose.yaml demands one and defaults none.
compose-check:  ## validate compose.yaml with `docker compose`, else docker-compose (Debian's, installed if missing)
	@if docker compose version >/dev/null 2>&1; then compose="docker compose"; \
	else command -v docker-compose >/dev/null 2>&1 || scripts/apt-install.sh docker-compose; compose=docker-compose; fi; \
	POSTGRES_PASSWORD=compose-check $$compose -f compose.yaml config --quiet && echo "compose.yaml is valid ($$compose)"

migration: install  ## make migration MSG="what changed": autogenerate an Alembic revision from the models
	$(BIN)/python -c "import asyncio, sys; from core.db import new_revision; asyncio.run(new_revision(sys.argv[1]))" "$(MSG)"
