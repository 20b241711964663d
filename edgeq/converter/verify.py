"""Verify an INT8 model before it is published: no unlisted float op, the spec check, one real run.

Three checks on the exact bytes about to be written, over every subgraph:

1. float ops: any op that reads or writes a float-typed tensor (FLOAT32, FLOAT16, ...) other than the
   float32 I/O boundary. Without ``allow_float_ops`` that refuses the model naming the op (exit 2: an op
   of the input has no int8 form); with it, every such op is listed in the sidecar.
2. the spec check (edgeq.spec.check) of the requested I/O type: any error fails (exit 1), naming the first
   finding. The float rules are waived only when float ops are allowed, ``weights.per-axis`` only when
   per-tensor weights were asked for.
3. LiteRT loads, allocates and invokes the model once, in the crash-isolating probe (exit 1 on failure).
"""

from __future__ import annotations

from edgeq.artifacts import Finding, IOType, Severity
from edgeq.converter.quantize import BOUNDARY_OPS, FloatOp, float_ops
from edgeq.errors import GateFailed, InputError
from edgeq.quant_recipe import QuantRecipe

#: Spec rules that only restate "this op is float"; waived when the user allows float ops (they are listed).
#: ``op.custom`` too: a custom op the runtime executes (TFLite_Detection_PostProcess) stays float with the
#: flag, and check 3 below proves the runtime does execute it.
FLOAT_RULES = frozenset({"float.tensor", "float.qdq-inside", "op.no-int8-kernel", "op.custom"})


def describe(finding: Finding) -> str:
    """One line naming a finding: rule, where, what was expected and found."""
    where = []
    if finding.subgraph:
        where.append(f"subgraph {finding.subgraph}")
    if finding.op_index is not None:
        where.append(f"op {finding.op_index} {finding.op_type}")
    if finding.tensor:
        where.append(f"tensor '{finding.tensor}'")
    text = f"{finding.rule_id} ({', '.join(where)}): {finding.message}" if where else \
        f"{finding.rule_id}: {finding.message}"
    if finding.expected is not None or finding.actual is not None:
        text += f" (expected {finding.expected}, got {finding.actual})"
    return text


def verify(quantized: bytes, recipe: QuantRecipe, what: str = "the INT8 model") -> list[FloatOp]:
    """Raise unless ``quantized`` is publishable under ``recipe``; return the float ops it keeps (allowed)."""
    from edgeq.spec.check import check_model
    from edgeq.tflite.probe import probe

    left_float = float_ops(quantized, recipe.io)
    if left_float and not recipe.allow_float_ops:
        # the QUANTIZE/DEQUANTIZE the quantizer wraps around a float op are its consequence: name the op first
        causes = [op for op in left_float if op.op_type not in BOUNDARY_OPS] or left_float
        names = ", ".join(sorted({op.op_type for op in causes}))
        raise InputError(f"cannot quantize {names} to int8 (first: {causes[0]}); "
                         "use --allow-float-ops to leave such ops in float")
    waived = set(FLOAT_RULES) if recipe.allow_float_ops else set()
    if recipe.per_tensor:
        waived.add("weights.per-axis")
    io = IOType(recipe.io).value  # recipes built in code may carry the plain string
    report = check_model(quantized, io=io, ignore=waived, what=what)
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    if errors:
        raise GateFailed(f"{what} fails the INT8 spec check with {len(errors)} error(s), nothing written; "
                         f"first: {describe(errors[0])}")
    try:
        probe(quantized, "cpu", what=what)
    except InputError as exc:
        raise GateFailed(f"{what} does not run in LiteRT, nothing written: {exc}") from None
    return left_float
