# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint format install dev clean readme ui-assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# torch first, pinned exactly: left to the [torch] extra's `torch>=2.13`, pip would resolve the
# newest torch on PyPI, a CUDA build of several GB; pinned, it takes the 2.13.0 CPU wheel our
# machines keep in pip's find-links, and the extra is then already satisfied
# Flower (federated training) last, without its dependencies: it pins exact versions of
# FastAPI, Starlette, uvicorn, Typer, Rich, packaging and protobuf older than ours, and runs on
# ours (the federated tests say so); its own small dependencies are named here instead
FLOWER := flwr==1.42.0 'iterators>=0.0.2,<0.0.3' 'pycryptodome>=3.18,<4' 'tomli>=2.0.1,<3' \
	'tomli-w>=1,<2' 'pathspec>=1.0.4,<2'
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(FLOWER)
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)
dev: $(DEV_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/shipyard demo

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests scripts $(wildcard bench)
	$(BIN)/ruff format --check src tests scripts $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_deploy.py

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests scripts $(wildcard bench)
	$(BIN)/ruff format src tests scripts $(wildcard bench)

# the dashboard's chart library, from the npm registry into the package (committed: installing
# shipyard needs no npm); SOURCE.json pins the version and the tarball's integrity
UPLOT := src/shipyard/ui/static/vendor/uplot
ui-assets: $(RUN_STAMP)
	$(BIN)/python scripts/ui_assets.py $(UPLOT)

readme: $(DEV_STAMP)
	$(BIN)/python -m tests.readme

# two workers, each taking whole files (a module's fixtures are built once): most tests wait on
# processes, sockets and sleeping models, so two share two cores well (25 -> 10 minutes)
test: lint
	$(BIN)/pytest -n 2 --dist loadfile --durations=30

clean:
	rm -rf $(VENV) .shipyard .shipyard-demo .pytest_cache .mypy_cache .ruff_cache
