# The two commands of the README's quick start. Each creates the virtual
# environment it needs, so a fresh machine with only Python 3.11 and pip works.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1

.PHONY: venv run test unit integration bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	bin/build-matrix --to assemble

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile --durations=25 tests

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

clean-venv:
	rm -rf $(VENV)
