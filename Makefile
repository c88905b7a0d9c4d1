# dgmn_mm: `make demo` and `make test` set everything up (idempotent) and run.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast clean

setup:
	VENV=$(abspath $(VENV)) bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

# everything but the slow marks (config smoke runs, whole-table checks, subprocess runs, benchmarks, the demo);
# one OpenMP thread: the fast tests use small tensors, where a second thread costs more than it gives
test-fast: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -m "not slow" $(PYTEST_ARGS) tests

clean:
	rm -rf work_dirs build/mmcv .pytest_cache
