# The two set-up commands of the README. Each creates or reuses .venv and installs what it needs.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lock

run: $(STAMP)  ## the main job on the embedded default (local Ray, local MLflow)
	$(VENV)/bin/tokenmdp run demo

test: $(STAMP)  ## lint, then the whole test suite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 --dist loadgroup  # two workers; the tests that run `ray start` share one

lock: $(STAMP)  ## constraints.txt anew: the newest versions pyproject.toml allows (then run `make test`)
	$(PY) -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.new
	mv constraints.new constraints.txt

# The versions the suite last passed with (constraints.txt), so a clean checkout installs what CI tested.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)
