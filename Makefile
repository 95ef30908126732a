# The two set-up commands of the README. Each creates or reuses .venv and installs what it needs.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint

run: $(STAMP)  ## the main job on the embedded default (local Ray, local MLflow)
	$(VENV)/bin/tokenmdp run demo

test: $(STAMP)  ## lint, then the whole test suite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 --dist loadgroup  # two workers; the tests that run `ray start` share one

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)
