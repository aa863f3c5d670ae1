"""A basic-block residual network for any spatial rank, shared by the 1D and 3D references."""

from __future__ import annotations

import keras

from tfdropblock.models import _common as c


def residual_net(spatial_rank, input_shape, num_classes, width, rate, block_size,
                 blocks_per_stage, dropblock_groups, seed, share_channels, gamma_mode,
                 stem_kernel, stem_strides, stem_pool, kernel_size, include_top, pooling,
                 classifier_activation, name):
    """Stem (conv, optional max pool), four stages of basic blocks, DropBlock as in the ResNet-50.

    Basic blocks (two convs) instead of bottlenecks: the 1D and 3D references are small
    models (ResNet-18-like, as R3D-18 for video), and the DropBlock rule carries over
    unchanged: after each conv + BatchNorm and on the shortcut, in the chosen groups, each
    group at a quarter of the next one's rate.
    """
    input_shape = c.check_input_shape(input_shape, spatial_rank)
    num_classes = c.check_positive_int(num_classes, "num_classes")
    width = c.check_positive_int(width, "width")
    blocks = c.check_int_tuple(blocks_per_stage, "blocks_per_stage", 4)
    groups = c.check_groups(dropblock_groups, 4)
    placer = c.DropBlockPlacer(spatial_rank, rate, block_size, seed, share_channels, gamma_mode)
    rates = c.stage_rates(placer.rate, groups, 4)

    inputs = keras.Input(shape=input_shape, name="input")
    x = c.conv_bn(inputs, spatial_rank, width, stem_kernel, stem_strides, "conv1")
    if stem_pool:
        x = c.max_pool(x, spatial_rank, 3, stem_strides, "pool1_pool")
    for stage, repeats in enumerate(blocks, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, repeats + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, spatial_rank, filters, kernel_size, strides,
                             projection=(block == 1 and stage > 1),
                             prefix=f"conv{stage + 1}_block{block}", placer=placer,
                             rate=rates[stage])
    outputs = c.head(x, spatial_rank, include_top, num_classes, pooling, classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def _basic_block(x, rank, filters, kernel_size, strides, projection, prefix, placer, rate):
    shortcut = x
    if projection:
        shortcut = c.conv_bn(x, rank, filters, 1, strides, f"{prefix}_0", relu=False)
    shortcut = c.maybe_drop(shortcut, placer, rate, f"{prefix}_0_dropblock")
    x = c.conv_bn(x, rank, filters, kernel_size, strides, f"{prefix}_1")
    x = c.maybe_drop(x, placer, rate, f"{prefix}_1_dropblock")
    x = c.conv_bn(x, rank, filters, kernel_size, 1, f"{prefix}_2", relu=False, zero_gamma=True)
    x = c.maybe_drop(x, placer, rate, f"{prefix}_2_dropblock")
    x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)
