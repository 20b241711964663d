"""report.html's "Against the baseline" section: every delta of report.json's ``baseline_comparison`` with its
values, signed change, regression and comparability, the notes and the max_regression gates; none without
``--baseline``.

One small build (the demo's float model, 32 calibration and 40 evaluation samples, one method) runs once; its
report.json, edited (top-1 2 points better, the INT8 file 10 % smaller, latency measured on another CPU), is the
baseline of a second build into the same folder, which reuses every cached step.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_build_recipe
from edgeq.cli import main as cli
from edgeq.envelope import unwrap

SECTION = "baseline_comparison"
HEADING = "Against the baseline"
WORSE = {"accuracy": -1, "fidelity": -1, "size": 1, "latency": 1}  # docs/ci.md: what max_regression calls worse


class _Section(HTMLParser):
    """The h2 headings of a page, and the tables (rows of cell texts) and list items of one section."""

    def __init__(self, page: str, section: str) -> None:
        super().__init__(convert_charrefs=True)
        self.section, self.h2 = section, []
        self.tables: list[list[list[str]]] = []
        self.items: list[str] = []
        self.nav: list[str] = []
        self._inside = self._in_h2 = False
        self._cell: list[str] | None = None
        self._item: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self._inside = attributes.get("id") == self.section
        elif tag == "a" and attributes.get("href", "").startswith("#"):
            self.nav.append(str(attributes["href"])[1:])
        self._in_h2 = tag == "h2"
        if not self._inside:
            return
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "li":
            self._item = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._inside = False
        elif tag == "h2":
            self._in_h2 = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "li" and self._item is not None:
            self.items.append("".join(self._item).strip())
            self._item = None

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2.append(data.strip())
        for part in (self._cell, self._item):
            if part is not None:
                part.append(data)


def _recipe(folder: Path) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(tiny_build_recipe("max_drop_pp: 50, spec: [generic], "
                                      "max_regression: {accuracy_pp: 1, size_pct: 50, latency_pct: 10}"))
    return path


def _raw(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The page and document of a build without --baseline (its max_regression gates then not judged), and of
    the same build against an edited copy of its report.json."""
    folder = tmp_path_factory.mktemp("report-baseline")
    recipe, out = _recipe(folder), folder / "out"
    assert cli.main(["build", str(recipe), "-o", str(out)]) == 0
    first = {"page": (out / "report.html").read_text(), "report": unwrap(_raw(out), "edgeq.report")}
    document = copy.deepcopy(_raw(out))
    document["validation"]["methods"][0]["top1"] += 0.02
    document["model"]["int8_bytes"] = round(document["model"]["int8_bytes"] * 0.9)
    document["bench_environment"]["cpu_model"] = "another CPU"
    old = folder / "old.json"
    old.write_text(json.dumps(document))
    summary = folder / "summary.md"
    # exit 1: 2 points of top-1 lost fail accuracy_pp
    assert cli.main(["build", str(recipe), "-o", str(out), "--baseline", str(old), "--summary-md", str(summary)]) == 1
    return {"first": first, "page": (out / "report.html").read_text(), "report": unwrap(_raw(out), "edgeq.report"),
            "summary": summary.read_text(), "old": old}


def _number(cell: str) -> float:
    """'+2.00 pp', '95.00%', '1,234 B', '0.123 ms' -> the number."""
    return float(cell.split()[0].rstrip("%").replace(",", ""))


def _shown(aspect: str, value: float) -> float:
    return value * 100 if aspect == "accuracy" else value  # top-1 is a share, shown as a percentage


