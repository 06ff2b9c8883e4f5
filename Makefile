# The two commands of the README's quick start. Each creates the virtual
# environment it needs, so a fresh machine with only Python 3.11 and pip works.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1

.PHONY: venv run test unit integration modal-scenarios bench clean-venv

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

# One line per production scenario (full run, OOM kill, preemption, hung worker, killed coordinator,
# two runs on one id, stale deploy, bad inputs) against the emulated Modal; `make test` runs them too.
modal-scenarios: $(STAMP)
	$(PY) -m pytest -m modal_scenarios -v -p no:cacheprovider --no-header -n 0 tests/reliability/test_modal_scenarios.py

clean-venv:
	rm -rf $(VENV)
