"""Small helpers shared by the package, the export kit and the CLI (standard library only)."""

from __future__ import annotations

# Exit statuses of the CLI, also ``Report.exit_code``.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def _first_line(text, limit):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def one_line(error, limit=400):
    """The first non-empty line of an exception's message (or of any text), capped at
    ``limit`` characters, for one-line reports; an exception without a message gives its type
    name."""
    text = _first_line(error, limit)
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text


def describe_error(error, limit=400):
    """``"TypeName: first line"``, the form every one-line error report uses (just the type
    name when the message is empty)."""
    text = _first_line(error, limit)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def use_tensorflow_backend():
    """Make Keras run on TensorFlow in this process, whatever ``KERAS_BACKEND`` (or
    ``keras.json``) says; the export kit needs TensorFlow graphs. Keras fixes its backend when it
    is imported, so this works only before; returns the sentence :func:`non_tensorflow_backend`
    gives when Keras already runs on another backend, else None."""
    import os
    import sys

    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
        return None
    return non_tensorflow_backend()


def non_tensorflow_backend():
    """None when Keras runs (or, not imported yet, will run) on TensorFlow; else one sentence
    saying what to do instead. Does not import Keras."""
    import os
    import sys

    if "keras" in sys.modules:
        name = sys.modules["keras"].backend.backend()
    else:
        name = os.environ.get("KERAS_BACKEND") or "tensorflow"
    if name == "tensorflow":
        return None
    return (f"the export kit needs Keras on the TensorFlow backend and this process runs it on "
            f"{name}: save the model (model.save('model.keras')) and run "
            f"`tfdropblock verify model.keras`, which uses TensorFlow whatever KERAS_BACKEND "
            f"says, or set KERAS_BACKEND=tensorflow before Keras is imported.")
