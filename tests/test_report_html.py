"""report.html: self-contained, escaped, deterministic, robust to missing sections, and really renders in Chromium.

The reports are the ones the real ``edgeq validate`` and ``edgeq build`` write (run once per session on
the tiny zoo CNN), read back into their types, so the tests follow whatever those commands produce;
hostile and odd reports are edits of the real build report (dataclasses.replace), never hand-written dicts.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html as html_lib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgeq.artifacts import Finding, SensitivityReport, Severity, Target, TensorSensitivity
from edgeq.cli import main as cli
from edgeq.envelope import SCHEMA_VERSIONS
from edgeq.errors import InputError
from edgeq.report.content import Page, Report, page_content
from edgeq.report.format import NAME_CHARS, short
from edgeq.report.graph import render_edgetpu
from edgeq.report.graph_data import graph_report
from edgeq.report.page import render_html, write_report
from edgeq.report.sections import MAX_FINDINGS, SECTIONS
from edgeq.results.baseline import Aspect, BaselineComparison, Delta
from edgeq.results.build import BuildReport, CheckSummary, CoverageLayer, CoverageSection
from edgeq.results.validation import Histogram, RecoveryReport, RungResult, ValidationRun
from edgeq.spec.check import check_model
from edgeq.spec.edgetpu import predict_partition
from edgeq.spec.rules import XNNPACK_INT8_OPS
from edgeq.tflite import model as tfl

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).parent / "data" / "report" / "sample_report.json"
DIGITS_INT8 = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"
HEADINGS = ["Gates", "Model", "Accuracy", "Outputs", "Per-layer error", "Activation ranges", "Operators",
            "Edge TPU partition", "Latency", "Target checks", "Calibration set", "Calibration coverage", "Provenance"]
# the page's every section: a build fills all but the two validate --recover / --sensitivity adds and the one
# build --baseline adds (tests/test_report_baseline.py)
SECTION_HEADINGS = [*HEADINGS[:4], "Recovery ladder", "Sensitivity", *HEADINGS[4:9], "Against the baseline",
                    *HEADINGS[9:]]
VALIDATE_HEADINGS = ["Gates", "Model", "Accuracy", "Outputs", "Per-layer error", "Activation ranges", "Operators",
                     "Edge TPU partition", "Provenance"]
DATA_PNG = "data:image/png;base64,"
HOSTILE = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = (1280, 2000)
PREPROCESS = "mean=127.5,std=127.5"
# A small real build that fills every report section. Coverage at ratio 1.0 flags the layers 32 calibration
# samples do not cover, so the build typically fails that gate (the tests read the verdict from the document);
# xnnpack's check has a finding (SOFTMAX is not delegated).
BUILD_RECIPE = """
name: tiny-cnn
model: {model}
preprocess: "mean=127.5,std=127.5"
calibration: {{source: digits:train, conditions: "original,noise", n: 32}}
evaluation: {{source: digits:test, conditions: "original,noise", n: 40}}
methods: [minmax, auto]
targets: [generic, xnnpack]
bench: {{backends: [xnnpack], threads: [1], runs: 20, min_seconds: 0.02}}
gates: {{max_drop_pp: 1.0, spec: [generic], max_p90_ms: {{xnnpack: 60000}}, coverage_threshold: 1.0}}
"""


@pytest.fixture(scope="session")
def validated(tiny_zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a real ``edgeq validate`` wrote report.json and report.html to."""
    folder = tmp_path_factory.mktemp("validate-report")
    eval_set = folder / "eval"
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "40",
                     "--preprocess", PREPROCESS, "-o", str(eval_set)]) == 0
    out = folder / "validation"
    code = cli.main(["validate", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--eval", str(eval_set),
                     "--preprocess", PREPROCESS, "--methods", "minmax,auto", "--max-drop", "1", "-o", str(out)])
    assert code == (0 if _load(out)["passed"] else 1)
    return out


@pytest.fixture(scope="session")
def built(tiny_zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a real ``edgeq build`` wrote report.json and report.html to."""
    folder = tmp_path_factory.mktemp("build-report")
    recipe = folder / "recipe.yaml"
    recipe.write_text(BUILD_RECIPE.format(model=tiny_zoo["cnn"]))
    out = folder / "build"
    code = cli.main(["build", str(recipe), "-o", str(out)])
    assert code == (0 if _load(out)["passed"] else 1)
    return out


@pytest.fixture(params=["validate", "build"])
def real(request: pytest.FixtureRequest) -> Path:
    """Each real report folder in turn."""
    return request.getfixturevalue("validated" if request.param == "validate" else "built")


def _load(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


def _page(folder: Path) -> str:
    return (folder / "report.html").read_text()


def _report(folder: Path) -> BuildReport | ValidationRun:
    """The report a real command wrote, read back into its type."""
    document = _load(folder)
    return (BuildReport if "check" in document else ValidationRun).from_document(document)


def _build(built: Path) -> BuildReport:
    return BuildReport.from_document(_load(built))


def _replace(value: Any, path: str, new: Any) -> Any:
    """``value`` with the part at the dotted ``path`` replaced (attributes by name, tuple items by index)."""
    head, _, rest = path.partition(".")
    if isinstance(value, tuple):
        index = int(head)
        item = _replace(value[index], rest, new) if rest else new
        return (*value[:index], item, *value[index + 1:])
    return dataclasses.replace(value, **{head: _replace(getattr(value, head), rest, new) if rest else new})


class _Page(HTMLParser):
    """Tags, attributes, headings and text of a page, to test structure rather than substrings."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.h2: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs]
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data.strip())


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _summary(page: str) -> str:
    return page.split('id="summary"', 1)[1].split("</section>", 1)[0]


