"""tfdropblock: DropBlock layers for Keras 3 on TensorFlow, and an export kit that proves they
fold away in SavedModel, TFLite and ONNX.

Names are imported on first use, so that ``tfdropblock --help`` and the CLI's argument errors
answer without loading TensorFlow. The layers register with Keras as soon as Keras is imported,
so that ``import tfdropblock`` is all ``keras.models.load_model`` needs.
"""

from tfdropblock import _imports
from tfdropblock._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DropBlock1D": "tfdropblock.layers",
    "DropBlock2D": "tfdropblock.layers",
    "DropBlock3D": "tfdropblock.layers",
    "DropBlockScheduler": "tfdropblock.schedule",
    "dropblock_layers": "tfdropblock.layers",
    "dropblock": "tfdropblock.ops",
    "expected_drop_fraction": "tfdropblock.gamma",
    "gamma_for": "tfdropblock.gamma",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

_imports.map_checkout_subpackages(__name__, __path__[0])
_imports.register_layers_with_keras("tfdropblock.layers")
