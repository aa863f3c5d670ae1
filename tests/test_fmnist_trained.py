"""A network trained on real images (the Fashion-MNIST subset in tests/data) through every
format: parity that can fail (not vacuous) in each float format, and int8 that keeps Keras's
top class on at least 95 % of real test images."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import datasets  # noqa: E402

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion-mnist")
TEST_ROWS = 500
CALIBRATION_ROWS = 200
FLOAT_FORMATS = ("saved_model", "tflite", "onnx")
INT8_FORMATS = ("tflite:int8", "onnx:int8")


@pytest.fixture(scope="session")
def trained():
    """The study's 2-D network with DropBlock (block 7) trained 2 epochs on the 3,000 shipped
    training images (about 100 steps), and its verify report on 500 real labelled test
    images, int8 calibrated on 200 real training images."""
    from benchmarks import fmnist
    from tfdropblock.export import verify

    (x, y), (xt, yt) = datasets.load_fashion_mnist(SHIPPED)
    model = fmnist.image_net("dropblock", block_size=7, width=8, seed=0)
    fmnist.train(model, fmnist.as_images(x), y, epochs=2, batch_size=64, learning_rate=1e-2)
    images, labels = fmnist.as_images(xt[:TEST_ROWS]), yt[:TEST_ROWS]
    report = verify(model, inputs={"image": images}, labels=labels, quantize=("int8",),
                    calibration={"image": fmnist.as_images(x[:CALIBRATION_ROWS])})
    return {"model": model, "images": images, "labels": labels, "report": report}


def test_the_model_learned_from_real_images(trained):
    accuracy = np.mean(np.argmax(trained["model"].predict(trained["images"], verbose=0), 1)
                       == trained["labels"])
    assert accuracy >= 0.6, accuracy  # chance is 0.1


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_parity_on_real_images_is_not_vacuous(trained, fmt):
    result = trained["report"].formats[fmt]
    parity = result.checks["parity"]
    assert parity.details["status"] != "vacuous", str(trained["report"])
    assert parity.ok is True and result.status == "passed", str(trained["report"])


@pytest.mark.parametrize("fmt", INT8_FORMATS)
def test_int8_keeps_the_top_class_on_real_test_images(trained, fmt):
    result = trained["report"].formats[fmt]
    quality = result.checks["quality"].details
    assert result.quantization["calibration"] == f"given: {CALIBRATION_ROWS} rows"
    assert quality["status"] != "vacuous", str(trained["report"])
    assert quality["worst"]["top1_agreement"] >= 0.95, quality["worst"]
    assert result.checks["twin"].ok, str(trained["report"])
    assert trained["report"].ok, str(trained["report"])


@pytest.mark.parametrize("fmt", FLOAT_FORMATS + INT8_FORMATS)
def test_labelled_accuracy_is_the_one_the_test_computes(trained, fmt):
    keras_top = np.argmax(trained["model"].predict(trained["images"], verbose=0), 1)
    accuracy = trained["report"].formats[fmt].checks["accuracy"]
    assert accuracy.details["rows"] == TEST_ROWS
    assert accuracy.details["keras_top1"] == pytest.approx(np.mean(keras_top == trained["labels"]))
    if fmt in FLOAT_FORMATS:
        assert accuracy.details["agreement"] == 1.0 and accuracy.ok is None
    else:  # the default drop judges the quantized variants, and a correct int8 is within it
        assert accuracy.details["agreement"] >= 0.95 and accuracy.ok is True, accuracy
