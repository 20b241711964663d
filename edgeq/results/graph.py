"""report.json's ``graph``: the INT8 model's operators, how each is quantized, which backend runs it, and the
predicted Edge TPU partition (edgeq.report.graph fills it from the published ``.tflite``).

The backend columns are edgeq's own predictions, not measurements: XNNPACK delegation from ``edgeq check
--target xnnpack`` (an op with an ``xnnpack.*`` finding, or a custom op, runs on other kernels) and the Edge
TPU mapping from edgeq.spec.edgetpu.predict_partition. Only the main graph (subgraph 0) is listed: that is the
graph both predictions judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeq.results.document import OMIT_NONE, Document


@dataclass(frozen=True, kw_only=True)
class TensorQuantization(Document):
    """One operand of an op as the flatbuffer stores it."""

    tensor: int  # index in subgraph 0
    name: str
    dtype: str  # the TFLite type name: INT8, INT32, FLOAT32, ...
    constant: bool  # weights, biases and other data stored in the model
    scale: float | None = field(default=None, metadata=OMIT_NONE)  # per-tensor quantization
    zero_point: int | None = field(default=None, metadata=OMIT_NONE)
    channels: int | None = field(default=None, metadata=OMIT_NONE)  # per-axis quantization: how many scales
    axis: int | None = field(default=None, metadata=OMIT_NONE)  # per-axis quantization: along which dimension


@dataclass(frozen=True, kw_only=True)
class OpRow(Document):
    """One operator of subgraph 0, in execution order."""

    index: int
    op: str
    inputs: tuple[TensorQuantization, ...]  # optional operands that are absent (-1) are left out
    outputs: tuple[TensorQuantization, ...]
    xnnpack: bool  # predicted delegated to XNNPACK (edgeq check --target xnnpack has no xnnpack.* or op.custom finding)
    edgetpu: bool  # predicted mapped to the Edge TPU


@dataclass(frozen=True, kw_only=True)
class EdgeTpuPlacement(Document):
    """Where edgetpu_compiler is predicted to put one op, and why (edgeq.spec.edgetpu.OpPlacement)."""

    index: int
    op: str
    on_tpu: bool
    reason: str
    rule_id: str | None = field(default=None, metadata=OMIT_NONE)  # the edgetpu.* rule that put it on the CPU


@dataclass(frozen=True, kw_only=True)
class EdgeTpuPartition(Document):
    """The predicted split of subgraph 0 between the Edge TPU and the CPU (edgeq.spec.edgetpu.PartitionPrediction)."""

    tpu_ops: int
    cpu_ops: int
    first_unsupported: int | None  # the op that ends the Edge TPU segment; None: no op splits the graph
    placements: tuple[EdgeTpuPlacement, ...]


@dataclass(frozen=True, kw_only=True)
class GraphReport(Document):
    """report.json's ``graph``: the published INT8 model's operators and the backends predicted to run them."""

    model_sha256: str  # the .tflite these rows describe
    ops: tuple[OpRow, ...]
    xnnpack_delegated: int  # ops predicted delegated to XNNPACK
    edgetpu: EdgeTpuPartition
