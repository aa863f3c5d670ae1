"""Reliability of the export kit against what the world does to it: corrupted artifacts fed to
``inspect``, two runs writing one output folder at once, an output folder that cannot be
written or a disk that fills up mid-write, models at the 2 GiB protobuf limit (ONNX external
data), and untrusted model files given to ``verify``. Real converters and runtimes throughout;
the only thing simulated is a full disk, by a real file-size limit (RLIMIT_FSIZE)."""

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tfdropblock import cli
from tfdropblock.export import (ConversionError, InputError, OutputError, export, inspect,
                                verify)
from tfdropblock.export.execution import atomic
from tfdropblock.export.formats.onnx import conversion as onnx_export
from tfdropblock.export.execution.atomic import commit_many, staging_dir
from tfdropblock.export.formats.onnx.reader import load_onnx
from tfdropblock.export.formats.tflite.reader import tflite_graph


@pytest.fixture(scope="module")
def model(tiny_image_model):
    return tiny_image_model()


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("reliability") / "out"
    export(model, out)
    return out


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def _assert_one_line(message, *needles):
    assert message and "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


# -- 1. inspect on corrupted artifacts ------------------------------------------------------------

class _Hang(Exception):
    pass


def _bounded(seconds):
    """Context manager: _Hang if the body runs longer than ``seconds`` (pure-Python parsers
    see the signal between bytecodes)."""
    class Bound:
        def __enter__(self):
            def on_alarm(signum, frame):
                raise _Hang()
            self.previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, seconds)

        def __exit__(self, *exc):
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
            return False

    return Bound()


