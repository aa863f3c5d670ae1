"""tfdropblock: DropBlock layers for Keras 3 on TensorFlow, and an export kit that proves they
fold away in SavedModel, TFLite and ONNX."""

from tfdropblock.gamma import expected_drop_fraction, gamma_for
from tfdropblock.layers import DropBlock1D, DropBlock2D, DropBlock3D
from tfdropblock.ops import dropblock
from tfdropblock.schedule import DropBlockScheduler, dropblock_layers

__version__ = "0.1.0"

__all__ = [
    "DropBlock1D",
    "DropBlock2D",
    "DropBlock3D",
    "DropBlockScheduler",
    "dropblock",
    "dropblock_layers",
    "expected_drop_fraction",
    "gamma_for",
]
