"""The typed results (edgeq.results) say exactly what report.json says, and refuse what it cannot.

The fixtures are real documents, written before the results were typed (issue 14), by the code of then:
``build_report.json`` is the report.json of an ``edgeq build`` of the zoo CNN (five methods, two
conditions, three targets, a benchmark at two thread counts and every gate, coverage included; the YAML
gave ``max_drop_pp: 1`` and ``coverage_threshold: 1`` as integers), trimmed to 200 latency samples per
configuration, one histogram and a 166x104 crop of the calibration preview; ``build_report.html`` is that
JSON rendered by the untyped renderer of then (edgeq/report/html.py, whose last version is in the history
of this repository). ``validate_report.json`` is an ``edgeq validate`` report.json trimmed the same way
(its old rendering is pinned by digest), ``stored_validation.json`` the build's cached validation.json.
Decoding, encoding and rendering them must give the same bytes. The page and the digest were re-recorded
when the page changed on purpose (issue 17: local beside accumulated SQNR, shortened names with hover titles,
an image map on the per-layer chart); the JSON documents are the originals.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from edgeq.envelope import ENVELOPE_KEYS
from edgeq.errors import InputError
from edgeq.report.page import render_html
from edgeq.results.build import BuildReport
from edgeq.results.document import Document, top_level
from edgeq.results.validation import StoredValidation, ValidationReport, ValidationRun

DATA = Path(__file__).parent / "data" / "report"
# The figures are PNGs whose bytes depend on matplotlib's version; the page around them does not.
RENDERED_WITH_MATPLOTLIB = "3.11.2"
VALIDATE_HTML_SHA256 = "df41a6ff8de284337ceb38f085b5512963a2c53091bf255aadc496609b31e14f"
FIXTURES: list[tuple[str, type[Document], dict[str, Any]]] = [
    ("build_report.json", BuildReport, {"indent": 2}),
    ("validate_report.json", ValidationRun, {"indent": 2}),
    ("stored_validation.json", StoredValidation, {"indent": 2}),
    ("sample_report.json", BuildReport, {"indent": 2}),  # the example docs/report.md shows
]
_PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def _document(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _same_matplotlib() -> bool:
    import matplotlib

    return matplotlib.__version__ == RENDERED_WITH_MATPLOTLIB


@pytest.mark.parametrize(("name", "cls", "layout"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_a_real_document_round_trips_to_the_same_bytes(name: str, cls: type[Document], layout: dict[str, Any]) -> None:
    text = (DATA / name).read_text()
    result = cls.from_document(json.loads(text))
    original = json.loads(text)
    head = {key: original[key] for key in ENVELOPE_KEYS if key in original}  # the envelope a newer report.json has
    assert json.dumps({**head, **result.to_document()}, allow_nan=False, **layout) + "\n" == text


def test_numbers_keep_the_type_the_user_gave() -> None:
    """The recipe's integer limits stay integers (1, not 1.0), computed floats stay floats."""
    report = BuildReport.from_document(_document("build_report.json"))
    validation = report.validation_report.validation
    assert validation.max_drop_pp == 1 and isinstance(validation.max_drop_pp, int)
    assert report.coverage is not None and isinstance(report.coverage.threshold, int)
    assert isinstance(validation.gate.drop_pp, float) and isinstance(validation.baseline.top1, float)


def test_the_build_report_holds_the_validation_reports_keys_at_its_top_level() -> None:
    document = _document("build_report.json")
    report = BuildReport.from_document(document)
    values = top_level(report)
    assert [key for key in values if key in document] == list(document)
    assert all(values[key] is None for key in values if key not in document)  # keys added since: left out
    assert report.validation_report.model.name == "cnn-fixture"  # the build names the validated model
    stored = StoredValidation.from_document(_document("stored_validation.json"))
    assert stored.report.model.name is None and stored.best_model == f"int8_{stored.report.best_method}.tflite"
    assert report.validation_report.validation == stored.report.validation  # the cached validation, reused


@pytest.mark.parametrize(("name", "cls"), [("build_report.json", BuildReport), ("stored_validation.json",
                                                                              StoredValidation)])
