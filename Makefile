# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install into it first (quick when it is already there).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-slow install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch is pinned to the local CPU build; an unpinned torch pulls gigabytes of CUDA packages.
	$(PIP) install --quiet -e ".[test]"
	# torchrec's own metadata would pull the CUDA fbgemm-gpu: install it without dependencies.
	$(PIP) install --quiet --no-deps torchrec==1.8.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/terarec demo

test: $(STAMP)
	$(PY) -m pytest -q

# The slow tests, among them the full fuzz suite of tests/fuzz (every data source x every kind of
# malformed input through `terarec data prepare`; `python bench/fuzz.py` prints its figures).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
