"""Gates as JUnit XML (``--junit FILE``): CI systems show each gate as a test case, with a failure when it is not
met and "skipped" when it could not be judged.

Written with xml.etree in the common JUnit layout (``testsuites`` > ``testsuite`` > ``testcase`` with
``failure`` / ``skipped`` and ``properties``), the subset GitHub, GitLab and Jenkins reporters read; escaping
is the XML library's, never string concatenation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgeq.build.summary import Judged, gate_figures, validation_of


def junit_xml(report: Judged, suite: str) -> bytes:
    """One ``testcase`` per gate, in the report's order; the case's message gives measured value and limit."""
    gates = report.gates
    validation = validation_of(report)
    failures = sum(not g.passed for g in gates)
    skipped = sum(g.judged is False for g in gates)
    root = ET.Element("testsuites", name="edgeq", tests=str(len(gates)), failures=str(failures), errors="0",
                      skipped=str(skipped))
    element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(gates)), failures=str(failures),
                            errors="0", skipped=str(skipped))
    properties = ET.SubElement(element, "properties")
    ET.SubElement(properties, "property", name="model", value=validation.model.name or validation.model.source)
    ET.SubElement(properties, "property", name="picked_method", value=validation.best_method.value)
    ET.SubElement(properties, "property", name="int8_sha256", value=validation.model.sha256)
    for gate in gates:
        figures = gate_figures(gate, validation)
        case = ET.SubElement(element, "testcase", name=gate.name, classname=suite)
        case_properties = ET.SubElement(case, "properties")
        ET.SubElement(case_properties, "property", name="value", value=figures.value)
        ET.SubElement(case_properties, "property", name="limit", value=figures.limit)
        message = f"{gate.name}: {figures.value} (limit {figures.limit})"
        if gate.judged is False:
            ET.SubElement(case, "skipped", message=gate.detail)
        elif not gate.passed:
            failure = ET.SubElement(case, "failure", message=message, type="GateFailed")
            failure.text = gate.detail
        ET.SubElement(case, "system-out").text = f"{message}\n{gate.detail}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(report: Judged, suite: str, path: str | Path) -> Path:
    from edgeq.errors import InputError
    from edgeq.files import write_bytes_atomic

    try:
        return write_bytes_atomic(path, junit_xml(report, suite))
    except OSError as exc:
        raise InputError(f"cannot write the JUnit file {path}: {exc.strerror or exc}") from None
