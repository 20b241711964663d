"""Production activation logs: the format apps record per inference, a strict streaming reader, an exact merge.

docs/production_log.md documents the format. This stage sits low (numpy only): it never imports TensorFlow,
the converter or the CLI, so a distributed executor or a device-side tool can use it as is.
"""

from __future__ import annotations

from edgeq.production.format import FORMAT_VERSION, Reason, Record, SegmentKey
from edgeq.production.merge import ProductionStats, TensorExtremes, merge_records, read_log
from edgeq.production.reader import BadRecord, ReadReport, iter_records
from edgeq.production.writer import append_record, write_shard

__all__ = ["FORMAT_VERSION", "BadRecord", "ProductionStats", "ReadReport", "Reason", "Record", "SegmentKey",
           "TensorExtremes", "append_record", "iter_records", "merge_records", "read_log", "write_shard"]
