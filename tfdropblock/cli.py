"""``tfdropblock`` command line: verify, export and inspect models, render DropBlock masks.

Exit statuses: 0 everything passed; 1 a structure, validity, parity, determinism (or, for a
quantized format, twin or quality; with ``--labels``, accuracy) check failed
(or ``inspect`` found something); 2 bad usage, an input that cannot be read or loaded, or an
output that cannot be written (``--out`` under a file, read-only, disk full or a file-size
limit: nothing is written then); 3 a converter or runtime failed; 130 interrupted (SIGINT,
Ctrl-C) and 143 terminated (SIGTERM): the previous output is then untouched and no staging
folder or converter process is left. A signal that arrives once the artifacts have started
moving into place no longer changes the outcome: the run completes and reports it. Errors with
status 2 or 3 print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from tfdropblock._util import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: F401
from tfdropblock._util import one_line as _first_line
PROG = "tfdropblock"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        _fail(f"{self.prog}: error: {message}", EXIT_USAGE)


class _Exit(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _fail(message, code):
    raise _Exit(message, code)


def _version():
    """``tfdropblock X.Y.Z`` and the stack's versions, from the installed metadata: importing
    TensorFlow to ask it would take seconds."""
    from importlib import metadata
    from platform import python_version

    from tfdropblock import __version__

    stack = [f"Python {python_version()}"]
    for name in ("tensorflow", "keras"):  # more would not fit argparse's 80-column line
        try:
            stack.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            stack.append(f"{name} not installed")
    return f"{PROG} {__version__} ({', '.join(stack)})"


def _height_width(value):
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid value {value!r}: expected a positive int or two, as height,width")
    return sizes[0] if len(sizes) == 1 else sizes


def _non_negative(value):
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a finite number >= 0")
    return number


def _tolerance(value):
    from tfdropblock.export.run import tolerance

    try:
        return tolerance.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"invalid value {value!r}: {e}; expected a number >= 0 for every output, "
            "NAME=VALUE[,NAME=VALUE] for the outputs named, or both (1e-4,probs=1e-3)") from None


def _fraction(value):
    number = _non_negative(value)
    if number > 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a fraction in "
                                         "[0, 1] (0.02: two points of top-1)")
    return number


def _positive(value):
    number = _non_negative(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected a number > 0")
    return number


def build_parser():
    from tfdropblock.export import formats as registry
    from tfdropblock.export.formats import quantized
    from tfdropblock.export.run.registry import FORMATS
    from tfdropblock.export.run.settings import (BATCH_SIZE, DEFAULT_TIMEOUT, EXPORTERS,
                                             QUANTIZED_ACCURACY_DROP, Settings)

    parser = _Parser(prog=PROG, description="DropBlock for Keras 3: check that it folds away "
                                            "in SavedModel, TFLite and ONNX exports.")
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the versions of tfdropblock and its stack, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(p):
        p.add_argument("--formats", default=",".join(FORMATS), metavar="FORMAT[,FORMAT]",
                       help=f"formats to export and check (default: {','.join(FORMATS)}; a "
                            "module given to --import may register more)")
        p.add_argument("--atol", type=_tolerance, default=Settings.atol,
                       metavar="[VALUE,][NAME=VALUE,...]",
                       help=f"parity absolute tolerance ({Settings.atol:g}); NAME=VALUE for "
                            "the model's output NAME only")
        p.add_argument("--rtol", type=_tolerance, default=Settings.rtol,
                       metavar="[VALUE,][NAME=VALUE,...]",
                       help=f"parity relative tolerance ({Settings.rtol:g}); NAME=VALUE for "
                            "the model's output NAME only")
        p.add_argument("--inputs", metavar="NPZ", help="example inputs (.npz, one array per "
                                                       "model input name); default: generated. "
                                                       "Also the int8 calibration data")
        p.add_argument("--labels", metavar="NAME",
                       help="the --inputs array of integer classes, one per row (the others "
                            "stay the model's inputs): every format gets an accuracy check, "
                            "top-1 against Keras's, run --batch-size rows at a time")
        p.add_argument("--max-accuracy-drop", type=_fraction, default=None, metavar="D",
                       help="with --labels: fail a format whose top-1 is more than D (a "
                            "fraction) below Keras's (default: "
                            f"{QUANTIZED_ACCURACY_DROP:g} for quantized variants, float "
                            "formats reported only)")
        p.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="N",
                       help=f"with --labels or --calibration: rows run at once ({BATCH_SIZE})")
        p.add_argument("--calibration", metavar="NPZ",
                       help="int8 calibration inputs (.npz, arrays named as --inputs'; other "
                            "arrays ignored), e.g. training images; default: the inputs checked "
                            "on (--inputs, --load-outputs), else generated")
        offered = ", ".join(f"{', '.join(modes)} ({registry.get(fmt).title or fmt})"
                            for fmt, modes in quantized.modes().items())
        p.add_argument("--quantize", metavar="MODE[,MODE]",
                       help=f"also quantize: {offered}; each requested format gets the modes "
                            "it has, each checked as its own format (tflite:int8, ...)")
        p.add_argument("--save-outputs", metavar="FILE.npz",
                       help="write the inputs checked on and the outputs compared with "
                            "(Keras's) to FILE.npz, for a later --load-outputs")
        p.add_argument("--load-outputs", metavar="FILE.npz",
                       help="check on the inputs a --save-outputs run stored and compare every "
                            "artifact with its stored outputs instead of Keras's (not with "
                            "--inputs or --labels)")
        p.add_argument("--json", metavar="FILE", help="write the JSON report to FILE "
                                                      "('-': stdout)")
        p.add_argument("--junit", metavar="FILE.xml",
                       help="write the report as JUnit XML to FILE.xml: a testcase per format "
                            "and check, for CI test reports")
        p.add_argument("--locate", action="store_true",
                       help="compare every Keras layer's output with the artifact's and name "
                            "the first that diverges (done anyway when a float format's "
                            "parity fails)")
        p.add_argument("--locate-plot", metavar="FILE.png",
                       help="draw each layer's error against its depth to FILE.png (implies "
                            "--locate; needs matplotlib)")
        p.add_argument("--unsafe", action="store_true", help="load the model with "
                       "safe_mode=False (runs Lambda code: only for files you trust)")
        p.add_argument("--import", dest="imports", action="append", default=[],
                       metavar="MODULE", help="import MODULE first (registers custom layers); "
                                              "repeatable")
        p.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT,
                       help=f"seconds allowed to each format's converter ({DEFAULT_TIMEOUT})")
        p.add_argument("--jobs", type=int, default=None, help="formats converted at once "
                                                              "(default: one per CPU)")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
        for fmt in registry.names():  # each format's own options, as a group of their own
            flagged = [o for o in registry.get(fmt).options if o.flag]
            group = p.add_argument_group(f"{registry.get(fmt).title or fmt} options") \
                if flagged else None
            for option in flagged:
                if option.type is None:
                    group.add_argument(option.flag, dest=option.name, action="store_true",
                                       default=option.default, help=option.help)
                else:
                    group.add_argument(option.flag, dest=option.name, type=option.type,
                                       default=option.default, help=option.help)

    p = sub.add_parser("verify", help="export a model and check DropBlock folds away")
    p.add_argument("model", nargs="?", metavar="MODEL.keras",
                   help="model to check (default: tfdropblock.models.default_model())")
    p.add_argument("--out", metavar="DIR", help="keep the artifacts of the formats that passed")
    p.add_argument("--exporter", choices=EXPORTERS, default=EXPORTERS[0],
                   help="who makes the artifacts: the kit's conversion paths (default) or "
                        "Keras's own model.export, checked the same way")
    common(p)

    # "ship", not "export": it verifies first and writes only what passed (or, with --force,
    # what converted); "export" stays as an alias (docs/CLI.md, "Renames").
    p = sub.add_parser("ship", aliases=["export"],
                       help="verify, then write the artifacts (alias: export)")
    p.add_argument("model", metavar="MODEL.keras", help="model to verify and export")
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")
    p.add_argument("--force", action="store_true",
                   help="write whatever converted even if a check failed")
    common(p)

    p = sub.add_parser("inspect", help="look for DropBlock leftovers in artifacts made "
                                       "elsewhere")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="SavedModel directory, .tflite or .onnx file")
    p.add_argument("--layer-name", action="append", default=[], metavar="NAME",
                   help="DropBlock layer name to look for (default: Keras's drop_block*d "
                        "names); repeatable")
    p.add_argument("--json", metavar="FILE", help="write the findings as JSON ('-': stdout)")

    p = sub.add_parser("show-masks", help="render example DropBlock masks to an image "
                                          "(needs matplotlib)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="PNG file to write")
    p.add_argument("--rate", type=float, default=0.1, help="drop rate in [0, 1) (default: 0.1)")
    p.add_argument("--block-size", type=_height_width, default=7, metavar="B[,B]",
                   help="block size: one int, or height,width (default: 7)")
    p.add_argument("--size", type=_height_width, default=64, metavar="S[,S]",
                   help="feature map size: one int, or height,width (default: 64)")
    p.add_argument("--share-channels", action="store_true",
                   help="one mask shared by all channels (default: one per channel)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks (default: 0)")
    return parser


def main(argv=None):
    """Console entry point; returns the exit status (and exits with it when run as a script)."""
    # TensorFlow's C++ start-up log would bury the report; failures reach us as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Before Keras is imported: the kit needs TensorFlow graphs whatever KERAS_BACKEND says.
    from tfdropblock._util import use_tensorflow_backend

    backend_problem = use_tensorflow_backend()
    _printable_paths()
    from tfdropblock.export.execution import stopping

    previous = stopping.catch_stop_signals()
    try:
        _import_plugins(argv)
        args = build_parser().parse_args(argv)
        if backend_problem:
            _fail(f"{PROG}: error: {backend_problem}", EXIT_USAGE)
        _check_outputs(args)
        _import_tensorflow_quietly()
        return {"verify": _verify, "ship": _ship, "export": _ship, "inspect": _inspect,
                "show-masks": _show_masks}[args.command](args)
    except _Exit as e:
        if str(e):
            print(str(e), file=sys.stderr)
        return e.code
    except KeyboardInterrupt as e:
        stopping.decided()
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"{PROG}: {'terminated' if signum == signal.SIGTERM else 'interrupted'}",
              file=sys.stderr)
        return 128 + signum
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK
    except Exception as e:  # a bug of ours: still one line; the traceback on request
        if os.environ.get("TFDROPBLOCK_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {_first_line(e)} (set "
              "TFDROPBLOCK_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        stopping.release_stop_signals(previous, own_process=argv is None)


def _import_plugins(argv):
    """Import the ``--import`` modules before the parser is built, so that a format one
    registers brings its options' flags (``--import my_format.py --my-option``)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    if not known.imports:
        return
    from tfdropblock.export import InputError
    from tfdropblock.export.model.loading import import_modules, importable

    try:
        import_modules(importable(known.imports))
    except InputError as e:
        _fail(f"{PROG}: error: {e}", EXIT_USAGE)