def _mutants(data, seed, count):
    """Seeded mutations of ``data``: truncations at evenly spread offsets, then bit flips,
    byte-range overwrites, chunk duplications and 32-bit words overwritten with extreme
    values (flatbuffer offsets and lengths, protobuf varints)."""
    rng = random.Random(seed)
    n = len(data)
    cases = [("truncate", data[:cut]) for cut in sorted({1 + i * (n - 2) // 39 for i in range(40)})]
    while len(cases) < count:
        b = bytearray(data)
        kind = rng.choice(("flip", "overwrite", "duplicate", "word"))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            at, size = rng.randrange(n), rng.randint(1, 32)
            b[at:at + size] = bytes(rng.randrange(256) for _ in range(size))
        elif kind == "duplicate":
            start = rng.randrange(n)
            chunk = b[start:start + rng.randint(1, 256)]
            at = rng.randrange(n)
            b[at:at] = chunk
        else:
            at = rng.randrange(0, n - 4) & ~3
            b[at:at + 4] = struct.pack("<I", rng.choice((0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000,
                                                         n, n - 4, rng.randrange(2**32))))
        cases.append((kind, bytes(b[:max(1, len(b))])))
    return cases


# The parsers' own messages for a corrupted file; the catch-all at the parser boundary says
# "cannot parse", and must not be what handles ordinary corruption.
_BOUNDARY = "cannot parse this"


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "saved_model"])
def test_inspect_survives_mutated_artifacts(artifacts, tmp_path, fmt):
    if fmt == "saved_model":
        target = tmp_path / "saved_model"
        shutil.copytree(artifacts / "saved_model", target)
        victim = target / "saved_model.pb"
    else:
        target = victim = tmp_path / f"model.{fmt}"
        shutil.copy(artifacts / f"model.{fmt}", target)
    original = victim.read_bytes()
    outcomes = {"clean": 0, "findings": 0, "InputError": 0}
    slowest = 0.0
    seed = {"tflite": 1, "onnx": 2, "saved_model": 3}[fmt]
    for i, (kind, data) in enumerate(_mutants(original, seed=seed, count=160)):
        victim.write_bytes(data)
        start = time.perf_counter()
        try:
            with _bounded(5):
                findings = inspect(target)
            outcomes["findings" if findings else "clean"] += 1
        except _Hang:
            pytest.fail(f"{fmt} case {i} ({kind}): inspect ran over 5 s")
        except InputError as e:
            outcomes["InputError"] += 1
            _assert_one_line(str(e), target.name)
            assert _BOUNDARY not in str(e), f"{fmt} case {i} ({kind}): parser raised {e}"
        slowest = max(slowest, time.perf_counter() - start)
    assert outcomes["InputError"] >= 40, outcomes  # the truncations at least
    print(f"{fmt}: {outcomes}, slowest case {slowest * 1000:.0f} ms")


def _aliased_tflite(tensors, name_bytes):
    """A flatbuffer that is valid by its offsets: one subgraph listing ``tensors`` entries that
    all point at one tensor table whose name is ``name_bytes`` long. About 4 * tensors +
    name_bytes bytes; a reader that trusts it materialises tensors * name_bytes bytes."""
    b = bytearray(b"\0\0\0\0TFL3")

    def put(fmt, *values):
        at = len(b)
        b.extend(struct.pack(fmt, *values))
        return at

    def point(slot, target):
        struct.pack_into("<I", b, slot, target - slot)

    model_vtable = put("<HHHHHxx", 10, 8, 0, 0, 4)  # Model: only subgraphs (vtable slot 8)
    model = put("<i", 0)
    struct.pack_into("<i", b, model, model - model_vtable)
    subgraphs_slot = put("<I", 0)
    struct.pack_into("<I", b, 0, model)
    subgraphs = put("<II", 1, 0)
    sub_vtable = put("<HHHxx", 6, 8, 4)  # SubGraph: only tensors (vtable slot 4)
    sub = put("<i", 0)
    struct.pack_into("<i", b, sub, sub - sub_vtable)
    tensors_slot = put("<I", 0)
    point(subgraphs_slot, subgraphs)
    point(subgraphs + 4, sub)
    vector = put("<I", tensors)
    b.extend(b"\0" * 4 * tensors)
    tensor_vtable = put("<HHHHHH", 12, 8, 0, 0, 0, 4)  # Tensor: only name (vtable slot 10)
    tensor = put("<i", 0)
    struct.pack_into("<i", b, tensor, tensor - tensor_vtable)
    name_slot = put("<I", 0)
    point(tensors_slot, vector)
    for i in range(tensors):
        point(vector + 4 + 4 * i, tensor)
    name = put("<I", name_bytes)
    b.extend((b"drop_block2d/" + b"x" * name_bytes)[:name_bytes])
    point(name_slot, name)
    return bytes(b)


def test_tflite_reader_refuses_aliased_tables_in_linear_time(tmp_path):
    # The reader reads what this layout says (a small case is read in full)...
    small = tflite_graph(_aliased_tflite(3, 20))
    assert [n for _, n in small.names] == ["drop_block2d/xxxxxxx"] * 3
    # ... but 30 000 aliases of a 30 kB name (a 150 kB file) would be 900 MB of names and
    # seconds of regex: the schema-generated reader took 4 s and 0.9 GB here.
    bomb = tmp_path / "bomb.tflite"
    bomb.write_bytes(_aliased_tflite(30_000, 30_000))
    start = time.perf_counter()
    with pytest.raises(InputError) as info, _bounded(5):
        inspect(bomb)
    assert time.perf_counter() - start < 1.0
    _assert_one_line(str(info.value), "bomb.tflite", "corrupted TFLite flatbuffer")


def test_cli_inspect_of_a_corrupted_tflite_is_exit_2_one_line(artifacts, tmp_path, capsys):
    data = bytearray((artifacts / "model.tflite").read_bytes())
    struct.pack_into("<I", data, 0, 0x7FFFFFF0)  # root table offset far beyond the file
    corrupted = tmp_path / "corrupted.tflite"
    corrupted.write_bytes(bytes(data))
    assert cli.main(["inspect", str(corrupted)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_one_line(captured.err.strip(), "tfdropblock: error:", "corrupted.tflite")


# -- 2. two runs writing one output folder at once ------------------------------------------------

def _stage_artifacts(stage, tag, files=8):
    sm = stage / "saved_model"
    (sm / "variables").mkdir(parents=True)
    for i in range(files):
        (sm / "variables" / f"part{i}").write_text(tag)
    (sm / "saved_model.pb").write_text(tag)
    (stage / "model.onnx").write_text(tag)


class _Superseded(Exception):
    """The directory read was replaced (and is being deleted) while it was read."""


def _read_set(out):
    """(saved_model tag, model.onnx tag) of what ``out`` holds now.

    ``saved_model/`` is read through a descriptor of the directory, as of one instant (a reader
    going by path can combine two versions, as atomic.py says); AssertionError if it is missing,
    or is half or mixed while still the current one.
    """
    try:
        fd = os.open(out / "saved_model", os.O_RDONLY)
    except FileNotFoundError:
        raise AssertionError("saved_model/ missing") from None
    try:
        tags, count = set(), 0
        try:
            for root, _, files, root_fd in os.fwalk(dir_fd=fd):
                for name in files:
                    with open(os.open(name, os.O_RDONLY, dir_fd=root_fd)) as f:
                        tags.add(f.read())
                    count += 1
        except FileNotFoundError:
            raise _Superseded() from None
        if (count != 9 or len(tags) != 1) and (
                os.fstat(fd).st_ino == os.stat(out / "saved_model").st_ino):
            raise AssertionError(f"half or mixed saved_model/: {count} files, {tags}")
        if count != 9 or len(tags) != 1:
            raise _Superseded()
        return tags.pop(), (out / "model.onnx").read_text()
    finally:
        os.close(fd)


def _can_exchange(root):
    a, b = root / "probe_a", root / "probe_b"
    a.mkdir()
    b.mkdir()
    try:
        return atomic._exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def test_concurrent_commits_never_show_a_missing_half_or_mixed_artifact(tmp_path):
    # Without RENAME_EXCHANGE (not Linux, or a filesystem without it) a directory is missing
    # for the moment between two renames, as atomic.py documents: only "half" is then checked.
    gapless = _can_exchange(tmp_path)
    out = tmp_path / "out"
    with staging_dir(out) as stage:
        _stage_artifacts(stage, "initial")
        commit_many(out, [(stage / n, n) for n in ("saved_model", "model.onnx")])
    stop = threading.Event()
    errors, reads = [], [0]

    def writer(name):
        try:
            for i in range(60):
                with staging_dir(out) as stage:
                    _stage_artifacts(stage, f"{name}-{i}")
                    commit_many(out, [(stage / n, n) for n in ("saved_model", "model.onnx")])
        except Exception as e:  # reported below, with the reader's
            errors.append(f"writer {name}: {type(e).__name__}: {e}")

    def reader():
        while not stop.is_set():
            try:
                _read_set(out)
                reads[0] += 1
            except _Superseded:
                continue
            except AssertionError as e:
                if not gapless and "missing" in str(e):
                    continue
                errors.append(f"reader: {e}")
                return
            except FileNotFoundError as e:  # model.onnx missing
                errors.append(f"reader: {type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=writer, args=(n,)) for n in "AB"]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not errors, errors[:3]
    assert reads[0] > 10, reads
    sm_tag, onnx_tag = _read_set(out)
    # Commits are serialised: the folder holds one run's complete set, not a mix.
    assert sm_tag == onnx_tag and sm_tag.endswith("-59"), (sm_tag, onnx_tag)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "staging litter"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "saved_model"]


CONCURRENT_EXPORT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from tfdropblock.export import export

    model, out, me, other = sys.argv[1:5]
    def meet(fmt, message):
        # Both runs hold back their commit until both converted everything, so that the two
        # commits race for real.
        if fmt == "onnx" and message == "converted":
            Path(me).touch()
            deadline = time.monotonic() + 120
            while not Path(other).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
    export(model, out, progress=meet)
    print("done")
''')


def test_two_concurrent_exports_into_one_folder(tmp_path, tiny_image_model):
    import keras

    from tfdropblock.export.formats.onnx.runtime import OrtRunner
    from tfdropblock.export.formats.saved_model.runtime import SavedModelRunner
    from tfdropblock.export.formats.tflite.runtime import TFLiteRunner

    models = []
    for name, seed in (("a", 1), ("b", 2)):
        m = tiny_image_model()
        keras.utils.set_random_seed(seed)
        for w in m.weights:
            w.assign(np.random.default_rng(seed).normal(size=w.shape).astype("float32"))
        m.save(tmp_path / f"{name}.keras")
        models.append(m)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    expected = [np.asarray(m(x, training=False)) for m in models]
    assert not np.allclose(*expected)

    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(CONCURRENT_EXPORT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{me}.keras"),
                               str(out), str(tmp_path / f"{me}.ready"),
                               str(tmp_path / f"{other}.ready")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for me, other in (("a", "b"), ("b", "a"))]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "done" in stdout, stderr[-2000:]

    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.tflite", "saved_model"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "litter"
    outputs = {
        "saved_model": next(iter(SavedModelRunner(out / "saved_model")({"image": x}).values())),
        "tflite": next(iter(TFLiteRunner((out / "model.tflite").read_bytes())(
            {"image": x}).values())),
        "onnx": next(iter(OrtRunner(out / "model.onnx")({"image": x}).values())),
    }
    winners = set()
    for fmt, got in outputs.items():
        match = [i for i, e in enumerate(expected) if np.allclose(got, e, atol=1e-4)]
        assert len(match) == 1, f"{fmt} matches neither run"
        winners.add(match[0])
    assert len(winners) == 1, "out_dir mixes the two runs' artifacts"


# -- 3. unwritable or full output folder ----------------------------------------------------------

def test_out_dir_that_cannot_be_created_is_a_one_line_output_error(model, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in (a_file / "out", Path("/proc/tfdropblock-test/out")):
        with pytest.raises(OutputError) as info:
            export(model, out, formats=("onnx",))
        assert isinstance(info.value, InputError)
        _assert_one_line(str(info.value), f"out_dir={str(out)!r}")
    keras_file = tmp_path / "m.keras"
    model.save(keras_file)
    # The CLI stops before starting any converter process.
    assert cli.main(["export", str(keras_file), "--out", str(a_file / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    _assert_one_line(err, "tfdropblock: error:", "a_file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "m.keras"]


FULL_DISK = textwrap.dedent('''
    import json, resource, signal, sys
    import keras
    from tfdropblock.export import export, OutputError

    model_path, out = sys.argv[1:3]
    model = keras.saving.load_model(model_path)
    # Writes beyond the limit fail with EFBIG instead of killing the process (SIGXFSZ).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    results = {}
    # 20 kB: TensorFlow's own writer fails inside saved_model.pb (38 kB); 1 kB: the kit's own
    # writer fails inside model.onnx (1.7 kB).
    for label, limit, formats in (("savedmodel", 20_000, ("saved_model", "tflite", "onnx")),
                                  ("onnx", 1_000, ("onnx",))):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            export(model, out, formats=formats)
            results[label] = "no error"
        except Exception as e:
            results[label] = [type(e).__name__, isinstance(e, OutputError), str(e)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    print(json.dumps(results))
''')


def _fsize_limit(limit):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_mid_write_is_a_clear_error_and_keeps_the_previous_output(model, tmp_path):
    keras_file = tmp_path / "m.keras"
    model.save(keras_file)
    out = tmp_path / "out"
    export(model, out)
    before = _snapshot(out)
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(script), str(keras_file), str(out)],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for label, fmt in (("savedmodel", "saved_model"), ("onnx", "onnx")):
        name, is_output_error, message = results[label]
        assert is_output_error, (label, name, message)
        _assert_one_line(message, f"out_dir={str(out)!r}", f"writing the {fmt} artifact",
                         "File too large", "nothing was written")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full_disk.py", "m.keras", "out"]

    # The command line: the converter processes inherit the limit; exit status 2, one line.
    command = Path(sys.executable).with_name("tfdropblock")
    command = [str(command)] if command.exists() else [sys.executable, "-m", "tfdropblock.cli"]
    proc = subprocess.run([*command, "export", str(keras_file), "--out", str(out), "--quiet",
                           "--formats", "saved_model,onnx"], capture_output=True, text=True,
                          env=env, timeout=240, preexec_fn=_fsize_limit(20_000))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    _assert_one_line(proc.stderr.strip(), "tfdropblock: error:", "File too large",
                     "nothing was written")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full_disk.py", "m.keras", "out"]


# -- 4. ONNX at the protobuf limit: external data -------------------------------------------------

def test_onnx_external_data_exports_verifies_and_inspects(model, tmp_path):
    import onnx

    from tfdropblock.export.formats.onnx.runtime import OrtRunner

    out = tmp_path / "out"
    export(model, out, formats=("onnx",), onnx_external_data=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]
    proto = load_onnx(out / "model.onnx")  # the graph only: data stays on disk
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert weights and all(t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data
                           for t in weights)
    size = (out / "model.onnx.data").stat().st_size
    for t in weights:
        info = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
        assert {e.key: e.value for e in t.external_data}["location"] == "model.onnx.data"
        assert info["offset"] + info["length"] <= size
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32")
    got = next(iter(OrtRunner(out / "model.onnx", "disable_all")({"image": x}).values()))
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5)

    # inspect reads the structure without the data file.
    (out / "model.onnx.data").rename(tmp_path / "elsewhere.data")
    assert inspect(out / "model.onnx") == []

    # verify end to end: structure, validity (checker and ORT by path), parity, determinism.
    report = verify(model, formats=("onnx",), onnx_external_data=True, out_dir=out)
    result = report.formats["onnx"]
    assert result.ok, str(report)
    assert result.checks["validity"].details["external_data"] is True
    assert report.settings["onnx_external_data"] is True
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]
    # An inline model.onnx replaces the pair: no stale data file is left beside it.
    assert verify(model, formats=("onnx",), out_dir=out).ok
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.data", "out"]


def test_onnx_over_the_limit_goes_external_by_default_or_is_refused(model, tmp_path,
                                                                    monkeypatch):
    # The limit is lowered (not the converters): a 2 GiB model is not built in a test.
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 1000)
    export(model, tmp_path / "auto", formats=("onnx",))
    assert sorted(p.name for p in (tmp_path / "auto").iterdir()) == ["model.onnx",
                                                                     "model.onnx.data"]
    with pytest.raises(ConversionError) as info:
        export(model, tmp_path / "never", formats=("onnx",), onnx_external_data=False)
    _assert_one_line(str(info.value), "2 GiB protobuf limit", "--onnx-external-data")
    assert not (tmp_path / "never").exists()


def test_tf2onnx_failures_at_the_limit_are_named(model, monkeypatch):
    from tfdropblock.export.formats.onnx.conversion import over_protobuf_limit

    # The two messages tf2onnx 1.17 / TF 2.21 gave for real on 2.1 and 2.4 GiB models.
    assert over_protobuf_limit(ValueError("Cannot create a tensor proto whose content is "
                                          "larger than 2GB."), model)
    assert not over_protobuf_limit(ValueError("Invalid GraphDef"), model)
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 100)
    assert over_protobuf_limit(ValueError("Invalid GraphDef"), model)


def test_cli_accepts_onnx_external_data():
    args = cli.build_parser().parse_args(["export", "m.keras", "--out", "o",
                                          "--onnx-external-data"])
    assert args.onnx_external_data is True
    assert cli.build_parser().parse_args(["verify", "m.keras"]).onnx_external_data is None
    with pytest.raises(InputError, match="onnx_external_data"):
        verify("m.keras", onnx_external_data="yes")


# -- 5. verify on untrusted model files -----------------------------------------------------------

def test_verify_on_untrusted_model_files_is_exit_2_one_line(model, tmp_path, capsys):
    good = tmp_path / "good.keras"
    model.save(good)
    data = good.read_bytes()
    files = {}
    for cut in (len(data) // 2, len(data) - 10):
        files[f"truncated at {cut}"] = tmp_path / f"trunc{cut}.keras"
        files[f"truncated at {cut}"].write_bytes(data[:cut])
    files["empty"] = tmp_path / "empty.keras"
    files["empty"].write_bytes(b"")
    files["directory"] = tmp_path / "dir.keras"
    files["directory"].mkdir()
    junk = tmp_path / "junk.keras"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("config.json", os.urandom(200))
        z.writestr("model.weights.h5", os.urandom(500))
    files["zip of junk"] = junk
    listed = tmp_path / "list.keras"
    with zipfile.ZipFile(listed, "w") as z:
        z.writestr("config.json", "[1, 2, 3]")
    files["config.json not an object"] = listed
    files["a real model named .zip"] = tmp_path / "model.zip"
    shutil.copy(good, files["a real model named .zip"])
    files["no extension"] = tmp_path / "model"
    shutil.copy(good, files["no extension"])
    for label, path in files.items():
        assert cli.main(["verify", str(path), "--quiet"]) == 2, label
        err = capsys.readouterr().err.strip()
        _assert_one_line(err, "tfdropblock: error:", path.name)
        with pytest.raises(InputError):
            verify(path)
    assert "expected a .keras model file" in (
        cli.main(["verify", str(files["no extension"])]) == 2 and capsys.readouterr().err)