def test_rendering_a_decoded_document_gives_the_old_renderers_page(name: str, cls: type[Document]) -> None:
    page = render_html(cls.from_document(_document(name)))  # type: ignore[arg-type]
    if name == "build_report.json":
        old = (DATA / "build_report.html").read_text()
        assert _PNG.sub("<png>", page) == _PNG.sub("<png>", old)
        if _same_matplotlib():
            assert page == old
    assert page.count("data:image/png;base64,") >= 3


def test_the_validate_page_is_the_old_renderers() -> None:
    page = render_html(ValidationRun.from_document(_document("validate_report.json")))
    if not _same_matplotlib():
        pytest.skip(f"the digest is of PNGs drawn by matplotlib {RENDERED_WITH_MATPLOTLIB}")
    assert hashlib.sha256(page.encode()).hexdigest() == VALIDATE_HTML_SHA256


def test_a_bare_validation_report_renders_without_a_verdict() -> None:
    report = StoredValidation.from_document(_document("stored_validation.json")).report
    assert isinstance(report, ValidationReport)
    page = render_html(report)
    assert '<span class="verdict">NO VERDICT</span>' in page and "<dt>Gates</dt>" not in page


# ---------------------------------------------------------------- what the types refuse


def _edited(name: str, edit: Any) -> dict[str, Any]:
    document = copy.deepcopy(_document(name))
    edit(document)
    return document


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["validation"]["methods"][0].update(method="median"),
     "MethodResult.method: 'median' is not one of minmax, percentile, mse, kl, auto"),
    (lambda d: d["validation"]["methods"][1].update(top1="97%"), "MethodResult.top1: '97%' matches none of"),
    (lambda d: d["validation"]["methods"][1].update(size_ratio="4x"),
     "MethodResult.size_ratio: expected a number, got '4x'"),
    (lambda d: d["validation"].update(max_drop_pp=True), "ValidationSummary.max_drop_pp: True matches none of"),
    (lambda d: d["latency"][0].update(threads=1.5), "LatencyRow.threads: expected int, got 1.5"),
    (lambda d: d["gates"][0].update(passed=None), "Gate.passed: expected bool, got None"),
    (lambda d: d["layers"].update(rows={}), "LayerReport.rows: expected a list"),
    (lambda d: d["check"][0].update(target="jetson"), "CheckSummary.target: 'jetson' is not one of"),
    (lambda d: d["check"][1]["findings"][0].update(severity="fatal"), "Finding.severity: 'fatal' is not one of"),
    (lambda d: d["model"].pop("sha256"), "ModelSummary is missing field 'sha256'"),
    (lambda d: d.pop("validation"), "ValidationReport is missing field 'validation'"),
    (lambda d: d.pop("artifact"), "BuildReport is missing field 'artifact'"),
    (lambda d: d["validation"]["gate"].pop("split"), "BuildReport.validation.gate: missing key 'split'"),
    (lambda d: d["validation"]["methods"][2].update(extra=1),
     "BuildReport.validation.methods[2]: unexpected key 'extra'"),
    (lambda d: d.update(created="2024-01-01"), "BuildReport: unexpected key 'created'"),
    (lambda d: d["layers"]["rows"][0].update(sqnr_db="inf"),
     "BuildReport.layers.rows[0].sqnr_db: 'inf' does not read back as itself (it reads as None)"),
])
def test_a_malformed_build_report_is_refused_naming_where(edit: Any, message: str) -> None:
    with pytest.raises(InputError) as error:
        BuildReport.from_document(_edited("build_report.json", edit))
    assert str(error.value).startswith(message), str(error.value)


@pytest.mark.parametrize("data", [[], "report", None, 3])
def test_a_document_that_is_not_an_object_is_refused(data: Any) -> None:
    with pytest.raises(InputError, match="ValidationRun: expected an object"):
        ValidationRun.from_document(data)


def test_each_kind_of_report_refuses_the_others_document() -> None:
    with pytest.raises(InputError, match="is missing field 'preprocessing'"):
        ValidationRun.from_document(_document("build_report.json"))
    with pytest.raises(InputError, match="is missing field 'check'"):
        BuildReport.from_document(_document("validate_report.json"))
    with pytest.raises(InputError, match="unexpected key 'best_model'"):
        ValidationRun.from_document({**_document("validate_report.json"), "best_model": "int8_auto.tflite"})
