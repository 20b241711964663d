"""Fill report.json's ``graph`` from the published INT8 ``.tflite``: every op of the main graph, its operands'
quantization, and the backend predictions edgeq already makes elsewhere (no table of its own here).

XNNPACK: an op is delegated unless ``edgeq check --target xnnpack`` (edgeq.spec.check) says it is not: an
``xnnpack.*`` finding (an op outside XNNPACK's measured int8 coverage, int16 activations) or a custom op.
Edge TPU: edgeq.spec.edgetpu.predict_partition, the same prediction ``edgeq check --target edgetpu``
explains. Reading the flatbuffer needs no TensorFlow.
"""

from __future__ import annotations

from typing import Any

from edgeq.results.graph import EdgeTpuPartition, EdgeTpuPlacement, GraphReport, OpRow, TensorQuantization
from edgeq.spec.check import check_model
from edgeq.spec.edgetpu import predict_partition
from edgeq.tflite import model as tfl

# the findings that mean XNNPACK leaves the op to other kernels: its own rules, and a custom op (its own kernel)
XNNPACK_PREFIX, CUSTOM_RULE = "xnnpack.", "op.custom"


def _operand(model: Any, graph: Any, index: int) -> TensorQuantization:
    tensor = graph.tensors[index]
    q = tensor.quantization
    scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
    zero_points = [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]
    common = {"tensor": index, "name": tfl.tensor_name(tensor), "dtype": tfl.tensor_type_name(tensor.type),
              "constant": tfl.is_constant(model, tensor)}
    if len(scales) == 1:
        return TensorQuantization(**common, scale=scales[0], zero_point=zero_points[0] if zero_points else 0)
    if len(scales) > 1:
        return TensorQuantization(**common, channels=len(scales), axis=int(q.quantizedDimension))
    return TensorQuantization(**common)


def _indices(values: Any) -> list[int]:
    return [int(i) for i in (values if values is not None else []) if int(i) >= 0]


def graph_report(data: bytes) -> GraphReport:
    """The op table and the Edge TPU partition of the INT8 model ``data`` (subgraph 0)."""
    model = tfl.parse(data, "INT8 model")
    graph = model.subgraphs[0]
    not_delegated = {f.op_index for f in check_model(data, target="xnnpack").findings
                     if (f.rule_id.startswith(XNNPACK_PREFIX) or f.rule_id == CUSTOM_RULE) and f.subgraph == 0}
    partition = predict_partition(model)
    on_tpu = {p.index for p in partition.placements if p.on_tpu}
    ops = tuple(OpRow(index=i, op=tfl.op_type(model, op),
                      inputs=tuple(_operand(model, graph, t) for t in _indices(op.inputs)),
                      outputs=tuple(_operand(model, graph, t) for t in _indices(op.outputs)),
                      xnnpack=i not in not_delegated, edgetpu=i in on_tpu)
                for i, op in enumerate(graph.operators or []))
    placements = tuple(EdgeTpuPlacement(index=p.index, op=p.op_type, on_tpu=p.on_tpu, reason=p.reason,
                                        rule_id=p.rule_id) for p in partition.placements)
    return GraphReport(model_sha256=tfl.sha256(data), ops=ops, xnnpack_delegated=sum(r.xnnpack for r in ops),
                       edgetpu=EdgeTpuPartition(tpu_ops=partition.tpu_ops, cpu_ops=partition.cpu_ops,
                                                first_unsupported=partition.first_unsupported,
                                                placements=placements))
