"""report.html: self-contained, escaped, deterministic, robust to missing sections, and really renders in Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
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

from edgeq.report.html import MAX_FINDINGS, SECTION_HEADINGS, render_html, write_report

SAMPLE = Path(__file__).parent / "data" / "report" / "sample_report.json"
HEADINGS = ["Gates", "Model", "Accuracy", "Per-layer error", "Activation ranges", "Latency", "Target checks",
            "Calibration set", "Calibration coverage"]
# accuracy by method + per condition, per-layer SQNR, 3 histograms, latency, coverage, calibration preview
SAMPLE_IMAGES = 2 + 1 + 3 + 1 + 1 + 1
DATA_PNG = "data:image/png;base64,"
HOSTILE = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = (1280, 2000)


def sample() -> dict[str, Any]:
    return json.loads(SAMPLE.read_text())


@pytest.fixture(scope="module")
def sample_html() -> str:
    return render_html(sample())


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


# ---------------------------------------------------------------- the sample document


def test_sample_has_every_section_in_order(sample_html: str) -> None:
    assert list(SECTION_HEADINGS.values()) == HEADINGS
    assert _Page(sample_html).h2 == HEADINGS
    assert 'id="summary"' in sample_html and ">PASS<" in sample_html


def test_sample_images_are_inline_pngs_that_decode(sample_html: str) -> None:
    assert sample_html.count(DATA_PNG) == SAMPLE_IMAGES
    images = _images(sample_html)
    assert len(images) == SAMPLE_IMAGES
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            image.load()
            assert image.width >= 100 and image.height >= 40
            assert b"Software" not in data  # no matplotlib version stamp: bytes do not depend on the install


def test_nothing_is_loaded_from_anywhere(sample_html: str) -> None:
    page = _Page(sample_html)
    assert not re.search(r"https?://|src=\"//|href=\"//|url\(|@import", sample_html, re.IGNORECASE)
    assert not {"script", "link", "iframe", "object", "embed", "base", "audio", "video", "source"} & set(page.tags)
    for tag, name, value in page.attrs:
        assert not name.startswith("on"), (tag, name)
        if name == "src":
            assert value.startswith(DATA_PNG), value[:60]
        if name == "href":
            assert value.startswith("#"), value  # in-page navigation only
    csp = [value for _, name, value in page.attrs if name == "content" and "default-src" in value]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]


def test_urls_in_the_document_stay_text() -> None:
    document = sample()
    document["validation"]["advice"].append("see https://example.com/help and <a href='http://evil'>x</a>")
    page = _Page(render_html(document))
    assert any("https://example.com/help" in t for t in page.text)
    assert all(name not in ("href", "src") or value.startswith(("#", DATA_PNG)) for _, name, value in page.attrs)


def test_summary_reads_at_a_glance(sample_html: str) -> None:
    summary = sample_html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "PASS" in summary and "all 3 passed" in summary
    assert "<b>auto</b>" in summary
    assert "97.78%" in summary and "97.77%" in summary  # FP32 vs the best method's INT8 top-1
    assert "3.08×" in summary


def test_deterministic() -> None:
    assert render_html(sample()) == render_html(sample())


def test_title_argument_wins(sample_html: str) -> None:
    assert "<title>cnn INT8 build</title>" in sample_html
    assert "<title>Nightly &amp; co</title>" in render_html({"title": "ignored"}, title="Nightly & co")


# ---------------------------------------------------------------- hostile and broken documents


def test_hostile_strings_are_escaped() -> None:
    document = sample()
    name = f"{HOSTILE}$x_{{1}}$^"  # also a matplotlib mathtext trap in the plot labels
    document["title"] = f"</title>{HOSTILE}"
    document["layers"]["rows"][4]["name"] = name
    document["layers"]["worst"][0] = name
    document["histograms"][0]["name"] = name
    document["histograms"][0]["ranges"]['"><img src=x onerror=alert(1)>'] = [0.0, 1.0]
    document["coverage"]["layers"][3]["name"] = "_" + name
    document["gates"][0]["detail"] = '" onmouseover="alert(1)'
    document["validation"]["methods"][0]["method"] = "<b>minmax</b>"
    document["check"][0]["findings"][0]["message"] = HOSTILE
    document["latency"][0]["label"] = HOSTILE
    document["calibration"]["preview_png"] = 'AAAA" onerror="alert(1)'
    page = render_html(document)
    assert "<script" not in page.lower() and "<b>minmax" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = _Page(page)
    assert "script" not in parsed.tags
    assert not [name for _, name, _ in parsed.attrs if name.startswith("on")]
    assert "not a base64 PNG" in page
    assert page.count(DATA_PNG) == SAMPLE_IMAGES - 1  # every figure still drawn; the bad preview is not embedded


def test_minimal_document_renders() -> None:
    page = render_html({"title": "cnn", "gates": [{"name": "max_drop", "passed": False, "detail": "2.1 pp > 1 pp"}]})
    assert _Page(page).h2 == ["Gates"]
    assert DATA_PNG not in page
    summary = page.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "FAIL" in summary and "max_drop" in summary and "2.1 pp &gt; 1 pp" in summary


def test_empty_document_renders() -> None:
    page = render_html({})
    assert "NO VERDICT" in page and "<title>edgeq report</title>" in page and _Page(page).h2 == []


@pytest.mark.parametrize("key", list(SECTION_HEADINGS))
def test_each_section_stands_alone_and_is_optional(key: str) -> None:
    """A section renders from its own key alone, and a null, empty or wrongly typed one is left out."""
    alone = _Page(render_html({key: sample()[key]})).h2
    assert alone == [SECTION_HEADINGS[key]]
    for value in (None, {}, [], "", 0, "not a section", 3.5):
        assert _Page(render_html({key: value})).h2 == [], value


def test_sample_without_a_section_keeps_the_others() -> None:
    document = sample()
    for key in ("validation", "check"):
        del document[key]
    document["layers"] = {}
    assert _Page(render_html(document)).h2 == [h for h in HEADINGS if h not in ("Accuracy", "Target checks",
                                                                                    "Per-layer error")]


def test_sections_with_empty_or_odd_parts_render() -> None:
    document = sample()
    document["validation"] = {"baseline": {"top1": None}, "methods": [{"method": "kl", "top1": "n/a"}],
                              "advice": None, "best_method": None}
    document["layers"] = {"rows": [{"name": "a", "sqnr_db": None}, {"name": "b", "sqnr_db": float("inf")}]}
    document["histograms"] = [{"name": "h", "bin_edges": [0, 1], "counts": [1, 2]},  # one edge short
                              {"name": "z", "bin_edges": [0, 1, 2], "counts": [0, 0]},
                              {"name": "s", "bin_edges": ["x", 1], "counts": [3]}, "not a dict"]
    document["latency"] = [{"label": "no samples", "p50_ms": 1.0}, {"samples_ms": [float("nan"), 1.0, 2.0]}]
    document["check"] = [{"target": "tflm", "passed": False, "errors": 1, "findings": None}]
    document["calibration"] = {"counts": {"original": 0}, "preview_png": None}
    document["coverage"] = {"threshold": 1.0, "layers": [{"name": "x", "flagged": True, "production_max": None}],
                            "per_condition_max": {"original": [1.0, 2.0]}}  # does not line up with the layers
    page = render_html(document)
    assert "not drawn: 2 bin edges for 2 counts" in page
    assert "non-numeric bin edges" in page
    assert "Best method</dt><dd><span class=\"muted\">none</span>" in page
    assert _Page(page).h2 == HEADINGS


def test_findings_are_sorted_errors_first_and_capped() -> None:
    document = sample()
    findings = [{"rule_id": f"r{i}", "severity": "info", "message": f"info {i}"} for i in range(MAX_FINDINGS + 20)]
    findings.append({"rule_id": "float.tensor", "severity": "error", "op_type": "CONV_2D", "message": "float!"})
    document["check"] = [{"target": "tflm", "passed": False, "errors": 1, "warnings": 0, "findings": findings}]
    page = render_html(document)
    table = page.split("Findings (errors first)", 1)[1]
    assert table.index("float.tensor") < table.index("info 0")
    assert "info 48" in table and "info 49" not in table  # the error plus 49 infos: MAX_FINDINGS rows
    assert "21 more finding(s) not shown" in page
    summary = page.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "PASS" in summary  # the document's own verdict; the failed target shows in its section
    assert 'class="failed"' in page.split('id="check"', 1)[1]


def test_verdict_comes_from_gates_when_the_document_has_none() -> None:
    gates = [{"name": "a", "passed": True}, {"name": "b", "passed": False, "detail": "too slow"}]
    assert ">FAIL<" in render_html({"gates": gates})
    assert ">PASS<" in render_html({"gates": gates[:1]})


# ---------------------------------------------------------------- files


def test_write_report(tmp_path: Path) -> None:
    document = sample()
    json_path, html_path = write_report(document, tmp_path / "out")
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    assert json.loads(json_path.read_text()) == document
    assert json_path.read_text().startswith('{\n  "title"')  # pretty-printed, in the document's order
    assert html_path.read_text() == render_html(document)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]  # no temp files


def test_write_report_makes_strict_json(tmp_path: Path) -> None:
    document = {"title": "t", "gates": [], "layers": {"rows": [{"name": "a", "sqnr_db": float("inf"),
                                                                "saturation": np.float32(0.25)}]},
                "latency": [{"label": "x", "samples_ms": np.array([1.0, 2.0, math.nan])}]}
    json_path, _ = write_report(document, tmp_path)
    text = json_path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    loaded = json.loads(text)
    assert loaded["layers"]["rows"][0] == {"name": "a", "sqnr_db": None, "saturation": 0.25}
    assert loaded["latency"][0]["samples_ms"] == [1.0, 2.0, None]


def test_report_needs_no_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys, json; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from pathlib import Path\n"
        "from edgeq.report.html import write_report\n"
        f"write_report(json.loads(Path({str(SAMPLE)!r}).read_text()), Path({str(tmp_path)!r}))\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report.html").is_file()


# ---------------------------------------------------------------- a real browser

_CHECKER = """<script>
const blocked = [];
document.addEventListener("securitypolicyviolation", e => blocked.push(e.blockedURI));
window.addEventListener("load", () => {
  for (const img of document.images) img.dataset.decoded = String(img.complete && img.naturalWidth > 0);
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.resources = JSON.stringify(performance.getEntriesByType("resource").map(r => r.name));
  document.body.dataset.blocked = JSON.stringify(blocked);
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


@pytest.fixture(scope="module")
def written_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, html_path = write_report(sample(), tmp_path_factory.mktemp("report"))
    return html_path


@needs_chromium
def test_chromium_screenshot_shows_the_report(written_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
              written_report.as_uri())
    assert shot.is_file()
    with Image.open(shot) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank page: text, tables and figures
    green = np.all(np.abs(pixels - np.array([0x1B, 0x7A, 0x3A])) < 40, axis=-1)
    assert green.sum() > 500  # the PASS verdict box drawn with the inline CSS
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4])) < 12, axis=-1)
    assert blue.sum() > 5000  # matplotlib's bars of the first figure: images painted, not broken icons