def _expected_images(report: Report) -> int:
    """Figures the page must carry for this report, counted from what the report holds."""
    content = page_content(report)
    validation, layers, coverage = content.validation, content.layers, content.coverage
    preview = content.calibration.preview_png if content.calibration else None
    return (bool(validation and validation.methods) + bool(validation and validation.baseline.per_condition)
            + bool(layers and layers.rows) + len(content.histograms) + bool(content.latency)
            + bool(coverage and coverage.layers) + bool(preview and base64.b64decode(preview).startswith(b"\x89PNG")))


def _pct(share: float) -> str:
    return f"{100 * share:.2f}%"


# ---------------------------------------------------------------- the documents edgeq validate and build write


def test_real_reports_have_their_sections_in_order(validated: Path, built: Path) -> None:
    assert [heading for heading, _ in SECTIONS.values()] == SECTION_HEADINGS
    assert _Page(_page(validated)).h2 == VALIDATE_HEADINGS
    assert _Page(_page(built)).h2 == HEADINGS  # a build fills every section the page knows
    for folder in (validated, built):
        page = _page(folder)
        assert 'id="summary"' in page
        verdict = re.findall(r'<span class="verdict">([A-Z ]+)</span>', page)
        assert verdict == ["PASS" if _report(folder).passed else "FAIL"]


def test_the_page_is_the_rendering_of_report_json(real: Path) -> None:
    """report.html holds nothing report.json does not: rendering the JSON alone gives the same page."""
    assert render_html(_report(real)) == _page(real)


def test_images_are_inline_pngs_that_decode(real: Path) -> None:
    page, report = _page(real), _report(real)
    assert page_content(report).histograms, "validate writes histograms of the worst layers"
    expected = _expected_images(report)
    assert page.count(DATA_PNG) == expected
    images = _images(page)
    assert len(images) == expected
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            image.load()
            assert image.width >= 100 and image.height >= 40
            assert b"Software" not in data  # no matplotlib version stamp: bytes do not depend on the install


def test_histograms_are_drawn_from_what_validate_writes(real: Path) -> None:
    page = _page(real)
    for histogram in page_content(_report(real)).histograms:
        assert len(histogram.bin_edges) == len(histogram.counts) + 1
        assert f'alt="Histogram of {html_lib.escape(histogram.name)}"' in page
    assert "not drawn" not in page


def test_nothing_is_loaded_from_anywhere(real: Path) -> None:
    page_text = _page(real)
    page = _Page(page_text)
    assert not re.search(r"https?://|src=\"//|href=\"//|url\(|@import", page_text, re.IGNORECASE)
    assert not {"script", "link", "iframe", "object", "embed", "base", "audio", "video", "source"} & set(page.tags)
    for tag, name, value in page.attrs:
        assert not name.startswith("on"), (tag, name)
        if name == "src":
            assert value.startswith(DATA_PNG), value[:60]
        if name == "href":
            assert value.startswith("#"), value  # in-page navigation only
    csp = [value for _, name, value in page.attrs if name == "content" and "default-src" in value]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]


def test_urls_in_the_report_stay_text(built: Path) -> None:
    report = _build(built)
    advice = (*report.validation_report.validation.advice,
              "see https://example.com/help and <a href='http://evil'>x</a>")
    page = _Page(render_html(_replace(report, "validation_report.validation.advice", advice)))
    assert any("https://example.com/help" in t for t in page.text)
    assert all(name not in ("href", "src") or value.startswith(("#", DATA_PNG)) for _, name, value in page.attrs)


def test_summary_reads_at_a_glance(real: Path) -> None:
    """Every figure in the summary box is the report's own, in the right place."""
    content = page_content(_report(real))
    summary = _summary(_page(real))
    assert f'<span class="verdict">{"PASS" if content.passed else "FAIL"}</span>' in summary
    gates = content.gates or ()
    failed = [g for g in gates if not g.passed]
    if failed:
        assert f"{len(failed)} of {len(gates)} failed:" in summary
        for gate in failed:
            assert f"<b>{html_lib.escape(gate.name)}</b> ({html_lib.escape(gate.detail)})" in summary
    else:
        assert f"all {len(gates)} passed</span> ({', '.join(g.name for g in gates)})" in summary
    validation = content.validation
    assert validation is not None
    best = next(m for m in validation.methods if m.method == validation.best_method)
    assert f"<dt>Best method</dt><dd><b>{best.method}</b></dd>" in summary
    top1 = re.search(r"<dt>Top-1</dt><dd>FP32 <b>([^<]+)</b> → INT8 (\S+) <b>([^<]+)</b> \(drop ([^ ]+) pp, "
                     r"95% CI ([^ ]+) to ([^ ]+) pp", summary)
    assert top1 is not None, summary
    assert top1.groups() == (_pct(validation.baseline.top1), best.method, _pct(best.top1),
                             f"{best.drop_pp:+.2f}", *(f"{v:+.2f}" for v in best.drop_ci_pp))
    gate = validation.gate  # the limit is judged on the held-out half, in a row of its own
    row = re.search(r"<dt>Max-drop gate</dt><dd>held-out half, (\d+) samples: FP32 ([^ ]+) → INT8 (\S+) ([^ ]+) "
                    r"\(drop <b>([^ ]+) pp</b>, 95% CI ([^ ]+) to ([^ ]+) pp, limit ([^ ]+) pp\): "
                    r'<span class="(ok|warn|bad)">', summary)
    assert row is not None, summary
    assert validation.max_drop_pp is not None
    assert row.groups() == (str(gate.n), _pct(gate.fp32_top1), gate.method, _pct(gate.int8_top1),
                            f"{gate.drop_pp:+.2f}", *(f"{v:+.2f}" for v in gate.drop_ci_pp),
                            f"{validation.max_drop_pp:g}", ("ok" if gate.clear else "warn") if gate.passed else "bad")
    model = content.model
    assert model is not None
    assert f"<b>{model.size_ratio:.2f}×</b> smaller" in summary
    assert f"{model.float_bytes / 1024:,.1f} KiB FP32 → {model.int8_bytes / 1024:,.1f} KiB INT8" in summary


