# The two set-up commands of the README: `make demo` and `make test`.
# Both create their own virtualenv in .venv and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv test testbed unit demo dist clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The README's first command: what the quickstart needs (installed as root on Debian,
# otherwise named with how to get it), the virtualenv, then the quickstart on the local
# executor with live progress. See scripts/demo and docs/running.md.
demo:
	scripts/demo prereqs
	$(MAKE) venv
	VENV=$(VENV) scripts/demo run

# Pure tests only: no testbed needed.
unit: venv
	$(PY) -m pytest -q tests/unit

# Every tier. Brings the testbed up where it can (root on Debian); elsewhere says which
# tiers are skipped and why (or fails under HPCML_REQUIRE_TESTBED=1). See docs/testbed.md.
# The 25 slowest tests are listed at the end, to keep the suite's time (aim: 30 min) in view.
test: venv
	slurm/testbed/prepare-tests
	$(PY) -m pytest -q --durations=25 tests

# The single-node test cluster alone (SLURM with accounting, Apptainer, sshd); idempotent.
testbed:
	slurm/testbed/up

# The wheel and sdist (python -m build), and hpcml.pyz: one file with the pure-Python
# dependencies, run with any python3 >= 3.11 (see docs/install.md and scripts/make_zipapp.py).
dist: venv
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) scripts/make_zipapp.py dist/hpcml-*.whl -o dist/hpcml.pyz

clean:
	rm -rf $(VENV) .pytest_cache dist
