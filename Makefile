PYTHON ?= python

.PHONY: test test-jax install demo bench

# Installs the test dependencies and runs the whole suite (what CI runs).
test:
	$(PYTHON) -m pip install -e ".[test]"
	$(PYTHON) -m pytest -n 2

# The layer tests with Keras on JAX (the [jax] extra), the other backends' tests deselected.
JAX_TESTS = tests/test_layers.py tests/test_properties.py tests/test_dynamic_shapes.py \
	tests/test_schedule_and_distribution.py tests/test_training_context.py tests/test_gamma.py \
	tests/test_jax.py
test-jax:
	$(PYTHON) -m pip install -e ".[test,jax]"
	KERAS_BACKEND=jax $(PYTHON) -m pytest -n 2 -m "not tf_only" $(JAX_TESTS)

install:
	$(PYTHON) -m pip install ".[export]"

bench:
	$(PYTHON) -m benchmarks.run
