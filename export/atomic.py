"""Write artifacts next to their destination, then move them into place in one rename.

A reader never sees a half-written artifact, and a failed or interrupted run leaves an existing
output exactly as it was: everything is built in a hidden sibling of the output directory (same
filesystem, so ``os.replace`` is a rename) that is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

STAGING_PREFIX = ".tfdropblock-staging-"


@contextlib.contextmanager
def staging_dir(out_dir):
    """A fresh directory beside ``out_dir``, deleted on exit (errors and Ctrl-C included)."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        from tfdropblock.export.errors import InputError

        raise InputError(f"Invalid out_dir={str(out_dir)!r}: exists and is not a directory.")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out_dir.name}-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def commit(staged, out_dir, names):
    """Move each ``staged/name`` to ``out_dir/name``, replacing what was there.

    Files go in with one atomic ``os.replace``. A directory cannot be replaced in one step when
    the destination exists, so the old one is first renamed aside, then deleted once the new one
    is in place: a crash between the two renames leaves the old copy recoverable beside it.
    """
    staged, out_dir = Path(staged), Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        src, dst = staged / name, out_dir / name
        if src.is_dir() and dst.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out_dir))
            os.replace(dst, aside / name)
            os.replace(src, dst)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            if dst.is_dir():
                shutil.rmtree(dst)
            os.replace(src, dst)
        written.append(dst)
    return written


def write_bytes(path, data):
    """Write ``data`` to a temporary sibling of ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600 files; an artifact gets the permissions open() would give it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