def test_summary_takes_each_number_from_its_own_field(built: Path) -> None:
    """The tiny model's FP32 and INT8 top-1 may coincide: give every field its own value to see none is swapped."""
    report = _build(built)
    validation = report.validation_report.validation
    # the best row is not the highest one: the summary must follow best_method
    methods = tuple(dataclasses.replace(m, top1=0.5 + 0.0625 * i, drop_pp=round(100 * (0.8125 - 0.5 - 0.0625 * i), 4))
                    for i, m in enumerate(validation.methods))
    best = methods[0]
    gate = dataclasses.replace(validation.gate, method=best.method, n=48, fp32_top1=0.75, int8_top1=0.4375,
                               drop_pp=31.25, drop_ci_pp=(12.5, 47.5), max_drop_pp=25.5, passed=False, clear=False)
    edited = dataclasses.replace(validation, baseline=dataclasses.replace(validation.baseline, top1=0.8125),
                                 methods=methods, best_method=best.method, max_drop_pp=25.5, gate=gate)
    summary = _summary(render_html(_replace(report, "validation_report.validation", edited)))
    assert f"<dt>Top-1</dt><dd>FP32 <b>81.25%</b> → INT8 {best.method} <b>50.00%</b> (drop +31.25 pp" in summary
    assert (f"held-out half, 48 samples: FP32 75.00% → INT8 {best.method} 43.75% (drop <b>+31.25 pp</b>, "
            "95% CI +12.50 to +47.50 pp, limit 25.5 pp): <span class=\"bad\">fail, the limit lies inside the "
            "interval") in summary  # over the limit: red, and honest that the interval reaches below it


