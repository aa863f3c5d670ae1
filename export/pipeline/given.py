"""Checks of quantized artifacts made elsewhere: :func:`verify_quantized` runs a variant's
check sequence on an artifact and its identity twin, with Keras's outputs given."""

from __future__ import annotations

import types

from tfdropblock.export.checks.metrics import thresholds_for
from tfdropblock.export.core.errors import InputError
from tfdropblock.export.core.results import FormatResult
from tfdropblock.export.formats.quantized import check_mode
from tfdropblock.export.pipeline.sequence import check_format
from tfdropblock.export.run.registry import get


def verify_quantized(fmt, mode, artifact, twin, inputs, expected, *, layer_names=None,
                     thresholds=None):
    """The check sequence of variant ``fmt:mode`` (:func:`.sequence.check_format`) on an artifact made
    elsewhere, against its identity twin and Keras's outputs.

    Args:
        fmt, mode: the float format and the mode both were quantized with (the mode picks the
            default thresholds).
        artifact: the model quantized (as the format's quantizer returns it, or a path);
            ``twin``: the same model with every DropBlock an identity, quantized the same way
            with the same calibration batches.
        inputs: batches ``{input name: array}`` to evaluate on (not the calibration batches).
        expected: Keras's float outputs (``training=False``) on ``inputs``, named as the
            artifacts' outputs.
        layer_names: the DropBlock layers' names (:func:`~.identity.dropblock_names`), for the
            name-scope check; None looks for Keras's default names.
        thresholds: a :class:`~.metrics.Thresholds`; default: the mode's.
    Returns:
        :class:`~tfdropblock.export.core.results.FormatResult`, settled. Raises nothing for a failed
        check; InputError if an artifact cannot be parsed at all.
    """
    check_mode(fmt, mode)
    if len(inputs) != len(expected) or not inputs:
        raise InputError(f"Invalid inputs/expected: {len(inputs)} input batches and "
                         f"{len(expected)} batches of Keras outputs; expected the same number, "
                         "at least one.")
    variant = get(f"{fmt}:{mode}")
    given = GivenArtifacts(artifact, twin, list(inputs), list(expected), layer_names)
    result = FormatResult(variant.name)
    check_format(variant, given, result, lambda message: None,
                 thresholds=thresholds_for(thresholds or mode))
    return result.settle()


class GivenArtifacts:
    """The :class:`~tfdropblock.export.run.view.FormatRun` the check sequence reads, over two
    artifacts already made and Keras's outputs already computed."""

    reference_how = "given"
    calibration = (None, "given")
    io = None  # the runtimes feed and return what Keras does
    model = signature = None
    keras_exporter = False
    training_mode_leaks = label_batches = None

    def __init__(self, artifact, twin, batches, expected, layer_names):
        self._artifacts = {False: artifact, True: twin}
        self.batches, self.expected = batches, expected
        self.layer_names = layer_names
        self.settings = types.SimpleNamespace(option=lambda name: None)

    def get(self, name, reference=False):
        return self._artifacts[reference]

    def path(self, name, reference=False):
        return None

    def function(self, reference=False):
        raise NotImplementedError("the artifacts were made elsewhere: nothing is traced")
