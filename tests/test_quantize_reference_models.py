"""Every reference model in every quantized mode: DropBlock folds away and the quantized
artifact is bit-identical to its DropBlock-free twin quantized the same way."""

import pytest

from tfdropblock.export import verify
from tfdropblock.export.formats.quantized import all_modes


def _reference_models():
    from tfdropblock import models

    return {
        # The ResNet-50 layout with one bottleneck block per group (default_model, all 16, goes
        # through every float format in test_models_export).
        "resnet50": lambda: models.seeded_weights(models.resnet50_dropblock(
            (64, 64, 3), num_classes=10, width=16, blocks_per_stage=(1, 1, 1, 1), seed=0), 0),
        "mobilenet_v2": lambda: models.seeded_weights(models.mobilenet_v2_dropblock(
            (32, 32, 3), num_classes=10, alpha=0.35, repeats=(1, 1, 1, 1, 1, 1, 1),
            classifier_activation=None, seed=0), 0),
        "sequence": lambda: models.seeded_weights(
            models.sequence_dropblock((128, 1), num_classes=10, width=8, seed=0), 0),
        "volume": lambda: models.seeded_weights(
            models.volume_dropblock((8, 32, 32, 3), num_classes=10, width=8, seed=0), 0),
    }


@pytest.mark.parametrize("name", sorted(_reference_models()))
def test_reference_model_folds_away_in_every_quantized_mode(name):
    model = _reference_models()[name]()
    report = verify(model, formats=("tflite", "onnx"), quantize=all_modes())
    quantized = {f: r for f, r in report.formats.items() if ":" in f}
    assert set(quantized) == {"tflite:float16", "tflite:dynamic", "tflite:int8",
                              "onnx:dynamic", "onnx:int8"}
    for fmt, result in quantized.items():
        assert result.checks["structure"].ok, (fmt, str(report))
        assert result.checks["twin"].ok, (fmt, str(report))
        assert result.checks["determinism"].ok, (fmt, str(report))
    assert report.ok, str(report)
