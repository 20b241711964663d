"""Per-layer SQNR as node data for Google's Model Explorer, so the INT8 graph shows where quantization hurts.

One file per metric, in Model Explorer's single-graph node data format (``model_explorer.node_data_builder.
GraphNodeData``: ``results`` keyed by node, ``thresholds`` for the colours), written beside report.json::

    model-explorer out/report-folder/model_int8.tflite \\
        --node_data_paths=out/report-folder/report.model_explorer.local_sqnr.json

A layer is keyed by the node id Model Explorer's own TFLite adapter gives the op that computes it: the op's
index in the main graph (the op table in report.json's ``graph`` says which op writes which tensor). A model
input has no op: it is keyed by its tensor name, which Model Explorer matches to the GraphInputs node's output.
Layers of other subgraphs (loop bodies, branches) and layers without a finite SQNR (exact) are left out. The
files are in Model Explorer's format, not edgeq's envelope: that is what its loader reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from edgeq.report.content import Page
from edgeq.report.format import finite
from edgeq.report.plots import HEALTHY_SQNR_DB, LOW_SQNR_DB
from edgeq.results.validation import LayerDiagnostics

PREFIX = "report.model_explorer."
# node colours by value, as the report's chart: red up to LOW_SQNR_DB, amber up to HEALTHY_SQNR_DB, blue above
THRESHOLDS = ({"value": LOW_SQNR_DB, "bgColor": "#f4a6a0"}, {"value": HEALTHY_SQNR_DB, "bgColor": "#ffd08a"},
              {"value": 1e6, "bgColor": "#a9c9ec"})

#: file stem -> (the name Model Explorer shows, the layer's value)
METRICS: dict[str, tuple[str, Callable[[LayerDiagnostics], float | None]]] = {
    "local_sqnr": ("edgeq local SQNR (dB)", lambda row: row.local_sqnr_db),
    "accumulated_sqnr": ("edgeq accumulated SQNR (dB)", lambda row: row.sqnr_db),
}


def node_keys(page: Page) -> dict[str, str]:
    """Layer name -> the key its node data gets: the computing op's node id, else (a model input) the name."""
    if page.layers is None:
        return {}
    producer = {} if page.graph is None else {t.name: str(op.index) for op in page.graph.ops for t in op.outputs}
    return {row.name: producer.get(row.name, row.name) for row in page.layers.rows if row.subgraph == 0}


def node_data(page: Page) -> dict[str, str]:
    """File name -> the node data JSON for each metric; empty when the report has no layers or no op table."""
    if page.layers is None or page.graph is None or not page.layers.rows:
        return {}
    keys = node_keys(page)
    files = {}
    for stem, (name, value_of) in METRICS.items():
        results = {}
        for row in page.layers.rows:
            value = finite(value_of(row))
            if row.name in keys and value is not None:
                results[keys[row.name]] = {"value": round(value, 3)}
        document = {"name": name, "results": results, "thresholds": list(THRESHOLDS)}
        files[f"{PREFIX}{stem}.json"] = json.dumps(document, indent=2, allow_nan=False) + "\n"
    return files
