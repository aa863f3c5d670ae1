PYTHON ?= python
# The venv `make test-oldest` builds afresh for the oldest supported stack.
OLDEST_VENV ?= .venv-oldest

.PHONY: test test-jax test-oldest install demo bench

# Installs the test dependencies at the newest tested versions (constraints/newest.txt) and
# runs the whole suite (what CI runs).
test:
	$(PYTHON) -m pip install -e ".[test]" -c constraints/newest.txt
	$(PYTHON) -m pytest -n 2

# The layer tests with Keras on JAX (the [jax] extra), the other backends' tests deselected.
JAX_TESTS = tests/test_layers.py tests/test_properties.py tests/test_dynamic_shapes.py \
	tests/test_schedule_and_distribution.py tests/test_training_context.py tests/test_gamma.py \
	tests/test_jax.py
test-jax:
	$(PYTHON) -m pip install -e ".[test,jax]" -c constraints/newest.txt
	KERAS_BACKEND=jax $(PYTHON) -m pytest -n 2 -m "not tf_only" $(JAX_TESTS)

# The whole suite again on the oldest supported stack (constraints/oldest.txt: TensorFlow 2.16,
# Keras 3.5, numpy 1.26, protobuf 4), in a fresh virtual environment of its own.
test-oldest:
	python3 -m venv --clear $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -e ".[test]" -c constraints/oldest.txt
	$(OLDEST_VENV)/bin/python -m pytest -n 2

install:
	$(PYTHON) -m pip install ".[export]"

bench:
	$(PYTHON) -m benchmarks.run