def test_each_delta_row_is_report_json_s_delta(builds: dict[str, Any]) -> None:
    comparison = builds["report"][SECTION]
    parsed = _Section(builds["page"], SECTION)
    assert HEADING in parsed.h2 and SECTION in parsed.nav
    header, *rows = parsed.tables[0]
    assert header == ["Aspect", "Figure", "Baseline", "This build", "Change", "Regression", "Compared"]
    deltas = comparison["deltas"]
    assert len(rows) == len(deltas) > 0
    for row, delta in zip(rows, deltas, strict=True):
        aspect, figure, baseline, current, change, regression, compared = row
        assert aspect == delta["aspect"]
        assert figure == delta["subject"] + (" (published)" if delta["published"] else "")
        assert _number(baseline) == pytest.approx(_shown(aspect, delta["baseline"]), abs=0.006)
        assert _number(current) == pytest.approx(_shown(aspect, delta["current"]), abs=0.006)
        assert change.endswith(f" {delta['unit']}") and change[0] in "+-"
        assert _number(change) == pytest.approx(delta["change"], abs=0.006)
        if round(delta["change"], 2):
            assert (change[0] == "-") == (delta["change"] < 0)
        if delta["comparable"]:
            assert compared == "yes"
            assert regression == ("regression" if WORSE[aspect] * delta["change"] > 0 else "no")
        else:
            assert regression == "not judged" and compared.startswith("not comparable: ")
    by_aspect = {row[0]: row for row in rows}
    assert by_aspect["accuracy"][4] == "-2.00 pp" and by_aspect["accuracy"][5] == "regression"
    assert by_aspect["size"][4] == "+11.11 %" and by_aspect["size"][5] == "regression"
    latency = by_aspect["latency"]  # the baseline ran on another CPU: shown, with the note that says so
    assert latency[5] == "not judged" and latency[6].startswith("not comparable: the baseline was measured on")
    assert "another CPU" in latency[6] and "another CPU" in "".join(parsed.items)


def test_the_notes_and_the_max_regression_gates(builds: dict[str, Any]) -> None:
    report = builds["report"]
    parsed = _Section(builds["page"], SECTION)
    assert parsed.items == report[SECTION]["notes"] and parsed.items
    header, *rows = parsed.tables[1]
    assert header == ["Gate", "Judged", "Result", "Regression", "Limit", "Detail"]
    gates = [g for g in report["gates"] if g["name"].startswith("max_regression:")]
    assert [row[0] for row in rows] == [g["name"] for g in gates]
    assert {row[0]: (row[1], row[2]) for row in rows} == {
        "max_regression:accuracy_pp": ("yes", "FAIL"), "max_regression:size_pct": ("yes", "PASS"),
        "max_regression:latency_pct": ("no", "NOT JUDGED")}
    for row, gate in zip(rows, gates, strict=True):
        assert row[5] == gate["detail"]
        if gate.get("judged", True):
            assert _number(row[3]) == pytest.approx(gate["value"], abs=0.006)


def test_the_summary_shows_the_same_rows(builds: dict[str, Any]) -> None:
    """The Markdown summary's baseline table is built by the same code: the same cells."""
    lines = builds["summary"].split("### Against the baseline", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("| ")][1:]  # past the header
    markdown = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table]
    html = [[*row[:4], row[4] + ("" if row[6] == "yes" else " (not comparable)")]
            for row in _Section(builds["page"], SECTION).tables[0][1:]]
    assert markdown == html


def test_no_section_without_a_baseline(builds: dict[str, Any]) -> None:
    first = builds["first"]
    assert SECTION not in first["report"]
    assert any(g["name"].startswith("max_regression:") for g in first["report"]["gates"])  # set, not judged
    parsed = _Section(first["page"], SECTION)
    assert HEADING not in parsed.h2 and SECTION not in parsed.nav
    assert parsed.tables == [] and parsed.items == []
    assert f'id="{SECTION}"' not in first["page"]


def test_accuracy_from_another_evaluation_set_says_why(builds: dict[str, Any]) -> None:
    """Accuracy and fidelity measured on other samples: not judged, the reason being compare()'s note."""
    from edgeq.build.baseline import EVAL_NOTE
    from edgeq.report.baseline import render
    from edgeq.report.content import Page
    from edgeq.results.baseline import BaselineComparison

    comparison = BaselineComparison.from_document(builds["report"][SECTION])
    why = "the baseline measured another evaluation set <b>"
    deltas = tuple(dataclasses.replace(d, comparable=False) if d.aspect.value in ("accuracy", "fidelity") else d
                   for d in comparison.deltas)
    comparison = dataclasses.replace(comparison, deltas=deltas, notes=(EVAL_NOTE + why,))
    rows = _Section(f'<section id="{SECTION}">{render(Page(baseline_comparison=comparison))}</section>',
                    SECTION).tables[0][1:]
    shown = {row[0]: row for row in rows}
    assert shown["accuracy"][5] == shown["fidelity"][5] == "not judged"
    assert shown["accuracy"][6] == shown["fidelity"][6] == f"not comparable: {why}"  # escaped, read back as text
    assert shown["size"][6] == "yes"
