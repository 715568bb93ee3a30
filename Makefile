PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
RECIPE ?= recipes/digits-resnet-prune-int8.yaml

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/compressctl apply $(RECIPE)

test: $(STAMP)
	$(VENV)/bin/ruff check compressctl tests scripts
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check compressctl tests scripts
	$(VENV)/bin/ruff format --check compressctl tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format compressctl tests scripts
	$(VENV)/bin/ruff check --fix compressctl tests scripts

clean:
	rm -rf $(VENV) out .pytest_cache
