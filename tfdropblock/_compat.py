"""Every private TensorFlow, Keras and tf2onnx API the package uses, and every difference
between the supported versions (TensorFlow 2.16 to 2.21, Keras 3.5 to 3.15), in one place.

Each shim names what it reaches into and what it falls back to when that moved; each has a test
in ``tests/test_compat.py`` that fails when the private API is gone or behaves differently, so
an upgrade breaks a test instead of silently degrading (the XLA probe's fallback, for one, is
the slow mask layout). What differs between the oldest and the newest supported stack is
listed in docs/COMPATIBILITY.md.
"""

from __future__ import annotations

# -- Versions -------------------------------------------------------------------------------


def version_tuple(version):
    """``"3.15.1"`` -> ``(3, 15, 1)``; ``"2.16.0rc0"`` -> ``(2, 16, 0)``: the release numbers,
    without pre-release or local parts."""
    import re

    parts = []
    for part in str(version).split(".")[:3]:
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts + [0] * (3 - len(parts)))


def keras_version():
    """The installed Keras's version string (``keras.__version__``)."""
    import keras

    return keras.__version__


# The first Keras release whose ``model.export(format=...)`` makes each format, read off the
# released wheels' ``Model.export``: 3.0 to 3.7 take ``format`` but write a SavedModel
# whatever it says; 3.8 checks it against ("tf_saved_model", "onnx"), 3.11 adds "openvino",
# 3.13 "litert".
KERAS_EXPORT_SINCE = {"tf_saved_model": "3.0.0", "onnx": "3.8.0", "openvino": "3.11.0",
                      "litert": "3.13.0"}
# The first Keras release whose ``model.export`` and ``ExportArchive.write_out`` take
# ``verbose`` (3.5 prints the SavedModel's signature on every write).
KERAS_EXPORT_VERBOSE_SINCE = "3.6.0"


def keras_export_missing(keras_format, version=None):
    """Why the installed Keras (or ``version``) cannot ``model.export(format=keras_format)``:
    one sentence naming the installed version and the first that has the exporter; None when
    it can. A format no Keras release exports is not this function's question (None)."""
    since = KERAS_EXPORT_SINCE.get(keras_format)
    version = version or keras_version()
    if since is None or version_tuple(version) >= version_tuple(since):
        return None
    return (f"the installed Keras {version} has no model.export(format={keras_format!r}); "
            f"it arrived in Keras {since}")


def _takes_verbose(function):
    import inspect

    try:
        return "verbose" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return False


def write_out(archive, path):
    """``ExportArchive.write_out(path, verbose=False)``; Keras before 3.6 takes no
    ``verbose`` (and prints the endpoints, which is all verbose silences)."""
    if _takes_verbose(archive.write_out):
        archive.write_out(str(path), verbose=False)
    else:
        archive.write_out(str(path))


def model_export(model, path, keras_format, **kwargs):
    """``model.export(path, format=keras_format, verbose=False, **kwargs)``, without
    ``verbose`` on a Keras before 3.6. ValueError (as Keras raises for an unknown format)
    when the installed Keras has no such exporter: Keras before 3.8 would ignore ``format``
    and silently write a SavedModel."""
    missing = keras_export_missing(keras_format)
    if missing is not None:
        raise ValueError(missing[0].upper() + missing[1:] + ".")
    if _takes_verbose(model.export):
        kwargs["verbose"] = False
    return model.export(str(path), format=keras_format, **kwargs)


# -- TensorFlow -----------------------------------------------------------------------------


def xla_probe():
    """``tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext``, or None when the
    private module moved (then :func:`in_xla_context` answers False)."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return None
    return getattr(control_flow_util, "GraphOrParentsInXlaContext", None)


_XLA_PROBE = None


def in_xla_context():
    """True while tracing for XLA (``tf.function(jit_compile=True)``, Keras ``jit_compile``).

    Without the probe this is False, which picks a layout that is correct under XLA too, only
    slower: ``test_compat`` fails in that case rather than letting it pass unnoticed.
    """
    global _XLA_PROBE
    if _XLA_PROBE is None:
        _XLA_PROBE = xla_probe() or (lambda graph: False)
    import tensorflow as tf

    return bool(_XLA_PROBE(tf.compat.v1.get_default_graph()))


def tf_initialized():
    """Whether TensorFlow's eager context has been initialised (an op ran, so thread pools
    exist): ``context.context()._initialized``. None when TensorFlow is not imported; True (the
    safe answer: no fork) when the private attribute cannot be read."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.eager import context

        return bool(context.context()._initialized)
    except Exception:
        return True


# -- Keras ----------------------------------------------------------------------------------


def keras_home():
    """``keras.src.backend.config.keras_home()``: the folder ``keras.utils.get_file`` caches in.
    Keras fixes it when it is imported (``KERAS_HOME`` then, else ``~/.keras`` or ``/tmp/.keras``),
    so a later change of the variable does not move it. None when Keras is not imported yet or
    the private accessor moved."""
    import sys

    if "keras" not in sys.modules:
        return None
    try:
        from keras.src.backend import config
    except ImportError:
        return None
    return getattr(config, "keras_home", lambda: None)()


def flatten_layers(layer, include_self=True, recursive=True):
    """``Layer._flatten_layers``: sub-layers of ``layer``, tracked attributes and nested models
    included, each once."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def functional_class():
    """Keras 3's private ``Functional`` class, or None."""
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - a Keras without it is not supported anyway
        return None
    return Functional


def nodes_by_depth(functional):
    """``Functional._nodes_by_depth``: {depth: [Node]}, depth 0 the outputs."""
    return functional._nodes_by_depth


def layer_graph(model):
    """The Functional graph of a model: the model itself, or a built Sequential's internal
    ``_functional``; None for a model without one (subclassed, or not built)."""
    functional = functional_class()
    graph = getattr(model, "_functional", None) if not isinstance(model, functional) else model
    return graph if functional is not None and isinstance(graph, functional) else None


def inputs_struct(model, default=None):
    """``Functional._inputs_struct``: the nested structure the model's inputs were given in."""
    return getattr(model, "_inputs_struct", default)


def outputs_struct(model):
    """``Functional._outputs_struct``: the nested structure of the model's outputs."""
    return model._outputs_struct


def keras_history_operation(tensor):
    """``KerasTensor._keras_history.operation``: the layer that made a symbolic tensor."""
    return tensor._keras_history.operation


# -- tf2onnx --------------------------------------------------------------------------------


def tf2onnx_convert_graph_def(graph_def, **kwargs):
    """``tf2onnx.convert._convert_common``: a frozen GraphDef to ``(ModelProto, external
    tensor storage)``, as every public tf2onnx entry point does after its own loading (which
    is what the kit needs to do differently: see
    :func:`tfdropblock.export.formats.onnx.conversion._from_function`)."""
    from tf2onnx import convert

    return convert._convert_common(graph_def, **kwargs)


def call_count(layer):
    """``len(layer._inbound_nodes)``: how many times the model calls ``layer``."""
    return len(getattr(layer, "_inbound_nodes", None) or [])


def inbound_layers(layer):
    """The layers whose outputs ``layer``'s first call took (``Node.input_tensors`` of its
    first ``_inbound_nodes``): its producers in a functional model."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if not nodes:
        return []
    return [keras_history_operation(t) for t in nodes[0].input_tensors]


def freeze_concrete_function(function):
    """``convert_to_constants.convert_variables_to_constants_v2``: ``function`` with its
    variables as constants and the functions it calls inlined (what tf2onnx freezes with)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    return convert_variables_to_constants_v2(function)
