"""Reference models with DropBlock, and a rewriter that adds DropBlock to existing models.

- :func:`resnet50_dropblock`: the paper's ResNet-50 (DropBlock in groups 3 and 4, block 7).
- :func:`mobilenet_v2_dropblock`: MobileNetV2 for the mobile / edge case.
- :func:`sequence_dropblock`: a 1D ResNet for sequences and audio (DropBlock1D).
- :func:`volume_dropblock`: a 3D ResNet for video and volumes (DropBlock3D).
- :func:`default_model`: the small, deterministic ResNet-50 that ``tfdropblock verify`` uses.
- :func:`add_dropblock`: insert DropBlock into a Functional or Sequential model.
- :func:`seeded_weights`: deterministic, non-trivial weights for any model.
"""

from tfdropblock.models._common import seeded_weights
from tfdropblock.models.mobilenet import mobilenet_v2_dropblock
from tfdropblock.models.resnet import resnet50_dropblock
from tfdropblock.models.rewrite import add_dropblock
from tfdropblock.models.sequence import sequence_dropblock
from tfdropblock.models.volume import volume_dropblock

DEFAULT_MODEL_CONFIG = {"input_shape": (64, 64, 3), "num_classes": 10, "width": 16}


def default_model(seed=0):
    """The model ``tfdropblock verify`` checks when given none: the paper's ResNet-50 layout
    (all 16 bottleneck blocks, DropBlock in groups 3 and 4 at 0.025 / 0.1, block 7) at 64x64
    input, width 16 and 10 classes, so that it exports and verifies in all three formats in
    seconds.

    Deterministic without ``keras.utils.set_random_seed``: weights come from
    :func:`seeded_weights` (BatchNorm statistics included, so that a broken fold shows) and
    the DropBlock layers are seeded ``seed``, ``seed + 1``, ...

    Args:
        seed: int seed of the weights and the DropBlock layers.

    Returns:
        A built Functional ``keras.Model`` named ``resnet50_dropblock``.

    Example:
        >>> model = default_model()
        >>> model.output_shape
        (None, 10)
    """
    model = resnet50_dropblock(**DEFAULT_MODEL_CONFIG, seed=seed)
    return seeded_weights(model, seed)


__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "add_dropblock",
    "default_model",
    "mobilenet_v2_dropblock",
    "resnet50_dropblock",
    "seeded_weights",
    "sequence_dropblock",
    "volume_dropblock",
]
