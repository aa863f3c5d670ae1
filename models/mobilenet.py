"""MobileNetV2 with DropBlock: the mobile / edge reference model."""

from __future__ import annotations

import numbers

import keras

from tfdropblock.models import _common as c

# (expansion, output channels, repeats, stride) of each bottleneck sequence (Sandler et al.,
# 2018, table 2), and the DropBlock group of each: the group is the ResNet stage with the same
# output stride (group 3 = stride 16 like conv4_x, group 4 = stride 32 like conv5_x), so the
# ResNet-50 placement rule carries over. Group 0 (the first, stride-2 sequence) never drops.
MOBILENET_V2_CONFIG = (
    (1, 16, 1, 1, 0),
    (6, 24, 2, 2, 1),
    (6, 32, 3, 2, 2),
    (6, 64, 4, 2, 3),
    (6, 96, 3, 1, 3),
    (6, 160, 3, 2, 4),
    (6, 320, 1, 1, 4),
)
MOBILENET_V2_REPEATS = tuple(row[2] for row in MOBILENET_V2_CONFIG)


def mobilenet_v2_dropblock(input_shape=(224, 224, 3), num_classes=1000, alpha=1.0, rate=0.1,
                           block_size=7, *, repeats=MOBILENET_V2_REPEATS,
                           dropblock_groups=(3, 4), seed=None, share_channels=False,
                           gamma_mode="paper", include_top=True, pooling=None,
                           classifier_activation="softmax", name="mobilenet_v2_dropblock"):
    """MobileNetV2 with DropBlock in its stride-16 and stride-32 stages.

    The paper's ResNet-50 rule, mapped onto inverted residual blocks: in every block of the
    DropBlock groups, a DropBlock after each conv + BatchNorm (expand, depthwise, project) and
    on the identity shortcut where the block has one; group 3 (stride 16: the 64- and
    96-channel sequences) at a quarter of group 4's rate (stride 32: 160 and 320 channels).
    At inference the DropBlock layers are identities, so the exported graph is plain
    MobileNetV2 (ReLU6, depthwise convolutions: TFLite builtins only).

    Layer names follow ``keras.applications.MobileNetV2`` (``block_5_expand``,
    ``block_5_depthwise_BN``, ``block_5_project_BN``, ``block_5_add``), DropBlock layers
    ``block_5_expand_dropblock``, ``block_5_depthwise_dropblock``,
    ``block_5_project_dropblock``, ``block_5_shortcut_dropblock``.

    Args:
        input_shape: ``(height, width, channels)``, static.
        num_classes: classifier outputs (``include_top=True``).
        alpha: width multiplier (1.0 is MobileNetV2; 0.35 .. 1.4 are the usual values).
        rate: drop rate of group 4 (``1 - keep_prob``).
        block_size: int or ``(h, w)``, clamped to each map (7x7 at stride 32 for 224x224).
        repeats: blocks in each of the 7 bottleneck sequences (``(1, 2, 3, 4, 3, 3, 1)``);
            smaller values give fast test models.
        dropblock_groups: groups (1-4, by output stride 4, 8, 16, 32) that get DropBlock.
        seed: int seeds the DropBlock layers (``seed``, ``seed + 1``, ...); None at random.
        share_channels: one mask per sample shared by all channels.
        gamma_mode: ``"paper"`` or ``"exact"``.
        include_top: add global average pooling and the classifier.
        pooling: without the top: None (feature map), ``"avg"`` or ``"max"``.
        classifier_activation: activation of the classifier (None for logits).
        name: model name.

    Returns:
        A Functional ``keras.Model``.

    Example:
        >>> model = mobilenet_v2_dropblock((96, 96, 3), num_classes=2, alpha=0.35)
    """
    input_shape = c.check_input_shape(input_shape, 2)
    num_classes = c.check_positive_int(num_classes, "num_classes")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"Invalid alpha={alpha!r}: expected a float > 0 (e.g. 0.35 .. 1.4).")
    repeats = c.check_int_tuple(repeats, "repeats", len(MOBILENET_V2_CONFIG))
    groups = c.check_groups(dropblock_groups, 4)
    placer = c.DropBlockPlacer(2, rate, block_size, seed, share_channels, gamma_mode)
    rates = {0: None, **c.stage_rates(placer.rate, groups, 4)}

    inputs = keras.Input(shape=input_shape, name="input")
    x = _pad_for_stride(inputs, "Conv1_pad")
    x = keras.layers.Conv2D(_make_divisible(32 * alpha), 3, strides=2, padding="valid",
                            use_bias=False, data_format=c.DATA_FORMAT, name="Conv1")(x)
    x = _bn(x, "bn_Conv1")
    x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
    block_id = 0
    for (expansion, channels, _, stride, group), count in zip(MOBILENET_V2_CONFIG, repeats):
        for i in range(count):
            x = _inverted_residual(x, expansion, _make_divisible(channels * alpha),
                                   stride if i == 0 else 1, block_id, placer, rates[group])
            block_id += 1
    last = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = keras.layers.Conv2D(last, 1, use_bias=False, data_format=c.DATA_FORMAT,
                            name="Conv_1")(x)
    x = _bn(x, "Conv_1_bn")
    x = keras.layers.ReLU(6.0, name="out_relu")(x)
    outputs = c.head(x, 2, include_top, num_classes, pooling, classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def _inverted_residual(x, expansion, filters, stride, block_id, placer, rate):
    in_channels = x.shape[-1]
    prefix = f"block_{block_id}" if block_id else "expanded_conv"
    shortcut = x
    if expansion != 1:
        x = keras.layers.Conv2D(expansion * in_channels, 1, use_bias=False,
                                data_format=c.DATA_FORMAT, name=f"{prefix}_expand")(x)
        x = _bn(x, f"{prefix}_expand_BN")
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
        x = c.maybe_drop(x, placer, rate, f"{prefix}_expand_dropblock")
    if stride == 2:
        x = _pad_for_stride(x, f"{prefix}_pad")
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="valid" if stride == 2 else "same",
                                     use_bias=False, data_format=c.DATA_FORMAT,
                                     name=f"{prefix}_depthwise")(x)
    x = _bn(x, f"{prefix}_depthwise_BN")
    x = keras.layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(x)
    x = c.maybe_drop(x, placer, rate, f"{prefix}_depthwise_dropblock")
    x = keras.layers.Conv2D(filters, 1, use_bias=False, data_format=c.DATA_FORMAT,
                            name=f"{prefix}_project")(x)
    x = _bn(x, f"{prefix}_project_BN")
    x = c.maybe_drop(x, placer, rate, f"{prefix}_project_dropblock")
    if stride == 1 and in_channels == filters:
        shortcut = c.maybe_drop(shortcut, placer, rate, f"{prefix}_shortcut_dropblock")
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x


def _bn(x, name):
    return keras.layers.BatchNormalization(axis=-1, momentum=0.999, epsilon=1e-3, name=name)(x)


def _pad_for_stride(x, name):
    # Symmetric 1-pixel padding then a 'valid' 3x3 stride-2 conv: the output does not depend
    # on the parity of the input size (a strided 'same' conv pads asymmetrically).
    return keras.layers.ZeroPadding2D(1, data_format=c.DATA_FORMAT, name=name)(x)


def _make_divisible(value, divisor=8):
    """Round channels to a multiple of ``divisor``, never below 90% of ``value`` (as in the
    reference MobileNetV2), so depthwise and pointwise layers stay vector-friendly."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)
