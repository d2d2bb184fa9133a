# One virtual environment, every package installed editable into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmarks' peer (LangGraph) in a virtual environment of its own, so its dependencies never enter .venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
PACKAGES := libs/contracts libs/servicekit services/gateway services/orchestrator \
	services/workflow-engine services/memory services/neptune
PROJECTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)

.PHONY: install up test lint typecheck unit docs bench clean

$(STAMP): constraints.txt requirements-dev.txt $(PROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements-dev.txt \
		$(foreach p,$(PACKAGES),-e ./$(p))
	touch $(STAMP)

install: $(STAMP)

$(BENCH_STAMP): constraints.txt bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -c constraints.txt -r bench/requirements.txt
	touch $(BENCH_STAMP)

## Start infrastructure (when missing) and all five services; prints the gateway URL and API key.
up: install
	$(BIN)/python -m servicekit.devstack up

## ruff, import-linter (layering), mypy --strict, then the whole suite (unit, integration, system, deploy checks).
test: lint typecheck
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -q -m "not system" libs/contracts services/*/tests/unit

## Regenerate the JSON Schemas of every message and the OpenAPI reference from the code.
docs: install
	$(BIN)/python -m contracts.schema_export docs/schemas
	$(BIN)/python -m gateway.openapi docs/api

bench: install $(BENCH_STAMP)
	$(BIN)/python bench/eventstore.py
	$(BIN)/python bench/command_path.py
	$(BIN)/python bench/workflows.py
	$(BIN)/python bench/agent_runtime.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/team_runs.py
	$(BIN)/python bench/neptune.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .venv-llm .venv-llm.lock .data
