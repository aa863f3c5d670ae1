"""``Report.to_junit()`` and ``--junit``: one testcase per format and check, failures with
the findings, a converter failure as an error, the checks it stopped as skipped, and counts
that add up. The report is real: a planted leak (DropBlock that drops at inference) checked in
SavedModel, with the TFLite converter made to raise."""

import xml.etree.ElementTree as ET

import pytest

from tfdropblock.export import verify
from fault_injection import FAULT_ENV
from test_export_leaks import IgnoresTraining

COUNTS = ("tests", "failures", "errors", "skipped")


@pytest.fixture(scope="module")
def report(tiny_image_model):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAULT_ENV, "tflite:raise")
        return verify(tiny_image_model(IgnoresTraining), formats=("saved_model", "tflite"))


@pytest.fixture(scope="module")
def root(report):
    return ET.fromstring(report.to_junit())


def _outcome(case):
    kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
    assert len(kinds) <= 1, kinds
    return kinds[0] if kinds else "passed"


def test_every_check_of_every_format_is_a_testcase_and_the_counts_add_up(root, report):
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == list(report.formats)
    totals = dict.fromkeys(COUNTS, 0)
    for suite in suites:
        cases = suite.findall("testcase")
        assert all(c.get("classname") == suite.get("name") and c.get("name") for c in cases)
        assert len({c.get("name") for c in cases}) == len(cases), "one testcase per check"
        outcomes = [_outcome(c) for c in cases]
        counted = {"tests": len(cases), "failures": outcomes.count("failure"),
                   "errors": outcomes.count("error"), "skipped": outcomes.count("skipped")}
        assert {k: int(suite.get(k)) for k in COUNTS} == counted
        for key in COUNTS:
            totals[key] += counted[key]
    assert {k: int(root.get(k)) for k in COUNTS} == totals


def test_the_leak_is_a_failure_with_its_findings(root, report):
    result = report.formats["saved_model"]
    assert result.status == "failed", str(report)
    cases = {c.get("name"): c for c in root.find("testsuite[@name='saved_model']")}
    failed = {name for name, case in cases.items() if _outcome(case) == "failure"}
    assert failed == {name for name, check in result.checks.items() if check.ok is False}
    assert "structure" in failed
    failure = cases["structure"].find("failure")
    findings = [str(f) for f in result.findings if f.check == "structure"]
    assert failure.get("message") == findings[0] and failure.text.splitlines() == findings
    assert "random op" in failure.text


def test_a_converter_failure_is_an_error_and_the_rest_skipped(root, report):
    assert report.formats["tflite"].status == "error", str(report)
    cases = root.find("testsuite[@name='tflite']").findall("testcase")
    assert [(c.get("name"), _outcome(c)) for c in cases] == [
        ("conversion", "error"), ("structure", "skipped"), ("validity", "skipped"),
        ("parity", "skipped"), ("determinism", "skipped")]
    assert "injected fault" in cases[0].find("error").get("message")


def test_text_xml_cannot_hold_is_escaped_not_written():
    """A converter's message with a terminal colour code and a NUL still gives a file that
    parses, with the characters spelled out."""
    from tfdropblock.export.core.results import CheckResult, FormatResult
    from tfdropblock.export.report.report import Report

    result = FormatResult("onnx", status="error", error="\x1b[31mboom\x00",
                          checks={"conversion": CheckResult(False, {})})
    root = ET.fromstring(Report(model={"name": "m"}, formats={"onnx": result}).to_junit())
    assert root.find(".//error").get("message") == "\\x1b[31mboom\\x00"
    assert (root.get("tests"), root.get("errors"), root.get("skipped")) == ("5", "1", "4")
