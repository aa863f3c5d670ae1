"""DropBlock layers for 1D, 2D and 3D features."""

from __future__ import annotations

import keras

from tfdropblock import ops, validation
from tfdropblock._compat import flatten_layers


class _DropBlock(keras.layers.Layer):
    """Shared implementation; subclasses fix the number of spatial axes."""

    spatial_rank = None

    def __init__(self, rate, block_size, seed=None, data_format=None, share_channels=False,
                 gamma_mode="paper", **kwargs):
        super().__init__(**kwargs)
        self.rate = validation.check_rate(rate)
        self.block_size = validation.check_block_size(block_size, self.spatial_rank)
        self.data_format = validation.check_data_format(data_format)
        self.share_channels = validation.check_bool(share_channels, "share_channels")
        self.gamma_mode = validation.check_gamma_mode(gamma_mode)
        if seed is not None and not validation.is_int(seed):
            raise TypeError(f"Invalid seed={seed!r}: expected an int or None.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # The rate lives in a variable so that a schedule can ramp it without retracing or
        # recompiling the train function.
        self.current_rate = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.rate), trainable=False,
            dtype="float32", autocast=False, name="current_rate")
        self.supports_masking = True

    def build(self, input_shape):
        ops.spatial_shape_of(input_shape, self.spatial_rank, self.data_format)
        self.built = True

    def call(self, inputs, training=False):
        # The default is False, not None, as in Keras's Dropout: a functional model records it in
        # the layer's node, so a plain model(x) passes training=False to the layer even when an
        # earlier layer whose call defaults to training=True (Resizing, CenterCrop, Random*) has
        # set training=True in Keras's call context. fit, evaluate and model(x, training=...)
        # still pass their own value, and a layer called without a node (inside a subclassed
        # model's call) inherits the caller's training value as before.
        # Checked on every call, inference included: an integer input would otherwise pass
        # through until the first training step. A Python check adds no op.
        validation.check_float_input(inputs, type(self).__name__)
        if isinstance(training, (bool, type(None))):
            # A Python branch, as Keras's Dropout: inference adds no op at all.
            return self._drop(inputs) if training else inputs
        return keras.ops.cond(keras.ops.cast(training, "bool"), lambda: self._drop(inputs),
                              lambda: inputs)

    def _drop(self, inputs):
        # The generator itself: on TensorFlow, each tf.distribute replica folds in its id
        # (tfdropblock.tf_ops.stateless_seed); on JAX, a stateless call threads its state.
        return ops.drop(inputs, self.current_rate, self.block_size, self.seed_generator,
                        self.data_format, self.share_channels, self.gamma_mode,
                        max_rate=self.rate)

    def compute_output_spec(self, inputs, *args, **kwargs):
        # Functional models build from this spec without running call(): check here too.
        validation.check_float_input(inputs, type(self).__name__)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def load_own_variables(self, store):
        # keras-cv's DropBlock2D has no variables, so its entry in a .weights.h5 or .keras file
        # is empty: accept that (a drop-in replacement must load its weights) and run at the
        # configured rate, which is all keras-cv knows. Any other layout is Keras's to judge.
        if len(store.keys()) == 0:
            self.current_rate.assign(self.rate)
            return
        super().load_own_variables(store)

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "block_size": self.block_size,
            "seed": self.seed,
            "data_format": self.data_format,
            "share_channels": self.share_channels,
            "gamma_mode": self.gamma_mode,
        }


def dropblock_layers(model):
    """Every DropBlock layer of ``model``, nested models and layers included."""
    return [layer for layer in flatten_layers(model, include_self=True, recursive=True)
            if isinstance(layer, _DropBlock)]


_DOC = """DropBlock for {what} (Ghiasi et al., 2018): drops contiguous blocks of a feature map.

    In training, seeds are drawn with probability gamma only where a whole block fits inside
    the map, each seed zeroes a block, and the output is rescaled by
    ``count(mask) / count_ones(mask)`` over the whole batch. At inference (``training`` False or
    None) the layer returns its input unchanged and adds no op to the graph.

    Args:
        rate: probability of dropping a unit, in [0, 1) (``1 - keep_prob`` of the paper).
        block_size: int, or tuple of {rank} per-axis sizes; odd or even. A block larger than
            the map is clamped to it.
        seed: int or None, seeds the layer's generator.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
        share_channels: if True one mask per sample is shared by every channel; the default,
            a mask per channel, is the paper's Algorithm 1.
        gamma_mode: ``"paper"`` uses the paper's gamma (the realised drop fraction is a little
            below ``rate`` because blocks overlap); ``"exact"`` solves for the gamma whose
            expected drop fraction equals ``rate``.

    The drop rate in use is the non-trainable variable ``current_rate``, which
    :class:`tfdropblock.DropBlockScheduler` ramps during training.

    Example:
        >>> layer = {name}(rate=0.1, block_size={example_block})
        >>> y = layer(keras.ops.ones({example_shape}), training=True)
    """


@keras.saving.register_keras_serializable(package="tfdropblock")
class DropBlock1D(_DropBlock):
    __doc__ = _DOC.format(what="sequences (batch, steps, channels)", rank=1, name="DropBlock1D",
                          example_block=5, example_shape="(2, 32, 8)")
    spatial_rank = 1


@keras.saving.register_keras_serializable(package="tfdropblock")
class DropBlock2D(_DropBlock):
    __doc__ = _DOC.format(what="images (batch, height, width, channels)", rank=2,
                          name="DropBlock2D", example_block=7, example_shape="(2, 28, 28, 16)")
    spatial_rank = 2


@keras.saving.register_keras_serializable(package="tfdropblock")
class DropBlock3D(_DropBlock):
    __doc__ = _DOC.format(what="volumes and video (batch, depth, height, width, channels)",
                          rank=3, name="DropBlock3D", example_block=3,
                          example_shape="(2, 8, 16, 16, 4)")
    spatial_rank = 3
