"""3D reference model: video clips and medical volumes (Conv3D + DropBlock3D)."""

from __future__ import annotations

from tfdropblock.models._residual import residual_net


def volume_dropblock(input_shape=(16, 112, 112, 3), num_classes=10, width=32, rate=0.1,
                     block_size=3, *, blocks_per_stage=(2, 2, 2, 2), dropblock_groups=(3, 4),
                     seed=None, share_channels=False, gamma_mode="paper", kernel_size=3,
                     include_top=True, pooling=None, classifier_activation="softmax",
                     name="volume_dropblock"):
    """An R3D-18-like classifier for clips ``(frames, height, width, channels)`` or volumes
    ``(depth, height, width, channels)``, with DropBlock3D dropping cuboids (a region over a
    few consecutive frames, or a 3D patch of a scan).

    Stem: Conv3D (kernel (3, 7, 7), stride (1, 2, 2): time/depth is kept at full resolution
    early), no max pool (as R3D-18; it also keeps the inference graph to TFLite builtins,
    which have CONV_3D but no 3D max pool); then four stages of basic blocks (two Conv3D +
    BatchNorm each) at ``width * (1, 2, 4, 8)`` filters, stride 2 on every axis from stage 2.
    DropBlock follows the ResNet-50 rule: in ``dropblock_groups`` after each conv + BatchNorm and
    on the shortcut, the last group at ``rate`` and each earlier one at a quarter of the next.

    Args:
        input_shape: ``(depth, height, width, channels)``, static.
        num_classes: classifier outputs.
        width: filters of the stem and first stage.
        rate: drop rate of the last group.
        block_size: int or ``(d, h, w)`` cuboid size (clamped to the map).
        blocks_per_stage: basic blocks per stage (4 ints).
        dropblock_groups: stages (1-4) with DropBlock; ``()`` for none.
        seed: int seeds the DropBlock layers (``seed``, ``seed + 1``, ...); None at random.
        share_channels: one mask per sample shared by all channels.
        gamma_mode: ``"paper"`` or ``"exact"``.
        kernel_size: int or ``(d, h, w)`` kernel of the block convolutions.
        include_top, pooling, classifier_activation, name: as in
            :func:`tfdropblock.models.resnet50_dropblock`.

    Returns:
        A Functional ``keras.Model``.

    Example:
        >>> model = volume_dropblock((16, 112, 112, 3), num_classes=101)   # UCF-101 clips
    """
    return residual_net(3, input_shape, num_classes, width, rate, block_size, blocks_per_stage,
                        dropblock_groups, seed, share_channels, gamma_mode,
                        stem_kernel=(3, 7, 7), stem_strides=(1, 2, 2), stem_pool=False,
                        kernel_size=kernel_size,
                        include_top=include_top, pooling=pooling,
                        classifier_activation=classifier_activation, name=name)
