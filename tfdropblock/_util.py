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
