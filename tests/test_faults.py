"""Faults of the world around a run, each reproduced with real processes, signals and
filesystems: inputs that are not regular files (a FIFO, a socket, a device), an output path
that cannot be written, an output folder on another filesystem than its parent or than TMPDIR,
paths that are not UTF-8, and SIGINT / SIGTERM at any moment, the commit included."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tfdropblock import cli
from tfdropblock.export import export
from tfdropblock.export.execution.atomic import STAGING_PREFIX
from fault_injection import FAULT_ENV


def _command():
    script = Path(sys.executable).with_name("tfdropblock")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tfdropblock.cli"]


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **extra}


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def _one_line_error(err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tfdropblock: error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@contextlib.contextmanager
def _deadline(seconds):
    """A call that blocks (opening a FIFO waits for a writer) fails the test, not the suite."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, tiny_image_model):
    path = tmp_path_factory.mktemp("faults") / "m.keras"
    tiny_image_model().save(path)
    return path


@pytest.fixture()
def shm_dir():
    """A folder on /dev/shm: tmpfs, another filesystem than the one tests write to."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="tfdropblock-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _other_filesystem(a, b):
    return os.stat(a).st_dev != os.stat(b).st_dev


@contextlib.contextmanager
def _tmpfs(path, size="16m"):
    """A real tmpfs mounted at ``path`` (root only: skipped where mounting is not allowed)."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- inputs that are not regular files ------------------------------------------------------------

def test_fifo_socket_and_device_inputs_are_exit_2_at_once(tmp_path, keras_file, capsys):
    fifo = {suffix: tmp_path / f"pipe{suffix}" for suffix in (".onnx", ".tflite", ".keras",
                                                              ".npz", ".bin")}
    for path in fifo.values():
        os.mkfifo(path)
    sock_path = tmp_path / "sock.onnx"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    zero = tmp_path / "zero.tflite"
    zero.symlink_to("/dev/zero")  # would read forever
    cases = [
        (["inspect", fifo[".onnx"]], fifo[".onnx"], "named pipe (FIFO)"),
        (["inspect", fifo[".tflite"]], fifo[".tflite"], "named pipe (FIFO)"),
        (["inspect", fifo[".bin"]], fifo[".bin"], "named pipe (FIFO)"),
        (["verify", fifo[".keras"], "-q"], fifo[".keras"], "named pipe (FIFO)"),
        (["export", fifo[".keras"], "--out", tmp_path / "out", "-q"], fifo[".keras"],
         "named pipe (FIFO)"),
        (["verify", keras_file, "--inputs", fifo[".npz"], "-q"], fifo[".npz"],
         "named pipe (FIFO)"),
        (["inspect", sock_path], sock_path, "socket"),
        (["inspect", zero], zero, "character device"),
    ]
    try:
        for argv, path, what in cases:
            start = time.monotonic()
            with _deadline(20):
                code = cli.main(list(map(str, argv)))
            err = capsys.readouterr().err
            assert code == 2, (argv, err)
            _one_line_error(err, f"{path}: is a {what}")
            assert time.monotonic() - start < 10, argv
    finally:
        sock.close()
    assert not (tmp_path / "out").exists()


# -- output paths checked before anything converts or moves ---------------------------------------

