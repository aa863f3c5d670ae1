"""Write artifacts next to their destination, then move them into place by renames.

Guarantees, for every artifact path under ``out_dir`` (``saved_model/``, ``model.tflite``,
``model.onnx``, ``model.onnx.data``):

* A reader never sees it half-written: each run builds everything in its own hidden sibling of
  ``out_dir`` (``.tfdropblock-staging-<name>-<random>``, same filesystem), and an artifact
  enters ``out_dir`` by one rename.
* A file is replaced with ``os.replace`` (atomic). A directory that already exists is swapped
  with the new one in one ``renameat2(RENAME_EXCHANGE)`` on Linux (ext4, xfs, btrfs, tmpfs,
  overlayfs...), so the path is never missing; where the filesystem or OS lacks it, the old
  directory is renamed aside and the new one renamed in, and the path is missing between those
  two renames (microseconds). The old copy is deleted only after the new one is in place.
* Runs that write into the same ``out_dir`` at once do not interfere: staging names are unique,
  and the commits (the renames) take an exclusive ``flock`` on ``out_dir`` itself, so one
  run's set of artifacts goes in entirely before or after another's. When both wrote the same
  formats, ``out_dir`` ends up holding exactly the last committer's set.
* A failed, interrupted or refused run (disk full, Ctrl-C, converter error) removes its staging
  directory and leaves ``out_dir`` as it was. Only a killed process (SIGKILL, power loss) can
  leave a staging directory behind; it is never read, and is safe to delete.

Not guaranteed: a reader that opens several files of one artifact (``saved_model.pb`` then
``variables/``) while a commit swaps that directory can combine two versions, or find files of
the old one gone (it is deleted right after the swap); ``model.onnx.data`` goes in just before
``model.onnx``, so a reader opening ``model.onnx`` between those two renames pairs the old graph
with the new data. Readers take no lock; the ``flock`` serialises only this kit's writers, on
one host (on NFS, across hosts, it may not). Nothing is fsynced: a power loss can lose the last
write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from tfdropblock.export.errors import InputError, OutputError

STAGING_PREFIX = ".tfdropblock-staging-"


@contextlib.contextmanager
def staging_dir(out_dir):
    """A fresh directory beside ``out_dir``, deleted on exit (errors and Ctrl-C included)."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"Invalid out_dir={str(out_dir)!r}: exists and is not a directory.")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out_dir.name}-", dir=parent))
    except OSError as e:
        blocker = next((p for p in out_dir.parents if p.exists()), None)
        why = (f"{blocker} is a file, not a directory" if blocker is not None
               and not blocker.is_dir() else f"cannot create {e.filename or parent} "
               f"({e.strerror or e})")
        raise OutputError(f"Invalid out_dir={str(out_dir)!r}: {why}; expected a writable "
                          "directory path.") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def commit(staged, out_dir, names, remove=()):
    """Move each ``staged/name`` to ``out_dir/name``, replacing what was there.

    See :func:`commit_many`.
    """
    return commit_many(out_dir, [(Path(staged) / name, name) for name in names], remove)


def commit_many(out_dir, items, remove=()):
    """Move each ``(source, name)`` of ``items`` to ``out_dir/name``, in order, then delete
    each ``out_dir/name`` of ``remove`` (a companion file the new artifacts no longer use).

    Holds an exclusive lock on ``out_dir`` throughout, so that the commits of concurrent runs
    are serialised. Returns the destination paths. OutputError if the renames fail.
    """
    out_dir = Path(out_dir).absolute()
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with _locked(out_dir):
            for src, name in items:
                dst = out_dir / name
                _install(Path(src), dst)
                written.append(dst)
            for name in remove:
                _remove(out_dir / name)
    except OSError as e:
        raise OutputError(f"Invalid out_dir={str(out_dir)!r}: cannot move the artifacts into "
                          f"place ({e.strerror or e}: {e.filename or out_dir}).") from None
    return written


def _install(src, dst):
    # os.replace cannot put a directory over an existing path nor a file over a directory:
    # those cases are swapped instead, then the old copy (now at src) is deleted.
    if os.path.lexists(dst) and (src.is_dir() or dst.is_dir()):
        if _exchange(src, dst):
            _remove(src)
            return
        aside = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        try:
            os.replace(dst, aside / dst.name)
            os.replace(src, dst)
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        return
    os.replace(src, dst)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def _exchange(a, b):
    """Atomically swap paths ``a`` and ``b``; False where the OS or filesystem cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _locked(directory):
    """Exclusive advisory lock on ``directory`` (no lock file: the directory itself)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: commits are then only serialised by their renames
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    # Reading the umask with os.umask() sets it for a moment, for every thread: a file another
    # thread creates then gets umask 0. Linux shows it without changing it.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask
