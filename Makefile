# `make demo` and `make test` work on a fresh machine: they create .venv with Python 3.12.
VENV := .venv
PY := $(VENV)/bin/python
# python3.12 may be a pyenv shim that refuses to run without a selected version, so try the
# plain command first and then the interpreters pyenv and the system keep on disk.
PY312 := $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
STAMP := $(VENV)/.installed
LINTED := nlmebayes tests models benchmarks docs scripts

.PHONY: demo test test-fast lint docs notebooks clean

$(STAMP): pyproject.toml
	@test -n "$(PY312)" || { echo "error: no working python3.12 found" >&2; exit 1; }
	$(PY312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nlmebayes.demo

# What CI runs (.ci/run): lint and type check, the docs build, then every test, on two worker
# processes with each test file kept on one worker (its module fixtures are fitted once).
test: lint docs
	$(PY) -m pytest -n 2 --dist loadfile

# While working: no NUTS sampling and no numba ODE compiles (about 1-2 minutes).
test-fast: lint
	$(PY) -m pytest -m "not sampling and not slow"

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Executed, rendered copies of the notebooks for the docs site (Jupyter comes with the extra).
notebooks: $(STAMP)
	$(PY) -m pip install --quiet -e ".[notebooks]"
	$(PY) scripts/render_notebooks.py

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/_api docs/models
