"""Regenerate sample_report.json, the complete report.json example docs/report.md points to (run from the repo root).

    .venv/bin/python tests/data/report/make_sample.py

A real `edgeq build` of the zoo CNN (full recipe, trained here and cached) with every section the report
has: two conditions, two methods, targets, a benchmark, and all gates including coverage. The raw latency
samples are cut to 20 per configuration to keep the file small. tests/test_report_html.py checks that it
keeps the shape of what a build writes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgeq.cli import main as cli

HERE = Path(__file__).resolve().parent
RECIPE = """
name: cnn-digits
model: zoo:cnn
preprocess: "mean=127.5,std=127.5"
calibration: {source: digits:train, conditions: "original,noise", n: 64}
evaluation: {source: digits:test, conditions: "original,noise", n: 80, seed: 1}
methods: [minmax, auto]
targets: [generic, xnnpack]
bench: {backends: [xnnpack], threads: [1], runs: 20, min_seconds: 0.02}
gates: {max_drop_pp: 1.0, spec: [generic], max_p90_ms: {xnnpack: 5.0}, coverage_threshold: 1.0}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(RECIPE)
        out = Path(tmp) / "build"
        cli.main(["build", str(recipe), "-o", str(out)])
        document = json.loads((out / "report.json").read_text())
    for row in document.get("latency", []):
        row["samples_ms"] = row["samples_ms"][:20]
    # As report.json is written: the envelope first, then the report in its own key order.
    (HERE / "sample_report.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