def _printable_paths():
    # A path that is not UTF-8 reaches Python as surrogates, which a strict stream cannot encode
    # (PYTHONIOENCODING=utf-8:strict): such paths print escaped instead of failing the run.
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except Exception:
                pass


def _check_outputs(args):
    """Every path the run will write, checked before any work: a run must not convert for
    minutes and then fail, or fail after its artifacts moved, on an output it cannot write."""
    from tfdropblock.export.execution.atomic import check_out_dir, check_output_file
    from tfdropblock.export.core.errors import OutputError

    try:
        if args.command in ("verify", "ship", "export") and \
                getattr(args, "out", None) is not None:
            check_out_dir(args.out)
        if getattr(args, "json", None) not in (None, "-"):
            check_output_file(args.json, "--json")
        for flag in ("junit", "save_outputs"):
            if getattr(args, flag, None) is not None:
                check_output_file(getattr(args, flag), f"--{flag.replace('_', '-')}")
        if getattr(args, "locate_plot", None) is not None:
            check_output_file(args.locate_plot, "--locate-plot")
    except OutputError as e:
        _fail(f"{PROG}: error: {e}", EXIT_USAGE)
    if getattr(args, "locate_plot", None) is not None:
        from tfdropblock.export.report.locate_plot import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as e:  # before any conversion: an install the user can fix
            _fail(f"{PROG}: error: {_first_line(e)}", EXIT_USAGE)


