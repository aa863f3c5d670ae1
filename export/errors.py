"""Error types of the export kit, one per exit status the CLI maps them to."""

from __future__ import annotations


class ExportKitError(Exception):
    """Base class of the errors raised by :mod:`tfdropblock.export`."""


class InputError(ExportKitError, ValueError):
    """Bad usage or an unreadable/unloadable input (CLI exit status 2)."""


class ConversionError(ExportKitError, RuntimeError):
    """A converter or runtime failed (CLI exit status 3).

    ``format`` names the artifact format; ``unsupported_ops`` lists the TensorFlow ops a converter
    could not lower, when it said so.
    """

    def __init__(self, message, format=None, unsupported_ops=()):
        super().__init__(message)
        self.format = format
        self.unsupported_ops = tuple(unsupported_ops)
