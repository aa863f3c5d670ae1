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
* A failed, interrupted or refused run (disk full, Ctrl-C, SIGTERM, converter error) removes
  its staging directory and leaves ``out_dir`` as it was. Only a killed process (SIGKILL, power
  loss) can leave a staging directory behind; it is never read, and is safe to delete.
* Staging is on the filesystem of the real destination: symlinks are resolved first, and an
  ``out_dir`` that is itself a mount point gets its staging directory inside it (hidden), so the
  renames never cross filesystems. A staging path the converters cannot take (not UTF-8:
  TensorFlow and tf2onnx take paths as UTF-8 strings) is reached through a UTF-8 symlink in the
  temporary directory, so the files still land beside the destination.
* The renames are one step with respect to SIGINT and SIGTERM: a signal that arrives while they
  run is held until they are done (see :func:`held_signals`), and one that arrived before the
  first rename cancels the commit (nothing moved). A caller that must report the outcome
  (the CLI) asks :func:`commits_begun` whether the point of no return was passed.

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

from tfdropblock._files import held_signals
from tfdropblock.export.core.errors import OutputError

STAGING_PREFIX = ".tfdropblock-staging-"

_commits_begun = 0


def commits_begun():
    """How many commits in this process have passed their point of no return (first rename)."""
    return _commits_begun


def _utf8(path):
    try:
        os.fsdecode(path).encode("utf-8")
        return True
    except UnicodeError:
        return False


def _nearest_existing(path):
    return next((p for p in (path, *path.parents) if os.path.lexists(p)), Path(path.anchor))


def check_out_dir(out_dir):
    """OutputError unless ``out_dir`` is, or can be created as, a writable directory.

    Creates nothing: for failing fast, before any conversion.
    """
    target = Path(os.path.realpath(out_dir))
    shown = str(Path(out_dir).absolute())
    if target.exists() and not target.is_dir():
        raise OutputError(f"Invalid out_dir={shown!r}: exists and is not a directory.")
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise OutputError(f"Invalid out_dir={shown!r}: {existing} is a file, not a directory; "
                          "expected a writable directory path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Invalid out_dir={shown!r}: cannot create files in {existing} "
                          "(not writable); expected a writable directory path.")
    return target


def check_output_file(path, what="output"):
    """OutputError unless ``path`` can be written as a file (its folder exists and takes a new
    file). For failing fast: a report that cannot be written must stop the run before anything
    is moved into place. Returns the resolved path."""
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise OutputError(f"Cannot write {what} {path}: is a directory.")
    parent = target.parent
    if not parent.is_dir():
        why = "no such directory" if not os.path.lexists(parent) else "not a directory"
        raise OutputError(f"Cannot write {what} {path}: {parent}: {why}.")
    try:  # the only sure test of "can create a file here" (read-only mounts, ACLs, root)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"Cannot write {what} {path}: {e.strerror or e} ({parent}).") from None
    return target


def _staging_parent(target):
    """Where staging goes: beside ``target``, or inside it when it is a mount point (its parent
    is another filesystem, where renames into ``target`` would fail with EXDEV)."""
    if target.is_dir() and os.stat(target).st_dev != os.stat(target.parent).st_dev:
        return target
    return target.parent


@contextlib.contextmanager
def staging_dir(out_dir):
    """A fresh directory on ``out_dir``'s filesystem, deleted on exit (errors, Ctrl-C and
    SIGTERM included). Its path is UTF-8 (see the module docstring)."""
    shown = str(Path(out_dir).absolute())
    target = check_out_dir(out_dir)
    parent = _staging_parent(target)
    name = target.name if _utf8(target.name) else "out"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=parent))
    except OSError as e:
        blocker = _nearest_existing(target)
        why = (f"{blocker} is a file, not a directory" if not blocker.is_dir()
               else f"cannot create {e.filename or parent} ({e.strerror or e})")
        raise OutputError(f"Invalid out_dir={shown!r}: {why}; expected a writable "
                          "directory path.") from None
    alias = None
    try:
        alias = _utf8_alias(path, shown)
        yield path if alias is None else alias
    finally:
        with held_signals():  # a second Ctrl-C must not leave the staging folder behind
            shutil.rmtree(path, ignore_errors=True)
            if alias is not None:
                shutil.rmtree(alias.parent, ignore_errors=True)


@contextlib.contextmanager
def work_dir():
    """A private temporary directory with a UTF-8 path, deleted on exit (signals included).

    Honours TMPDIR; when TMPDIR is not UTF-8 the directory is still made there and reached
    through a UTF-8 symlink (see :func:`_utf8_alias`).
    """
    try:
        path = Path(tempfile.mkdtemp(prefix="tfdropblock-verify-"))
    except OSError as e:
        raise OutputError(f"Cannot create the work directory in {tempfile.gettempdir()} "
                          f"({e.strerror or e}; set TMPDIR).") from None
    alias = None
    try:
        alias = _utf8_alias(path, "the work directory")
        yield path if alias is None else alias
    finally:
        with held_signals():
            shutil.rmtree(path, ignore_errors=True)
            if alias is not None:
                shutil.rmtree(alias.parent, ignore_errors=True)


def _utf8_alias(path, what):
    """None if ``path`` is UTF-8, else a UTF-8 symlink to it, in a fresh directory of the first
    UTF-8 temporary directory that takes one. TensorFlow's and tf2onnx's file APIs take paths
    as UTF-8 strings: a path with undecodable bytes (``os.fsdecode`` surrogates) fails inside
    them, so they are given this alias; renames through it still land on ``path``'s
    filesystem."""
    if _utf8(path):
        return None
    candidates = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/usr/tmp"]
    for base in dict.fromkeys(candidates):
        if not _utf8(base) or not os.path.isdir(base):
            continue
        try:
            holder = Path(tempfile.mkdtemp(prefix="tfdropblock-alias-", dir=base))
        except OSError:
            continue
        try:
            os.symlink(path, holder / "stage")
        except OSError:
            shutil.rmtree(holder, ignore_errors=True)
            continue
        return holder / "stage"
    raise OutputError(f"Cannot use {what}: its path is not UTF-8, which TensorFlow and tf2onnx "
                      "cannot write to, and no UTF-8 temporary directory takes a link to it "
                      "(set TMPDIR to a writable UTF-8 path).")


def commit_many(out_dir, items, remove=(), also=()):
    """Move each ``(source, name)`` of ``items`` to ``out_dir/name``, in order, then delete
    each ``out_dir/name`` of ``remove`` (a companion file the new artifacts no longer use), then
    rename each ``(source, destination)`` of ``also`` (files staged beside a destination
    elsewhere, such as the CLI's JSON report, which must appear exactly when the artifacts do).

    Holds an exclusive lock on ``out_dir`` throughout, so that the commits of concurrent runs
    are serialised, and holds SIGINT and SIGTERM during the renames (see the module
    docstring). Returns the destination paths. OutputError if the renames fail.
    """
    global _commits_begun
    shown = str(Path(out_dir).absolute())
    out_dir = Path(os.path.realpath(out_dir))
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with _locked(out_dir):  # waiting for another run's commit can still be interrupted
            with held_signals() as caught:
                if caught:  # stopped before the point of no return: nothing moves
                    raise KeyboardInterrupt
                _commits_begun += 1
                for src, name in items:
                    dst = out_dir / name
                    _install(Path(src), dst)
                    written.append(dst)
                for name in remove:
                    _remove(out_dir / name)
                for src, dst in also:
                    os.replace(src, dst)
    except OSError as e:
        raise OutputError(f"Invalid out_dir={shown!r}: cannot move the artifacts into "
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


