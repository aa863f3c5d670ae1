"""1D reference model: sequences and audio (Conv1D + DropBlock1D)."""

from __future__ import annotations

from tfdropblock.models._residual import residual_net


def sequence_dropblock(input_shape=(1024, 1), num_classes=10, width=32, rate=0.1, block_size=7,
                       *, blocks_per_stage=(2, 2, 2, 2), dropblock_groups=(3, 4), seed=None,
                       share_channels=False, gamma_mode="paper", kernel_size=7,
                       include_top=True, pooling=None, classifier_activation="softmax",
                       name="sequence_dropblock"):
    """A 1D ResNet-18-like classifier for sequences (raw audio, sensor signals, spectrogram
    frames) with DropBlock1D dropping contiguous runs of time steps.

    Stem: Conv1D (kernel 7, stride 2) + max pool (stride 2); then four stages of basic blocks
    (two Conv1D + BatchNorm each) at ``width * (1, 2, 4, 8)`` filters, stride 2 from stage 2.
    DropBlock follows the ResNet-50 rule: in ``dropblock_groups`` after each conv + BatchNorm and
    on the shortcut, the last group at ``rate`` and each earlier one at a quarter of the next.

    Args:
        input_shape: ``(steps, channels)``, static.
        num_classes: classifier outputs.
        width: filters of the stem and first stage.
        rate: drop rate of the last group.
        block_size: DropBlock1D block length in time steps (clamped to the sequence).
        blocks_per_stage: basic blocks per stage (4 ints).
        dropblock_groups: stages (1-4) with DropBlock; ``()`` for none.
        seed: int seeds the DropBlock layers (``seed``, ``seed + 1``, ...); None at random.
        share_channels: one mask per sample shared by all channels.
        gamma_mode: ``"paper"`` or ``"exact"``.
        kernel_size: kernel of the block convolutions.
        include_top, pooling, classifier_activation, name: as in
            :func:`tfdropblock.models.resnet50_dropblock`.

    Returns:
        A Functional ``keras.Model``.

    Example:
        >>> model = sequence_dropblock((16000, 1), num_classes=35)   # one second of 16 kHz audio
    """
    return residual_net(1, input_shape, num_classes, width, rate, block_size, blocks_per_stage,
                        dropblock_groups, seed, share_channels, gamma_mode, stem_kernel=7,
                        stem_strides=2, stem_pool=True, kernel_size=kernel_size,
                        include_top=include_top, pooling=pooling,
                        classifier_activation=classifier_activation, name=name)