@needs_chromium
def test_chromium_dom_has_every_section_and_decoded_image(written_report: Path, tmp_path: Path) -> None:
    page = written_report.read_text()
    assert "<script" not in page
    # The report runs no script and its CSP forbids one: only this test's copy adds the checker and allows it.
    checked = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';", 1)
    checked = checked.replace("</body>", _CHECKER + "</body>", 1)
    assert checked != page
    copy_path = tmp_path / "report-checked.html"
    copy_path.write_text(checked)
    dom = _chromium(tmp_path, "--dump-dom", copy_path.as_uri()).stdout
    plain = _chromium(tmp_path, "--dump-dom", written_report.as_uri()).stdout
    for headings_of in (dom, plain):
        assert _Page(headings_of).h2 == HEADINGS
    body = [dict((n, v) for t, n, v in _Page(dom).attrs if t == "body")][0]
    assert body["data-images"] == str(SAMPLE_IMAGES)
    assert json.loads(body["data-resources"]) == []  # nothing fetched: no file, no network
    assert json.loads(body["data-blocked"]) == []  # and nothing the CSP had to stop
    decoded = [v for t, n, v in _Page(dom).attrs if t == "img" and n == "data-decoded"]
    assert decoded == ["true"] * SAMPLE_IMAGES


def test_sample_document_is_realistic() -> None:
    """The sample exercises every section the way edgeq validate/build fill them."""
    document = sample()
    validation = document["validation"]
    assert len(validation["methods"]) == 5 and validation["best_method"] in {m["method"] for m in validation["methods"]}
    assert set(validation["baseline"]["per_condition"]) == {"original", "noise"}
    assert len(document["layers"]["rows"]) == 12 and len(document["histograms"]) == 3 and len(document["latency"]) == 2
    for histogram in document["histograms"]:
        assert len(histogram["bin_edges"]) == len(histogram["counts"]) + 1 == 41
    coverage = document["coverage"]
    assert coverage["flagged"] == sum(layer["flagged"] for layer in coverage["layers"]) == 2
    assert all(len(v) == len(coverage["layers"]) for v in coverage["per_condition_max"].values())
    assert base64.b64decode(document["calibration"]["preview_png"]).startswith(b"\x89PNG")