def test_bad_json_path_fails_before_converting_and_keeps_out(tmp_path, keras_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"previous")
    a_file = tmp_path / "F"
    a_file.write_text("x")
    (tmp_path / "adir").mkdir()
    for json_path, why in ((a_file / "r.json", "not a directory"),
                           (tmp_path / "missing" / "r.json", "no such directory"),
                           (tmp_path / "adir", "is a directory")):
        start = time.monotonic()
        code = cli.main(["export", str(keras_file), "--out", str(out), "--formats", "tflite",
                         "--quiet", "--json", str(json_path)])
        err = capsys.readouterr().err
        assert code == 2, err
        _one_line_error(err, "--json", why)
        assert time.monotonic() - start < 5, "failed only after converting"
        assert _snapshot(out) == {Path("model.tflite"): b"previous"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["F", "adir", "out"]


def test_json_that_cannot_be_written_does_not_replace_out(tmp_path, keras_file, capsys):
    """The report's folder is valid but full: the write fails, and the artifacts must not have
    moved in before it (the report goes in with them, or neither)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"previous")
    with _tmpfs(tmp_path / "full", size="64k") as full:
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        code = cli.main(["export", str(keras_file), "--out", str(out), "--formats", "tflite",
                         "--quiet", "--json", str(full / "r.json")])
        err = capsys.readouterr().err
        assert code == 2, err
        _one_line_error(err, "--json", "No space left on device")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
    assert _snapshot(out) == {Path("model.tflite"): b"previous"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "out"]


# -- an output folder on another filesystem --------------------------------------------------------

def test_out_through_a_symlink_to_another_filesystem(tmp_path, keras_file, shm_dir):
    assert _other_filesystem(tmp_path, shm_dir)
    target = shm_dir / "artifacts"
    target.mkdir()
    (target / "model.tflite").write_bytes(b"previous")
    link = tmp_path / "out"
    link.symlink_to(target)
    tmp = shm_dir / "tmp"  # TMPDIR on yet another filesystem than the link
    tmp.mkdir()
    proc = subprocess.run([*_command(), "export", str(keras_file), "--out", str(link),
                           "--formats", "tflite", "--quiet", "--json", str(link / "r.json")],
                          capture_output=True, text=True, env=_env(TMPDIR=str(tmp)),
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["model.tflite", "r.json"]
    assert (target / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert json.loads((target / "r.json").read_text())["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging litter"
    assert list(tmp.iterdir()) == []


def test_out_that_is_a_mount_point(tmp_path, tiny_image_model):
    with _tmpfs(tmp_path / "volume") as volume:
        assert _other_filesystem(volume, tmp_path)
        (volume / "model.onnx").write_bytes(b"previous")
        export(tiny_image_model(), volume, formats=("tflite", "onnx"))
        assert sorted(p.name for p in volume.iterdir()) == ["model.onnx", "model.tflite"]
        assert (volume / "model.onnx").read_bytes() != b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]


# -- paths that are not UTF-8 ----------------------------------------------------------------------

def test_non_utf8_out_and_tmpdir_export_and_print(tmp_path, keras_file):
    root = os.fsencode(tmp_path)
    out = root + b"/\xfe/out\xff"  # the parent is not UTF-8 either: staging beside it is not
    tmp = root + b"/tmp\xff"
    os.mkdir(tmp)
    env = _env(PYTHONIOENCODING="utf-8:strict")
    env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    env_bytes[b"TMPDIR"] = tmp
    command = [os.fsencode(c) for c in _command()]
    proc = subprocess.run([*command, b"export", os.fsencode(keras_file), b"--out", out,
                           b"--quiet", b"--json", root + b"/r\xff.json"], capture_output=True,
                          env=env_bytes, timeout=300)
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 0, err
    assert sorted(os.listdir(out)) == [b"model.onnx", b"model.tflite", b"saved_model"]
    with open(root + b"/r\xff.json", "rb") as f:
        assert json.loads(f.read())["ok"]
    assert os.listdir(tmp) == [], "converter temporary files left in TMPDIR"
    assert os.listdir(root + b"/\xfe") == [b"out\xff"], "no staging litter"

    # No --out: the work directory itself is in the non-UTF-8 TMPDIR.
    proc = subprocess.run([*command, b"verify", os.fsencode(keras_file), b"--quiet",
                           b"--formats", b"saved_model,onnx"], capture_output=True,
                          env=env_bytes, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "backslashreplace")
    assert os.listdir(tmp) == []


def test_non_utf8_paths_print_on_a_strict_stdout(tmp_path, tiny_image_model, monkeypatch):
    import io

    export(tiny_image_model(), tmp_path / "good", formats=("tflite",))
    bad = os.fsencode(tmp_path) + b"/m\xff.tflite"
    shutil.copy(tmp_path / "good" / "model.tflite", bad)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    code = cli.main(["inspect", os.fsdecode(bad), os.fsdecode(bad + b"-missing.onnx")])
    stdout.flush()
    stderr.flush()
    out = stdout.buffer.getvalue().decode()
    err = stderr.buffer.getvalue().decode()
    assert code == 2, err  # the missing file; the good one is still reported
    assert "m\\udcff.tflite [tflite" in out and "clean" in out, out
    _one_line_error(err, "m\\udcff.tflite-missing.onnx", "no such file")


# -- signals ---------------------------------------------------------------------------------------

SPREAD = textwrap.dedent('''
    """Exports again and again into folders holding a previous output, each time sending
    SIGINT or SIGTERM to itself DELAY seconds after every format passed (the commit point)."""
    import json, os, signal, sys, threading, time
    from pathlib import Path

    from tfdropblock import cli
    from tfdropblock.export.execution import atomic
    from tfdropblock.export.execution import staging as verifier

    model, root, plan = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    shot = {}
    commit_passed = verifier.commit_passed

    def aimed_commit_passed(*args, **kwargs):
        shot["timer"] = threading.Timer(shot["delay"], os.kill, (os.getpid(), shot["signal"]))
        shot["timer"].start()
        return commit_passed(*args, **kwargs)

    install = atomic._install

    def slow_install(src, dst):  # renames that take long enough for signals to land inside
        time.sleep(0.01)
        install(src, dst)

    def late(signum, frame):  # after main() returned, its handlers are gone
        raise KeyboardInterrupt

    verifier.commit_passed, atomic._install = aimed_commit_passed, slow_install
    signal.signal(signal.SIGTERM, late)
    results = []
    for i, (delay, signum) in enumerate(plan):
        out = root / f"out{i}"
        out.mkdir()
        for name in ("model.tflite", "model.onnx"):
            (out / name).write_bytes(b"previous")
        shot.update(delay=delay, signal=signum)
        try:
            code = cli.main(["export", model, "--out", str(out), "--formats", "tflite,onnx",
                             "--quiet", "--json", str(root / f"r{i}.json")])
        except BaseException as e:
            code = f"escaped: {type(e).__name__}"
        try:  # a signal after main() returned is outside the run
            shot["timer"].join()
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        results.append({"delay": delay, "signal": signum, "code": code,
                        "files": {p.name: p.read_bytes() == b"previous" for p in out.iterdir()},
                        "json": (root / f"r{i}.json").exists(),
                        "litter": [p.name for p in root.iterdir() if p.name.startswith(".")]})
    print(json.dumps(results))
''')


def test_signal_at_any_moment_around_the_commit_is_all_or_nothing(tmp_path, keras_file):
    """Either exit 0 with the new artifacts and report in place, or 130 / 143 with the previous
    artifacts untouched; never a staging folder or temporary file left."""
    script = tmp_path / "spread.py"
    script.write_text(SPREAD)
    root = tmp_path / "runs"
    root.mkdir()
    delays = [0.0, 0.003, 0.008, 0.012, 0.018, 0.025, 0.04, 0.06]
    plan = [[d, int(signal.SIGINT if i % 2 == 0 else signal.SIGTERM)]
            for i, d in enumerate(delays)]
    proc = subprocess.run([sys.executable, str(script), str(keras_file), str(root),
                           json.dumps(plan)], capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in results:
        assert r["litter"] == [], r
        if r["code"] == 0:
            assert r["files"] == {"model.tflite": False, "model.onnx": False}, r
            assert r["json"], r
        else:
            assert r["code"] == 128 + r["signal"], r
            assert r["files"] == {"model.tflite": True, "model.onnx": True}, r
            assert not r["json"], r


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_sigterm_ends_the_converters_and_removes_staging(tmp_path, keras_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous")
    proc = subprocess.Popen([*_command(), "export", str(keras_file), "--out", str(out),
                             "--formats", "saved_model,onnx"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            env=_env(**{FAULT_ENV: "onnx:hang"}))
    children = []
    try:
        for line in proc.stderr:  # the onnx converter is now hanging, writing into staging
            if "saved_model: passed" in line:
                break
        children = _children(proc.pid)
        assert children, "no converter process found"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in children if _alive(pid)]
    finally:
        proc.kill()
        proc.wait()
        for pid in children:  # only what this test started
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert code == 143, (code, rest)
    assert "terminated" in rest and "Traceback" not in rest, rest
    assert survivors == [], "converter processes outlived the run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging litter"
    assert _snapshot(out) == {Path("model.onnx"): b"previous"}
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())