def _import_tensorflow_quietly():
    """Import TensorFlow with stderr silenced at the file-descriptor level.

    Its C++ start-up lines (oneDNN, CUDA probing) are written before its logging reads
    TF_CPP_MIN_LOG_LEVEL, so only the descriptor can hold them back. An import error is still
    raised, and reported, after stderr is restored.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _progress(args):
    if getattr(args, "quiet", False):
        return None

    def say(fmt, message):
        print(f"[{PROG}] {fmt}: {message}", file=sys.stderr, flush=True)

    return say


def _run_verify(args, out_dir, write):
    from tfdropblock.export import ExportKitError, InputError, verify
    from tfdropblock.export.model.loading import importable, read_npz, with_import_hint

    try:
        imports = importable(args.imports)
        # Every rule on the arguments is the library's: the CLI reads the files it names.
        inputs = read_npz(args.inputs, "--inputs") if args.inputs else None
        calibration = read_npz(args.calibration, "--calibration") \
            if args.calibration else None
        exporter = getattr(args, "exporter", "tfdropblock")
        with _json_with_artifacts(args) as committed:
            report = verify(args.model, formats=args.formats, inputs=inputs, atol=args.atol,
                            rtol=args.rtol, out_dir=out_dir, **_format_options(args),
                            safe_mode=not args.unsafe, isolate=True, timeout=args.timeout,
                            jobs=args.jobs, write=write, imports=imports,
                            quantize=args.quantize, labels=args.labels,
                            max_accuracy_drop=args.max_accuracy_drop,
                            batch_size=args.batch_size, calibration=calibration,
                            load_outputs=args.load_outputs,
                            save_outputs=args.save_outputs, exporter=exporter,
                            locate=args.locate or args.locate_plot is not None,
                            progress=_progress(args))
        args.json_committed = bool(committed)
        return report
    except InputError as e:
        _fail(f"{PROG}: error: {with_import_hint(e, args.model)}", EXIT_USAGE)
    except ExportKitError as e:
        _fail(f"{PROG}: error: {e}", EXIT_ERROR)
    except OSError as e:
        _fail(f"{PROG}: error: {e.filename or ''}: {e.strerror or e}", EXIT_USAGE)


def _emit(args, report_dict, table):
    """The table on stdout, and the JSON report to ``--json`` (or instead, for ``--json -``)."""
    if args.json == "-":
        print(json.dumps(report_dict, indent=2))
        return
    if table:
        print(table)
    if args.json and not getattr(args, "json_committed", False):
        from tfdropblock._files import write_bytes

        from tfdropblock.export.execution.stopping import decided

        decided()  # a report once renamed in must not be followed by exit 130
        try:
            write_bytes(args.json, _json_bytes(report_dict))
        except OSError as e:
            _fail(f"{PROG}: error: cannot write --json {args.json}: {e.strerror}", EXIT_USAGE)


def _write_junit(args, report):
    """``--junit``: the report as JUnit XML, written whole, as ``--json`` is."""
    if not args.junit:
        return
    from tfdropblock._files import write_bytes
    from tfdropblock.export.execution.stopping import decided

    decided()
    try:
        write_bytes(args.junit, report.to_junit().encode())
    except OSError as e:
        _fail(f"{PROG}: error: cannot write --junit {args.junit}: {e.strerror}", EXIT_USAGE)


def _json_bytes(report_dict):
    return (json.dumps(report_dict, indent=2) + "\n").encode()


def _json_with_artifacts(args):
    """Where a run moves artifacts into ``--out``, its ``--json`` report is written beside its
    destination first and renamed in with them (``staging.committed_with``): a report that
    cannot be written stops the run before anything moves, and never replaces the output of
    a run that then reports failure. Yields a list, non-empty once the report went in."""
    import contextlib

    from tfdropblock._files import stage_bytes
    from tfdropblock.export.core.errors import OutputError
    from tfdropblock.export.execution.staging import committed_with

    if not args.json or args.json == "-" or getattr(args, "out", None) is None:
        return contextlib.nullcontext([])

    def stage(report):
        try:
            return stage_bytes(args.json, _json_bytes(report.to_dict())), \
                os.path.realpath(args.json)
        except OSError as e:
            raise OutputError(f"cannot write --json {args.json}: {e.strerror or e}; nothing "
                              "was written") from None

    return committed_with(stage)


def _format_options(args):
    """The formats' options the CLI has flags for, as ``verify`` takes them."""
    from tfdropblock.export import formats

    return {name: getattr(args, name) for name, option in formats.options().items()
            if option.flag and hasattr(args, name)}


