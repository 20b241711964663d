"""The JSON Schema (draft 2020-12) of one JSONL record, published as docs/schemas/edgeq.production-record.json.

Written by hand: a record is a wire format with a compact tensors map ({name: [min, max]}), not a dataclass
edgeq.schemas can derive. tests/test_production_log.py checks that the published file equals this and that
records the writer produces validate. What JSON Schema cannot say (min <= max, float32 range) the reader checks.
"""

from __future__ import annotations

from typing import Any

from edgeq.production.format import FORMAT_VERSION

FILE_NAME = "edgeq.production-record.json"  # not *.schema.json: edgeq.schemas owns those names


def record_schema() -> dict[str, Any]:
    number = {"type": "number"}
    text = {"type": "string"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgeq production log record (one JSONL line)",
        "description": "Activation statistics of one inference (or `count` pre-aggregated inferences) of the model "
                       "`model_sha256` (docs/production_log.md). Closed: a new key is a version bump. The reader "
                       "also refuses min > max and magnitudes beyond float32.",
        "type": "object",
        "properties": {
            "version": {"const": FORMAT_VERSION},
            "model_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "time": {"type": "number", "minimum": 0, "description": "Unix epoch seconds (UTC)"},
            "count": {"type": "integer", "minimum": 1, "description": "inferences aggregated (default 1)"},
            "device": text,
            "app_version": text,
            "tags": {"type": "object", "additionalProperties": text},
            "tensors": {"type": "object", "description": "tensor name -> [min, max]",
                        "additionalProperties": {"type": "array", "prefixItems": [number, number],
                                                 "minItems": 2, "maxItems": 2}},
        },
        "required": ["version", "model_sha256", "time", "tensors"],
        "additionalProperties": False,
    }
