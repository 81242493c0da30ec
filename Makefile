# maildesk: `make run` starts the daemon on its embedded defaults; `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench venv clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	mkdir -p data
	$(BIN)/maildesk db upgrade
	$(BIN)/maildesk run

lint: venv
	$(BIN)/ruff check maildesk tests bench

typecheck: venv
	$(BIN)/mypy maildesk

pytest: venv
	$(BIN)/pytest -q -ra -n 2

test: lint typecheck pytest

bench: venv
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
