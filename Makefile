# `make demo` and `make test` work on a fresh machine: they create .venv with Python 3.12.
VENV := .venv
# python3.12 may be a pyenv shim that refuses to run without a selected version, so try the
# plain command first and then the interpreters pyenv and the system keep on disk.
PY312 := $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	@test -n "$(PY312)" || { echo "error: no working python3.12 found" >&2; exit 1; }
	$(PY312) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m nlmebayes.demo

test: $(STAMP)
	$(VENV)/bin/python -m ruff check nlmebayes tests models benchmarks
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check nlmebayes tests models benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
