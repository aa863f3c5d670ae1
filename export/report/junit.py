"""The verification report as JUnit XML, for CI systems that show test reports.

One ``testsuite`` per format, one ``testcase`` per check (``classname`` the format, ``name``
the check): a check that failed has a ``failure`` with its findings, one that ran but judged
nothing (``ok`` null: a vacuous parity, a structure not checked, an accuracy only reported) or
never ran is ``skipped``, and the check a converter or runtime failure stopped at is an
``error``. Only the report's
plain data is read (``formats`` of results with ``checks``, ``findings``, ``warnings``,
``status``, ``error``): this module imports nothing of the kit, so the report can import it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

# The checks a format runs when nothing stops it: those it did not get to are skipped cases.
FLOAT_CHECKS = ("conversion", "structure", "validity", "parity", "determinism")
QUANTIZED_CHECKS = ("conversion", "structure", "validity", "twin", "quality", "determinism")

PASSED, FAILURE, SKIPPED, ERROR = "passed", "failure", "skipped", "error"

# Characters XML 1.0 cannot hold, escaped or not: a converter's message may carry terminal
# colour codes or NULs, and ElementTree would write them into a file no reader can parse.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value):
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def cases(result):
    """``[(check, outcome, message, text)]`` of one FormatResult, in check order."""
    expected = QUANTIZED_CHECKS if result.quantization else FLOAT_CHECKS
    names = list(dict.fromkeys([*result.checks, *(f.check for f in result.findings)]))
    names += [n for n in expected if n not in names]
    errored = result.status == "error" and result.error
    stopped_at = None
    if errored:  # the check that was running: a failed conversion, else the first not run
        conversion = result.checks.get("conversion")
        stopped_at = "conversion" if conversion is None or conversion.ok is False else \
            next((n for n in names if n not in result.checks), None)
        if stopped_at is None:
            names.append(stopped_at := "run")
    out = []
    for name in names:
        check = result.checks.get(name)
        findings = [str(f) for f in result.findings if f.check == name]
        warnings = [str(f) for f in result.warnings if f.check == name]
        if name == stopped_at:
            out.append((name, ERROR, result.error, "\n".join([result.error, *findings])))
        elif findings or (check is not None and check.ok is False):
            text = "\n".join(findings) or f"the {name} check failed"
            out.append((name, FAILURE, findings[0] if findings else text, text))
        elif check is None:
            why = f"not run: {result.error}" if errored else "not run"
            out.append((name, SKIPPED, why, ""))
        elif check.ok is None:  # a vacuous parity, a structure not checked, accuracy unjudged
            why = "; ".join(warnings) or str(check.details.get("not_checked") or
                                             check.details.get("status") or "ok null")
            out.append((name, SKIPPED, f"ran, not judged: {why}", ""))
        else:
            out.append((name, PASSED, "", "\n".join(warnings)))
    return out


def to_junit(report, name="tfdropblock verify"):
    """The JUnit XML (a string) of ``report``: ``testsuites`` > ``testsuite`` per format >
    ``testcase`` per check, with ``tests``, ``failures``, ``errors`` and ``skipped`` counted
    from the cases on every suite and on the whole."""
    model = report.model.get("name") or report.model.get("source") or "model"
    root = ET.Element("testsuites", name=_text(f"{name} {model}"))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    seconds = 0.0
    for fmt, result in report.formats.items():
        suite = ET.SubElement(root, "testsuite", name=_text(fmt))
        counts = dict.fromkeys(totals, 0)
        for check, outcome, message, text in cases(result):
            message, text = _text(message), _text(text)
            case = ET.SubElement(suite, "testcase", classname=_text(fmt), name=_text(check))
            counts["tests"] += 1
            if outcome == FAILURE:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=message, type=check).text = text
            elif outcome == ERROR:
                counts["errors"] += 1
                ET.SubElement(case, "error", message=message, type="error").text = text
            elif outcome == SKIPPED:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=message)
            elif text:  # passed with warnings: shown, not failed
                ET.SubElement(case, "system-out").text = text
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{result.seconds or 0.0:.3f}")
        seconds += result.seconds or 0.0
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