def _verify(args):
    if args.model is None:
        try:
            from tfdropblock.models import default_model  # noqa: F401
        except ImportError:
            _fail(f"{PROG}: error: no MODEL.keras given and tfdropblock.models.default_model() "
                  "is not available", EXIT_USAGE)
    report = _run_verify(args, args.out, "passed")
    _emit(args, report.to_dict(), str(report))
    _write_junit(args, report)
    _plot(args, report)
    return report.exit_code


def _plot(args, report):
    """``--locate-plot``: the located layers' errors drawn to the file named."""
    if args.locate_plot is None:
        return
    from tfdropblock.export.report.locate_plot import plot_layers

    try:
        drawn = plot_layers(report, args.locate_plot)
    except OSError as e:
        _fail(f"{PROG}: error: cannot write --locate-plot {args.locate_plot}: "
              f"{e.strerror or e}", EXIT_USAGE)
    print(f"wrote {args.locate_plot} ({', '.join(drawn) or 'no layer located'})",
          file=sys.stderr)


def _ship(args):
    write = "converted" if args.force else "all_or_nothing"
    report = _run_verify(args, args.out, write)
    _emit(args, report.to_dict(), str(report))
    _write_junit(args, report)
    _plot(args, report)
    written = [r.artifact for r in report.formats.values() if r.artifact]
    if written:
        print(f"wrote {', '.join(written)}", file=sys.stderr)
    elif not report.ok:
        print(f"{PROG}: verification failed: nothing written to {args.out} "
              "(--force writes what converted)", file=sys.stderr)
    return report.exit_code


