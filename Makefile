# Two commands do all the set-up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the dependency list changes.
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench lab clean shared-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	@# setuptools leaves data-files out of editable installs (a wheel carries it):
	@# enable the Jupyter server extension the way the wheel would.
	install -D -m 644 jupyter-config/jupyter_server_config.d/kortix_lab.json \
	  $(VENV)/etc/jupyter/jupyter_server_config.d/kortix_lab.json
	@# The same for the JupyterLab side panel: link the prebuilt labextension into the venv
	@# (rebuilds it first when its TypeScript sources changed and npm is there).
	bash scripts/build-labextension.sh
	touch $@

## demo: create the venv, install, run the offline demo and show its transcript
demo: $(INSTALLED)
	$(BIN)/kortix-lab demo

## test: install test needs, start the services the tests use, run everything
test: $(INSTALLED) lint typecheck
	bash scripts/test.sh

lint: $(INSTALLED)
	$(BIN)/ruff check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

## bench: performance suite; prints ratios measured in one run
bench: $(INSTALLED)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python benchmarks/run.py

## shared-demo: Redis + Postgres (scripts/services.sh), a fresh database, two workers and a
## Jupyter server in shared mode; 12 runs through its REST API, a summary; then all removed
shared-demo: $(INSTALLED)
	LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true $(BIN)/python -m kortix_lab.shared.demo

## lab: JupyterLab on the demo notebooks (installs JupyterLab into the venv if missing)
lab: $(INSTALLED)
	@$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/pip install --quiet "jupyterlab==4.6.6"
	$(BIN)/kortix-lab sandbox build
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
