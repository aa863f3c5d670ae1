"""Property-based tests of the layers over ranks, shapes, rates, blocks, formats and dtypes, on
TensorFlow (both implementations) and JAX."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backend
import stats
from tfdropblock import DropBlock1D, DropBlock2D, DropBlock3D, ops

LAYERS = {1: DropBlock1D, 2: DropBlock2D, 3: DropBlock3D}
DTYPES = backend.FLOAT_DTYPES


@st.composite
def configs(draw):
    rank = draw(st.integers(1, 3))
    max_side = {1: 24, 2: 10, 3: 6}[rank]
    spatial = tuple(draw(st.lists(st.integers(1, max_side), min_size=rank, max_size=rank)))
    block = tuple(draw(st.lists(st.integers(1, max_side + 3), min_size=rank, max_size=rank)))
    return dict(
        rank=rank,
        spatial=spatial,
        block=block,
        rate=draw(st.floats(0.0, 0.95, allow_nan=False)),
        data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
        share=draw(st.booleans()),
        mode=draw(st.sampled_from(["paper", "exact"])),
        dtype=draw(st.sampled_from(DTYPES)),
        batch=draw(st.integers(1, 3)),
        channels=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**31 - 1)),
        run=draw(st.sampled_from(backend.MODES)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_layer_properties(c):
    layer = LAYERS[c["rank"]](c["rate"], c["block"], seed=c["seed"], data_format=c["data_format"],
                              share_channels=c["share"], gamma_mode=c["mode"], dtype=c["dtype"])
    shape = ((c["batch"], *c["spatial"], c["channels"]) if c["data_format"] == "channels_last"
             else (c["batch"], c["channels"], *c["spatial"]))
    x = backend.ones(shape, c["dtype"])
    assert layer(x, training=False) is x
    # TensorFlow's XLA takes the bit-packed layout, eager the byte layout, "keras-*" the
    # keras.ops algorithm (JAX's): each must hold every property.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "IMPLEMENTATION", "keras" if c["run"].startswith("keras-") else "auto")
        y = backend.training_call(layer, c["run"].removeprefix("keras-"))(x)
    assert tuple(y.shape) == tuple(x.shape) and backend.dtype_name(y) == c["dtype"]
    values = backend.numpy(keras.ops.cast(y, "float32")).astype(np.float64)
    assert np.isfinite(values).all()

    channel_axis = -1 if c["data_format"] == "channels_last" else 1
    maps = np.moveaxis(values == 0, channel_axis, 1).reshape(-1, *c["spatial"])
    block = tuple(min(b, s) for b, s in zip(c["block"], c["spatial"]))
    area, units = np.prod(block), np.prod(c["spatial"])
    for dropped in maps:
        # Whole in-map blocks only: nothing, or at least one block's worth of units.
        assert stats.is_union_of_blocks(dropped, block)
        assert dropped.sum() == 0 or dropped.sum() >= area
        assert dropped.sum() <= units
    if c["rate"] == 0:
        assert not maps.any()

    # The rescaling preserves the total exactly on a ones input (unless all is dropped); the
    # tolerance is the rounding of one multiply in the input dtype.
    kept = values != 0
    if kept.any():
        eps = float(np.finfo(np.float32).eps) if c["dtype"] in ("float32", "float64") else {
            "float16": 2.0**-10, "bfloat16": 2.0**-7}[c["dtype"]]
        np.testing.assert_allclose(values.sum(), values.size, rtol=2 * eps)
        assert np.allclose(values[kept], values[kept][0])


DETERMINISM = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from tfdropblock import DropBlock2D, DropBlock3D

    def run(cls, shape):
        layer = cls(0.3, 3, seed=3)
        x = tf.random.stateless_uniform(shape, seed=[1, 2])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        xla = tf.function(lambda t: layer(t, training=True), jit_compile=True)
        graph = tf.function(lambda t: layer(t, training=True))
        return [y.numpy(), tape.gradient(y, x).numpy(), xla(x).numpy(), graph(x).numpy()]

    for cls, shape in [(DropBlock2D, (2, 8, 8, 3)), (DropBlock3D, (2, 4, 6, 6, 2))]:
        first, second = run(cls, shape), run(cls, shape)
        assert all(np.array_equal(a, b) for a, b in zip(first, second))
        assert (first[0] == 0).any()
    print("DETERMINISM_OK")
""")


@pytest.mark.tf_only
def test_runs_and_repeats_under_op_determinism():
    result = subprocess.run([sys.executable, "-c", DETERMINISM], capture_output=True, text=True,
                            timeout=300)
    assert "DETERMINISM_OK" in result.stdout, result.stderr[-3000:]