def _inspect(args):
    from tfdropblock.export.core.errors import InputError
    from tfdropblock.export.execution.inspection import inspect_summary
    from tfdropblock.export.report.report import SCHEMA_VERSION, versions

    summaries, errors, lines = [], [], []
    for path in [artifact for path in args.paths for artifact in _artifacts_in(path)]:
        try:
            summary = inspect_summary(path, args.layer_name or None)
        except InputError as e:
            errors.append(str(e))
            lines.append(f"{PROG}: error: {e}")
            continue
        except Exception as e:  # a parser bug must still not print a traceback
            errors.append(f"{path}: cannot read ({type(e).__name__}: {e})")
            lines.append(f"{PROG}: error: {path}: cannot read ({type(e).__name__})")
            continue
        summaries.append(summary)
        status = "clean" if summary["ok"] else f"{len(summary['findings'])} finding(s)"
        lines.append(f"{path} [{summary['format']}, {summary['op_count']} ops]: {status}")
        for f in summary["findings"]:
            where = f" (at {f['where']})" if f["where"] else ""
            lines.append(f"  {f['what']}{where}")
    code = EXIT_USAGE if errors else EXIT_FAILED if any(not s["ok"] for s in summaries) \
        else EXIT_OK
    data = {"schema_version": SCHEMA_VERSION, "ok": code == EXIT_OK, "exit_code": code,
            "versions": versions(), "artifacts": summaries, "errors": errors}
    if args.json != "-":
        # Results on stdout; each unreadable input as one error line on stderr.
        for line in lines:
            print(line, file=sys.stderr if ": error: " in line else sys.stdout)
        lines = []
    _emit(args, data, "\n".join(lines))
    return code


def _artifacts_in(path):
    """A folder that ``export`` wrote stands for the artifacts in it; any other path for itself.

    (A SavedModel is a folder too: one with a saved_model.pb is inspected as that.)
    """
    from pathlib import Path

    from tfdropblock.export import formats

    folder = Path(path)
    if not folder.is_dir() or (folder / "saved_model.pb").exists():
        return [path]
    names = [formats.get(name).artifact for name in formats.names()]
    found = [str(folder / name) for name in names if (folder / name).exists()]
    return found or [path]


def _show_masks(args):
    try:
        from tfdropblock.visualize import render_masks
    except ImportError as e:
        _fail(f"{PROG}: error: show-masks needs tfdropblock.visualize and matplotlib "
              f"({e})", EXIT_USAGE)
    try:
        result = render_masks(args.out, rate=args.rate, block_size=args.block_size,
                              size=args.size, share_channels=args.share_channels,
                              seed=args.seed)
    except ImportError as e:  # matplotlib missing: an install the user can fix, so usage
        _fail(f"{PROG}: error: {_first_line(e)}", EXIT_USAGE)
    except (ValueError, TypeError) as e:
        _fail(f"{PROG}: error: {_first_line(e)}", EXIT_USAGE)
    except OSError as e:
        _fail(f"{PROG}: error: cannot write {args.out}: {e.strerror or e}", EXIT_USAGE)
    except Exception as e:
        _fail(f"{PROG}: error: rendering failed: {type(e).__name__}: {_first_line(e)}",
              EXIT_ERROR)
    print(f"wrote {result if isinstance(result, (str, os.PathLike)) else args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
