"""Every reference model, at a small size, exports to SavedModel, TFLite and ONNX with its
DropBlock layers folded away (checked by the export kit's verify)."""

import pytest

from tfdropblock.models import (default_model, mobilenet_v2_dropblock, resnet50_dropblock,
                                seeded_weights, sequence_dropblock, volume_dropblock)

pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")

# Seeded, non-trivial weights (BatchNorm statistics included) so that parity means something.
BUILDERS = {
    "resnet50": lambda: resnet50_dropblock((32, 32, 3), 4, width=4,
                                           blocks_per_stage=(1, 1, 1, 1), seed=0),
    "mobilenet_v2": lambda: mobilenet_v2_dropblock((32, 32, 3), 4, alpha=0.35,
                                                   repeats=(1,) * 7, seed=0),
    "sequence": lambda: sequence_dropblock((64, 2), 4, width=4, blocks_per_stage=(1, 1, 1, 1),
                                           seed=0),
    "volume": lambda: volume_dropblock((8, 16, 16, 1), 4, width=4,
                                       blocks_per_stage=(1, 1, 1, 1), seed=0),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_reference_model_verifies_in_all_formats(name):
    from tfdropblock.export import verify

    report = verify(seeded_weights(BUILDERS[name](), seed=1))
    assert report.ok, report.to_dict()


def test_default_model_verifies_in_all_formats():
    from tfdropblock.export import verify

    report = verify(default_model())
    assert report.ok, report.to_dict()
