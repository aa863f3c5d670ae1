"""ResNet-50 with DropBlock where the paper and its authors' code put it."""

from __future__ import annotations

import keras

from tfdropblock.models import _common as c

RESNET50_BLOCKS = (3, 4, 6, 3)


def resnet50_dropblock(input_shape=(224, 224, 3), num_classes=1000, width=64, rate=0.1,
                       block_size=7, *, blocks_per_stage=RESNET50_BLOCKS,
                       dropblock_groups=(3, 4), seed=None, share_channels=False,
                       gamma_mode="paper", stride_in_3x3=True, zero_init_residual=True,
                       include_top=True, pooling=None, classifier_activation="softmax",
                       name="resnet50_dropblock"):
    """ResNet-50 (bottleneck v1, post-activation) with DropBlock as in Ghiasi et al. (2018).

    Placement follows the authors' TPU ResNet (``resnet_model.py``): in every bottleneck block
    of the DropBlock groups, a DropBlock after each conv + BatchNorm (after the ReLU for the
    first two, before the residual add for the third) and one on the shortcut (projection or
    identity), all with the same block size. Groups are the four stages (conv2_x .. conv5_x =
    groups 1 .. 4); the last group runs at ``rate`` and each earlier one at a quarter of the
    next, so the paper's setting (groups 3 and 4, keep_prob 0.9) gives conv4_x at 0.025 and
    conv5_x at 0.1. As in the authors' code the stride sits in the 3x3 convolution, strided
    convolutions use fixed padding, BatchNorm uses momentum 0.9 / epsilon 1e-5 and the last
    BatchNorm of each block starts at zero. Blocks larger than a map are clamped to it (conv5_x
    is 7x7 at 224x224, so block 7 drops whole channels there).

    Layer names follow ``keras.applications.ResNet50``: ``conv4_block2_1_conv``,
    ``conv4_block2_1_bn``, ``conv4_block2_1_relu``, ``conv4_block2_1_dropblock``, the shortcut
    ``conv4_block1_0_conv`` / ``..._0_bn`` / ``..._0_dropblock``, ``..._add``, ``..._out``.

    Args:
        input_shape: ``(height, width, channels)``, static (DropBlock needs static maps).
        num_classes: classifier outputs (``include_top=True``).
        width: filters of the stem and of the first stage's bottleneck (64 in ResNet-50);
            stage ``i`` uses ``width * 2**i`` and outputs four times that.
        rate: drop rate of the last DropBlock group (``1 - keep_prob``; the paper uses 0.1).
        block_size: DropBlock block size, int or ``(h, w)`` (the paper uses 7).
        blocks_per_stage: bottleneck blocks in each of the 4 stages (``(3, 4, 6, 3)`` is
            ResNet-50; smaller tuples give fast test models).
        dropblock_groups: stages (1-4) that get DropBlock; ``()`` for a plain ResNet.
        seed: int seeds the DropBlock layers (``seed``, ``seed + 1``, ...); None draws at random.
        share_channels: one mask per sample shared by all channels (the paper: per channel).
        gamma_mode: ``"paper"`` or ``"exact"``, see :class:`tfdropblock.DropBlock2D`.
        stride_in_3x3: stride in the 3x3 conv (authors' code, "v1.5") rather than the first 1x1.
        zero_init_residual: start the last BatchNorm scale of each block at zero.
        include_top: add global average pooling and the classifier.
        pooling: without the top: None (feature map), ``"avg"`` or ``"max"``.
        classifier_activation: activation of the classifier (None for logits).
        name: model name.

    Returns:
        A Functional ``keras.Model``.

    Example:
        >>> model = resnet50_dropblock()                          # the paper's model
        >>> small = resnet50_dropblock((64, 64, 3), 10, width=8, blocks_per_stage=(1, 1, 2, 1))
    """
    input_shape = c.check_input_shape(input_shape, 2)
    num_classes = c.check_positive_int(num_classes, "num_classes")
    width = c.check_positive_int(width, "width")
    blocks = c.check_int_tuple(blocks_per_stage, "blocks_per_stage", 4)
    groups = c.check_groups(dropblock_groups, 4)
    placer = c.DropBlockPlacer(2, rate, block_size, seed, share_channels, gamma_mode)
    rates = c.stage_rates(placer.rate, groups, 4)

    inputs = keras.Input(shape=input_shape, name="input")
    x = c.conv_bn(inputs, 2, width, 7, 2, "conv1")
    x = c.max_pool(x, 2, 3, 2, "pool1_pool")
    for stage, repeats in enumerate(blocks, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, repeats + 1):
            x = _bottleneck(
                x, filters, strides=(2 if stage > 1 and block == 1 else 1),
                projection=(block == 1), prefix=f"conv{stage + 1}_block{block}",
                placer=placer, rate=rates[stage], stride_in_3x3=stride_in_3x3,
                zero_init_residual=zero_init_residual)
    outputs = c.head(x, 2, include_top, num_classes, pooling, classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def _bottleneck(x, filters, strides, projection, prefix, placer, rate, stride_in_3x3,
                zero_init_residual):
    shortcut = x
    if projection:
        shortcut = c.conv_bn(x, 2, 4 * filters, 1, strides, f"{prefix}_0", relu=False)
    # The authors drop the shortcut too, identity or projection: otherwise the unregularised
    # shortcut carries the information DropBlock removes from the residual branch.
    shortcut = c.maybe_drop(shortcut, placer, rate, f"{prefix}_0_dropblock")
    x = c.conv_bn(x, 2, filters, 1, 1 if stride_in_3x3 else strides, f"{prefix}_1")
    x = c.maybe_drop(x, placer, rate, f"{prefix}_1_dropblock")
    x = c.conv_bn(x, 2, filters, 3, strides if stride_in_3x3 else 1, f"{prefix}_2")
    x = c.maybe_drop(x, placer, rate, f"{prefix}_2_dropblock")
    x = c.conv_bn(x, 2, 4 * filters, 1, 1, f"{prefix}_3", relu=False,
                  zero_gamma=zero_init_residual)
    x = c.maybe_drop(x, placer, rate, f"{prefix}_3_dropblock")
    x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)
