PYTHON ?= python

.PHONY: test install demo bench

# Installs the test dependencies and runs the whole suite (what CI runs).
test:
	$(PYTHON) -m pip install -e ".[test]"
	$(PYTHON) -m pytest -n 2

install:
	$(PYTHON) -m pip install ".[export]"

bench:
	$(PYTHON) -m benchmarks.run
