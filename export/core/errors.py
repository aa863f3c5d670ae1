"""Error types of the export kit, one per exit status the CLI maps them to."""

from __future__ import annotations

import errno
import os


class ExportKitError(Exception):
    """Base class of the errors raised by :mod:`tfdropblock.export`."""


class InputError(ExportKitError, ValueError):
    """Bad usage or an unreadable/unloadable input (CLI exit status 2)."""


class ConversionError(ExportKitError, RuntimeError):
    """A converter or runtime failed (CLI exit status 3)."""


class OutputError(InputError):
    """The output cannot be written: ``out_dir`` unusable (under a file, read-only), or the
    filesystem refused a write (disk full, quota, file-size limit). CLI exit status 2, like
    any other problem of the environment the user gives the kit rather than of a converter."""


# errno values that mean "the filesystem refused to store this", whoever hit them.
_WRITE_ERRNOS = tuple(code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None),
                                        errno.EROFS) if code is not None)


def refused_write(fmt, error):
    """An OutputError saying that writing ``fmt``'s artifact failed, if ``error`` is a write the
    filesystem refused (see :func:`write_failure`), else None: such an error is no format's
    failure, and the other formats would meet it too."""
    reason = write_failure(error)
    if reason is None:
        return None
    return OutputError(f"writing the {fmt} artifact failed: {reason} (disk full, quota or "
                       "file-size limit?)")


def write_failure(exc):
    """The OS reason (``"No space left on device"``...) if ``exc`` or what caused it is a write
    the filesystem refused, else None.

    TensorFlow's C++ writers raise their own error types (``OutOfRangeError: ...; File too
    large``) carrying only the strerror text, hence the text match besides the errno.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            return os.strerror(exc.errno)
        text = str(exc)
        for code in _WRITE_ERRNOS:
            if os.strerror(code) in text:
                return os.strerror(code)
        exc = exc.__cause__ or exc.__context__
    return None