def test_same_bytes_in_other_processes(built: Path) -> None:
    """The page depends on the report only: not on the process, its hash seed or what ran in it before."""
    code = ("import json, sys\nfrom pathlib import Path\nfrom edgeq.report.page import render_html\n"
            "from edgeq.results.build import BuildReport\n"
            "report = BuildReport.from_document(json.loads(Path(sys.argv[1]).read_text()))\n"
            "sys.stdout.buffer.write(render_html(report).encode())\n")
    written = (built / "report.html").read_bytes()
    runs = [subprocess.Popen([sys.executable, "-c", code, str(built / "report.json")], cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": seed}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for seed in ("0", "1")]
    for run in runs:
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err.decode()[-2000:]
        assert out == written


def test_title_argument_wins(real: Path) -> None:
    report = _report(real)
    assert f"<title>{html_lib.escape(report.title)}</title>" in _page(real)
    assert "<title>Nightly &amp; co</title>" in render_html(report, title="Nightly & co")


# ---------------------------------------------------------------- hostile and odd reports


def test_hostile_strings_are_escaped(built: Path) -> None:
    report = _build(built)
    images = _expected_images(report)
    name = f"{HOSTILE}$x_{{1}}$^"  # also a matplotlib mathtext trap in the plot labels
    ranges = report.validation_report.histograms[0].ranges
    with_findings = [i for i, s in enumerate(report.check) if s.findings]
    assert with_findings, "the real build's xnnpack check has a finding (SOFTMAX is not delegated)"
    assert report.coverage is not None
    for path, value in (("title", f"</title>{HOSTILE}"), ("validation_report.layers.rows.4.name", name),
                        ("validation_report.layers.worst.0", name), ("validation_report.histograms.0.name", name),
                        ("validation_report.histograms.0.ranges", {**ranges, '"><img src=x onerror=alert(1)>':
                                                                   (0.0, 1.0)}),
                        ("coverage.layers.3", dataclasses.replace(report.coverage.layers[3], name="_" + name,
                                                                  flagged=True)),
                        ("gates.0.detail", '" onmouseover="alert(1)'),
                        (f"check.{with_findings[0]}.findings.0.message", HOSTILE), ("latency.0.label", HOSTILE),
                        ("calibration.preview_png", 'AAAA" onerror="alert(1)')):
        report = _replace(report, path, value)
    page = render_html(report)
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = _Page(page)
    assert "script" not in parsed.tags
    assert not [name for _, name, _ in parsed.attrs if name.startswith("on")]
    assert "not a base64 PNG" in page
    assert page.count(DATA_PNG) == images - 1  # every figure still drawn; the bad preview is not embedded


@pytest.mark.parametrize("key", list(SECTIONS))
def test_each_section_stands_alone_and_is_optional(key: str, built: Path) -> None:
    """A section renders from its own part of the report alone, and is left out when the report has nothing
    for it."""
    _, render = SECTIONS[key]
    field = _PAGE_FIELD.get(key, key)
    part = _RECOVERY_PARTS[key] if key in _RECOVERY_PARTS else getattr(page_content(_build(built)), field)
    assert render(Page(**{field: part}))
    assert render(Page()) == ""


_PAGE_FIELD = {"edgetpu": "graph"}  # sections that show a part of another key's data
_RUNG = RungResult(rung="equalize", status="met the gate", note="cross-layer, 3 groups", selection_sqnr_db=41.9,
                   selection_agreement=1.0, gate_passed=True, int8_bytes=39_000, latency_ms={"cpu": 0.14},
                   model="recover_1_equalize.tflite")
_RECOVERY_PARTS = {
    "recovery": RecoveryReport(ladder=("equalize",), targets=("generic",),
                               start=dataclasses.replace(_RUNG, rung="start", status="missed the gate",
                                                         gate_passed=False), rungs=(_RUNG,), met_by="equalize",
                               passed=True, model=_RUNG.model, verdict="rung equalize met the gate"),
    "sensitivity": SensitivityReport(samples=4, all_quantized_db=20.0, activations_only_db=21.0, weights_only_db=40.0,
                                     tensors=(TensorSensitivity(name="conv;" + HOSTILE, tensor_kind="activation",
                                                                op="CONV_2D", only_db=22.0, all_but_db=35.0,
                                                                recovers_db=15.0, rank=1),),
                                     shares_scale={}, real_int8_db=20.5, ranges="auto"),
    "baseline_comparison": BaselineComparison(
        path=HOSTILE, schema_version=1, edgeq_version="0.1.0", method="minmax", eval_n=40, environment=None,
        latency_comparable=False, deltas=(Delta(aspect=Aspect.SIZE, subject="int8 file", baseline=100.0, current=90.0,
                                                change=-10.0, unit="%", published=True),)),
}


def test_a_report_renders_only_the_sections_it_has_something_for(built: Path) -> None:
    report = dataclasses.replace(_build(built), check=(), latency=(), coverage=None, gates=(), graph=None,
                                 provenance=None)
    layers = dataclasses.replace(report.validation_report.layers, rows=(), worst=())
    report = _replace(_replace(report, "validation_report.layers", layers), "validation_report.histograms", ())
    page = render_html(report)
    assert _Page(page).h2 == ["Model", "Accuracy", "Outputs", "Calibration set"]
    assert '<dt>Gates</dt><dd><span class="muted">none set</span>' in _summary(page)


def test_sections_with_empty_or_odd_parts_render(built: Path) -> None:
    report = _build(built)
    rows, latency = report.validation_report.layers.rows, report.latency
    layers = dataclasses.replace(report.validation_report.layers, worst=(), rows=(
        dataclasses.replace(rows[0], name="a", sqnr_db=None, local_sqnr_db=None),
        dataclasses.replace(rows[1], name="b", sqnr_db=math.inf, local_sqnr_db=None)))
    histograms = (Histogram(name="h", bin_edges=(0.0, 1.0), counts=(1, 2), ranges={}),  # one edge short
                  Histogram(name="z", bin_edges=(0.0, 1.0, 2.0), counts=(0, 0), ranges={"kl": (math.inf, 1.0)}),
                  Histogram(name="s", bin_edges=(math.nan, 1.0), counts=(3,), ranges={}))
    coverage = CoverageSection(threshold=1.0, flagged=1, per_condition_max={"original": (1.0, 2.0)},  # not lined up
                               layers=(CoverageLayer(name="x", calib_max=1.0, production_max=math.nan, ratio=None,
                                                     flagged=True),))
    report = dataclasses.replace(
        report, latency=(dataclasses.replace(latency[0], label="no samples", samples_ms=()),
                         dataclasses.replace(latency[1], label="", samples_ms=(math.nan, 1.0, 2.0))),
        check=(CheckSummary(target=Target.TFLM, passed=False, errors=1, warnings=0, findings=()),),
        calibration=dataclasses.replace(report.calibration, counts={"original": 0}, preview_png=None),
        coverage=coverage)
    report = _replace(_replace(report, "validation_report.layers", layers), "validation_report.histograms", histograms)
    page = render_html(report)
    assert "not drawn: 2 bin edges for 2 counts" in page
    assert "non-finite bin edges" in page
    assert _Page(page).h2 == HEADINGS


def test_findings_are_sorted_errors_first_and_capped(built: Path) -> None:
    findings = tuple(Finding(rule_id=f"r{i}", severity=Severity.INFO, message=f"info {i}")
                     for i in range(MAX_FINDINGS + 20))
    findings += (Finding(rule_id="float.tensor", severity=Severity.ERROR, op_type="CONV_2D", message="float!"),)
    check = (CheckSummary(target=Target.TFLM, passed=False, errors=1, warnings=0, findings=findings),)
    page = render_html(dataclasses.replace(_build(built), passed=True, check=check))
    table = page.split("Findings (errors first)", 1)[1]
    assert table.index("float.tensor") < table.index("info 0")
    assert "info 48" in table and "info 49" not in table  # the error plus 49 infos: MAX_FINDINGS rows
    assert "21 more finding(s) not shown" in page
    assert ">PASS<" in _summary(page)  # the document's own verdict; the failed target shows in its section
    assert 'class="failed"' in page.split('id="check"', 1)[1]


# ---------------------------------------------------------------- files


def test_write_report(built: Path, tmp_path: Path) -> None:
    json_path, html_path = write_report(_build(built), tmp_path / "out")
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    assert json_path.read_bytes() == (built / "report.json").read_bytes()  # pretty-printed, in the document's order
    assert html_path.read_bytes() == (built / "report.html").read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [  # no temp files
        "report.html", "report.json", "report.model_explorer.accumulated_sqnr.json",
        "report.model_explorer.local_sqnr.json"]


def test_write_report_makes_strict_json(built: Path, tmp_path: Path) -> None:
    report = _replace(_build(built), "validation_report.layers.rows.0.sqnr_db", math.inf)
    report = _replace(report, "validation_report.layers.rows.0.saturation", np.float32(0.25))
    report = _replace(report, "latency.0.samples_ms", np.array([1.0, 2.0, math.nan]))
    json_path, _ = write_report(report, tmp_path)
    text = json_path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    loaded = json.loads(text)
    assert loaded["kind"] == "edgeq.report"
    assert loaded["layers"]["rows"][0]["sqnr_db"] is None and loaded["layers"]["rows"][0]["saturation"] == 0.25
    assert loaded["latency"][0]["samples_ms"] == [1.0, 2.0, None]


def test_report_needs_no_tensorflow(built: Path, tmp_path: Path) -> None:
    code = (
        "import sys, json; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from pathlib import Path\n"
        "from edgeq.report.page import write_report\n"
        "from edgeq.results.build import BuildReport\n"
        f"document = json.loads(Path({str(built / 'report.json')!r}).read_text())\n"
        f"write_report(BuildReport.from_document(document), Path({str(tmp_path)!r}))\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.html").read_bytes() == (built / "report.html").read_bytes()


# ---------------------------------------------------------------- the hand-written example in docs/report.md


def _skeleton(value: Any, path: str = "") -> Any:
    """Keys and nesting of a document, not its values; mappings keyed by data (conditions, methods) collapse."""
    if isinstance(value, dict):
        if path.endswith(("per_condition", "counts", "ranges", "per_condition_max")):
            return {"*": _merge([_skeleton(v, f"{path}.*") for v in value.values()])}
        return {k: _skeleton(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_merge([_skeleton(v, path) for v in value])]
    if value is None:
        return None
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "str"


def _merge(skeletons: list[Any]) -> Any:
    """One skeleton for the items of a list or a data-keyed mapping: rows' keys united, empty items ignored."""
    known = [s for s in skeletons if s not in (None, [None], {})]
    if known and all(isinstance(s, dict) for s in known):
        keys = list(dict.fromkeys(k for s in known for k in s))
        return {k: _merge([s.get(k) for s in known]) for k in keys}
    return known[0] if known else None


def _same_shape(sample: Any, real: Any, path: str = "") -> list[str]:
    """Where two skeletons differ, one line each."""
    if sample is None or real is None or sample == [None] or real == [None]:
        return []  # an empty list or a null says nothing about the shape
    if isinstance(sample, dict) and isinstance(real, dict):
        problems = []
        if set(sample) - set(real):
            problems.append(f"{path or '/'}: keys only in the sample: {sorted(set(sample) - set(real))}")
        if set(real) - set(sample):
            problems.append(f"{path or '/'}: keys the sample lacks: {sorted(set(real) - set(sample))}")
        return problems + [p for k in sample if k in real for p in _same_shape(sample[k], real[k], f"{path}.{k}")]
    if isinstance(sample, list) and isinstance(real, list):
        return _same_shape(sample[0], real[0], f"{path}[]")
    return [] if sample == real else [f"{path}: {sample} in the sample, {real} in a real build"]


def test_the_documented_sample_has_the_shape_of_a_real_build(built: Path) -> None:
    sample, real = json.loads(SAMPLE.read_text()), _load(built)
    problems = _same_shape(_skeleton(sample), _skeleton(real))
    edges = {len(h["bin_edges"]) for h in sample["histograms"]}, {len(h["bin_edges"]) for h in real["histograms"]}
    if edges[0] != edges[1]:
        problems.append(f"histogram bin edges: {sorted(edges[0])} in the sample, {sorted(edges[1])} in a real build")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- everything the report measured, shown


def _section(page: str, key: str) -> str:
    return page.split(f'<section id="{key}">', 1)[1].split("</section>", 1)[0]


def _rows(html: str) -> list[list[str]]:
    """The text of every body cell, row by row."""
    rows = []
    for body in re.findall(r"<tr[^>]*>(.*?)</tr>", html.split("<tbody>", 1)[-1], re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)
        rows.append([html_lib.unescape(re.sub(r"<br>", "\n", re.sub(r"<(?!br>)[^>]+>", "", c))) for c in cells])
    return rows


def _int8_path(report: Report) -> Path:
    provenance = page_content(report).provenance
    assert provenance is not None
    return Path(next(i.path for i in provenance.inputs if i.role == "int8 model"))


def _expected_quantization(model: Any, tensor: Any) -> str:
    """What the op table must say for a tensor, from the flatbuffer read here."""
    q = tensor.quantization
    dtype = tfl.tensor_type_name(tensor.type).lower()
    scales = [] if q is None or q.scale is None else list(q.scale)
    if len(scales) == 1:
        return f"{dtype} s={scales[0]:.4g} zp={int(q.zeroPoint[0])}"
    return f"{dtype} per-axis ×{len(scales)} (axis {q.quantizedDimension})" if scales else dtype


def test_op_table_lists_the_int8_models_operators(real: Path) -> None:
    report = _report(real)
    data = _int8_path(report).read_bytes()
    model = tfl.parse(data)
    graph, ops = page_content(report).graph, model.subgraphs[0].operators
    assert graph is not None and graph.model_sha256 == hashlib.sha256(data).hexdigest()
    rows = _rows(_section(_page(real), "graph"))
    assert [r[:2] for r in rows] == [[str(i), tfl.op_type(model, op)] for i, op in enumerate(ops)]
    for row, op in zip(rows, ops, strict=True):
        for column, operands in ((2, op.inputs), (3, op.outputs)):
            tensors = [model.subgraphs[0].tensors[i] for i in operands if i >= 0]
            for line, tensor in zip(row[column].split("\n"), tensors, strict=True):
                assert _expected_quantization(model, tensor) in line, (line, tfl.tensor_name(tensor))
        kind = tfl.op_type(model, op)  # XNNPACK's measured int8 coverage (edgeq.spec.rules), Edge TPU: predicted
        assert row[4] == ("delegated" if kind in XNNPACK_INT8_OPS else "builtin kernels")
    on_tpu = {p.index for p in predict_partition(model).placements if p.on_tpu}
    assert [r[5] for r in rows] == ["Edge TPU" if i in on_tpu else "CPU" for i in range(len(ops))]


def test_edgetpu_section_lists_what_the_spec_check_leaves_on_the_cpu() -> None:
    """An op the Edge TPU cannot run (GELU, outside Coral's table) splits the graph: the section names it first and
    lists every later op on the CPU, as ``edgeq check --target edgetpu`` says."""
    model = tfl.parse(DIGITS_INT8.read_bytes())
    split = next(i for i, op in enumerate(model.subgraphs[0].operators) if tfl.op_type(model, op) == "MEAN")
    model.subgraphs[0].operators[split].opcodeIndex = tfl.opcode_index(model, "GELU")
    data = tfl.serialize(model)
    findings = check_model(data, target="edgetpu").findings
    first = [f.op_index for f in findings if f.severity == Severity.ERROR and f.rule_id.startswith("edgetpu.")]
    assert first == [split]
    graph = graph_report(data)
    assert [r.edgetpu for r in graph.ops] == [i < split for i in range(len(graph.ops))]
    assert not graph.ops[split].xnnpack  # GELU is outside XNNPACK's int8 coverage too (an xnnpack.* finding)
    section = render_edgetpu(Page(graph=graph))
    cpu = _rows(section)
    count = len(model.subgraphs[0].operators)
    assert [int(r[0]) for r in cpu] == list(range(split, count))
    assert cpu[0][1:3] == ["GELU", "edgetpu.unsupported-op"] and "GELU is not in Coral" in cpu[0][3]
    assert all(r[2] == "edgetpu.cpu-fallback" and f"after first unsupported op {split}" in r[3] for r in cpu[1:])
    assert f"<b>{split}</b> of {count} ops predicted mapped" in section and f"splits at op <b>{split} (GELU)" in section


def test_layer_tables_show_local_and_accumulated_sqnr(real: Path) -> None:
    layers = page_content(_report(real)).layers
    assert layers is not None
    section = _section(_page(real), "layers")
    every = _rows(section.split("<details>", 1)[1])
    assert [(r[0], r[3], r[4]) for r in every] == [(str(i), _db(row.local_sqnr_db), _db(row.sqnr_db))
                                                   for i, row in enumerate(layers.rows)]
    worst = _rows(section.split("<h3>Worst layers (ranked by local SQNR)</h3>", 1)[1].split("<details>", 1)[0])
    local = [float(r[3]) for r in worst]
    assert local == sorted(local) and {r[1] for r in worst} <= {short(n, NAME_CHARS) for n in layers.worst}


def _db(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def test_sqnr_bars_are_coloured_by_the_local_sqnr_they_plot(built: Path) -> None:
    """The bar's pixels under each hover area: red below 30 dB, amber below 35, blue above, as the table cells."""
    report = _build(built)
    rows = report.validation_report.layers.rows
    chosen = [20.0, 32.0, 50.0] * len(rows)
    edited = tuple(dataclasses.replace(r, local_sqnr_db=chosen[i]) for i, r in enumerate(rows))
    page = render_html(_replace(report, "validation_report.layers.rows", edited))
    chart = next(b for b in re.findall(r'<img [^>]*usemap="#layers-map"[^>]*>', page))
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", chart).group(1))
    chart_map = page.split('<map name="layers-map">', 1)[1].split("</map>", 1)[0]
    areas = re.findall(r'<area shape="rect" coords="(\d+),(\d+),(\d+),(\d+)"', chart_map)
    assert len(areas) == len(rows)
    expected = {"bad": "#d62728", "warn": "#ff7f0e", "ok": "#1f77b4"}
    with Image.open(io.BytesIO(png)) as image:
        pixels = image.convert("RGB")
        for (x0, _, x1, y1), value in zip(areas, chosen, strict=False):
            drawn = pixels.getpixel((int(x0) + (int(x1) - int(x0)) * 3 // 8, int(y1) - 8))  # off the centre tick
            colour = expected["bad" if value < 30 else "warn" if value < 35 else "ok"]
            assert drawn == tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)), (value, drawn)
    cells = _rows(_section(page, "layers").split("<details>", 1)[1])
    assert [c[3] for c in cells] == [f"{v:.1f}" for v in chosen[:len(rows)]]
    assert '<span class="bad">20.0</span>' in page and '<span class="warn">32.0</span>' in page


def test_provenance_fingerprints_every_input(real: Path) -> None:
    import edgeq

    document, report = _load(real), _report(real)
    assert (document["kind"], document["schema_version"]) == ("edgeq.report", SCHEMA_VERSIONS["edgeq.report"])
    assert document["edgeq_version"] == edgeq.__version__
    provenance = page_content(report).provenance
    assert provenance is not None and provenance.edgeq_version == edgeq.__version__
    roles = {i.role: i for i in provenance.inputs}
    if provenance.command == "build":
        assert list(roles) == ["recipe", "model", "calibration set", "evaluation set", "int8 model"]
        assert provenance.settings["name"] == "tiny-cnn" and roles["recipe"].path == str(real.parent / "recipe.yaml")
        assert Path(roles["int8 model"].path) == Path(report.artifact.path)
    else:
        assert list(roles) == ["model", "calibration set", "evaluation set", "int8 model"]
        assert provenance.settings["methods"] == "minmax,auto" and roles["calibration set"].sha256 is None
        assert roles["evaluation set"].path == str(real.parent / "eval" / "manifest.jsonl")
    hashed = [i for i in provenance.inputs if i.sha256 is not None]
    for item in hashed:
        assert hashlib.sha256(Path(item.path).read_bytes()).hexdigest() == item.sha256, item.role
    section = _section(_page(real), "provenance")
    assert all(item.sha256 in section for item in hashed) and edgeq.__version__ in section


def test_a_newer_report_schema_is_refused(built: Path) -> None:
    document = _load(built)
    assert BuildReport.from_document(document) == _build(built)
    with pytest.raises(InputError, match="newer than this edgeq reads"):
        BuildReport.from_document({**document, "schema_version": SCHEMA_VERSIONS["edgeq.report"] + 1})
    with pytest.raises(InputError, match=r"expected a edgeq\.report document"):
        BuildReport.from_document({**document, "kind": "edgeq.check"})


def test_long_names_are_shortened_with_the_whole_name_on_hover(built: Path) -> None:
    report = _build(built)
    long = "model/" + "/".join(f"stage_{i}" for i in range(12)) + "/conv_3/BiasAdd;model/fused/relu"
    page = render_html(_replace(report, "validation_report.layers.rows.2.name", long))
    titled = re.findall(r'<span title="([^"]*)">([^<]*)</span>', page)
    assert titled
    for title, shown in titled:
        whole, text = html_lib.unescape(title), html_lib.unescape(shown)
        first = whole.split(";")[0] or whole
        assert text == first or (len(text) < len(first) and "…" in text), (whole, text)
        head, _, tail = text.partition("…")
        assert first.startswith(head.rstrip("/")) and first.endswith(tail.lstrip("/"))
    layer = [html_lib.unescape(shown) for title, shown in titled if html_lib.unescape(title) == long]
    assert layer and all(s.startswith("model/…/") and s.endswith("/conv_3/BiasAdd") for s in layer)


def test_model_explorer_node_data_lands_on_the_adapters_nodes(validated: Path) -> None:
    """Model Explorer's own classes read the files back unchanged, and every key is a node its TFLite adapter makes
    for the INT8 model (the op computing the layer, or the graph input), with the layer's value."""
    from model_explorer import node_data_builder as ndb
    from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter

    report = _report(validated)
    layers = page_content(report).layers
    assert layers is not None
    collection = BuiltinTfliteFlatbufferAdapter().convert(str(_int8_path(report)), {})["graphCollections"][0]
    graph = max(collection.graphs, key=lambda g: len(g["nodes"]))
    outputs = {node["id"]: [a["value"] for meta in node["outputsMetadata"] for a in meta["attrs"]
                            if a["key"] == "tensor_name"] for node in graph["nodes"]}
    inputs = next(names for node_id, names in outputs.items()
                  if next(n for n in graph["nodes"] if n["id"] == node_id)["label"] == "GraphInputs")
    for stem, value_of in (("local_sqnr", lambda r: r.local_sqnr_db), ("accumulated_sqnr", lambda r: r.sqnr_db)):
        data = json.loads((validated / f"report.model_explorer.{stem}.json").read_text())
        results = {key: ndb.NodeDataResult(**value) for key, value in data["results"].items()}
        parsed = ndb.GraphNodeData(**{**data, "results": results,
                                      "thresholds": [ndb.ThresholdItem(**t) for t in data["thresholds"]]})
        written = json.loads(parsed.to_json_string())  # Model Explorer's own defaults added, nothing of ours lost
        assert {key: written[key] for key in data} == data
        expected = {r.name: round(v, 3) for r in layers.rows if (v := value_of(r)) is not None and math.isfinite(v)}
        found = {}
        for key, result in parsed.results.items():
            names = outputs.get(key, [key] if key in inputs else [])
            layer = [n for n in names if n in expected]
            assert len(layer) == 1, (key, names)
            found[layer[0]] = result.value
        assert found == expected
        assert any(key in outputs for key in parsed.results)  # op nodes by the adapter's own ids


# ---------------------------------------------------------------- a real browser

_CHECKER = """<script>
const blocked = [], errors = [];
document.addEventListener("securitypolicyviolation", e => blocked.push(e.blockedURI));
window.addEventListener("error", e => errors.push(String(e.message)));
window.addEventListener("load", () => {
  for (const img of document.images) img.dataset.decoded = String(img.complete && img.naturalWidth > 0);
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.resources = JSON.stringify(performance.getEntriesByType("resource").map(r => r.name));
  document.body.dataset.blocked = JSON.stringify(blocked);
  // every image-map area: its title, and what the browser finds under its centre (the area, on the image
  // drawn at its natural size, so the areas' pixel coordinates land on the bars)
  const areas = [];
  for (const area of document.querySelectorAll("map area")) {
    const img = document.querySelector(`img[usemap="#${area.parentElement.name}"]`);
    img.scrollIntoView({block: "center", inline: "nearest"});
    const box = img.getBoundingClientRect(), [x0, y0, x1, y1] = area.coords.split(",").map(Number);
    const hit = document.elementFromPoint(box.left + (x0 + x1) / 2, box.top + (y0 + y1) / 2);
    areas.push({map: area.parentElement.name, title: area.title, hit: hit ? hit.tagName : "",
                target: !!document.getElementById(area.getAttribute("href").slice(1)),
                scaled: img.width !== img.naturalWidth});
  }
  document.body.dataset.areas = JSON.stringify(areas);
  document.body.dataset.errors = JSON.stringify(errors);
});
</script>
"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", f"--user-data-dir={profile}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    resource_errors = [line for line in result.stderr.splitlines()
                       if "Failed to load" in line or ("ERR_" in line and "report" in line)]
    assert not resource_errors, resource_errors
    return result


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (Debian)")
VERDICT_RGB = {True: (0x1B, 0x7A, 0x3A), False: (0xB4, 0x23, 0x18)}  # --pass and --fail in the page's CSS


@needs_chromium
def test_chromium_screenshot_shows_the_report(built: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
              (built / "report.html").as_uri())
    assert shot.is_file()
    with Image.open(shot) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank page: text, tables and figures
    verdict = np.all(np.abs(pixels - np.array(VERDICT_RGB[_load(built)["passed"]])) < 40, axis=-1)
    assert verdict.sum() > 500  # the verdict box drawn in its colour with the inline CSS
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4])) < 12, axis=-1)
    assert blue.sum() > 5000  # matplotlib's bars of the first figure: images painted, not broken icons


@needs_chromium
def test_chromium_dom_has_every_section_and_decoded_image(built: Path, tmp_path: Path) -> None:
    written_report = built / "report.html"
    images = _expected_images(_build(built))
    page = written_report.read_text()
    assert "<script" not in page
    # The report runs no script and its CSP forbids one: only this test's copy adds the checker and allows it.
    checked = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';", 1)
    checked = checked.replace("</body>", _CHECKER + "</body>", 1)
    assert checked != page
    copy_path = tmp_path / "report-checked.html"
    copy_path.write_text(checked)
    dom = _chromium(tmp_path, f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", copy_path.as_uri()).stdout
    plain = _chromium(tmp_path, "--dump-dom", written_report.as_uri()).stdout
    for headings_of in (dom, plain):
        assert _Page(headings_of).h2 == HEADINGS
    # the latency section as the browser parsed it: the INT8/FP32 ratio said in words, and where it ran
    assert "than FP32 on xnnpack with 1 thread" in plain and "Where it ran" in plain
    body = [dict((n, v) for t, n, v in _Page(dom).attrs if t == "body")][0]
    assert body["data-images"] == str(images)
    assert json.loads(body["data-resources"]) == []  # nothing fetched: no file, no network
    assert json.loads(body["data-blocked"]) == []  # and nothing the CSP had to stop
    decoded = [v for t, n, v in _Page(dom).attrs if t == "img" and n == "data-decoded"]
    assert decoded == ["true"] * images
    assert json.loads(body["data-errors"]) == []  # no script error
    # the per-layer and coverage charts: one area per layer, titled with its full name, linked (to its row), and
    # what the browser finds where the area is drawn
    report = _build(built)
    areas = json.loads(body["data-areas"])
    titles = {name: [a["title"] for a in areas if a["map"] == name] for name in ("layers-map", "coverage-map")}
    assert [t.split(" ", 2)[1] for t in titles["layers-map"]] == [r.name for r in report.validation_report.layers.rows]
    assert report.coverage is not None
    assert [t.rsplit(": calibration max", 1)[0] for t in titles["coverage-map"]] == [r.name for r in
                                                                                     report.coverage.layers]
    assert not [a for a in areas if not (a["target"] and a["hit"] == "AREA" and not a["scaled"])]
    # hover titles in the new sections, as the browser parsed them
    parsed = _Page(plain)
    titles = {v for t, n, v in parsed.attrs if t == "span" and n == "title"}
    graph = _build(built).graph
    assert graph is not None and {t.name for op in graph.ops for t in op.outputs} <= titles
