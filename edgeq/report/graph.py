"""The Operators section (``graph``: every op, its operands' quantization, the backend predicted to run it) and
the Edge TPU partition section (``edgetpu``: which ops map, where the graph splits, why each CPU op is there)."""

from __future__ import annotations

from edgeq.report.content import Page
from edgeq.report.format import esc, fmt, name_cell, table
from edgeq.results.graph import OpRow, TensorQuantization

MAX_OPS = 300  # rows in the page; report.json holds every op
OPEN_BELOW = 40  # a table this short is shown unfolded


def quantization_text(t: TensorQuantization) -> str:
    """``int8 s=0.0227 zp=-128``, ``int8 per-axis ×16 (axis 0)``, ``float32``: plain text, for a cell or a test."""
    dtype = t.dtype.lower()
    if t.scale is not None:
        return f"{dtype} s={t.scale:.4g} zp={t.zero_point}"
    if t.channels is not None:
        return f"{dtype} per-axis ×{t.channels} (axis {t.axis})"
    return dtype


def _operands(tensors: tuple[TensorQuantization, ...]) -> str:
    lines = [f"{name_cell(t.name, 36)} <span class=\"muted\">{esc(quantization_text(t))}"
             f"{' const' if t.constant else ''}</span>" for t in tensors]
    return "<br>".join(lines) or '<span class="muted">—</span>'


def _backend(value: bool, yes: str, no: str) -> str:
    cell = f'<span class="ok">{yes}</span>' if value else f'<span class="warn">{no}</span>'
    return f'<span class="nowrap">{cell}</span>'


def _op_cells(row: OpRow) -> list[str]:
    return [fmt(row.index, "d"), esc(row.op), _operands(row.inputs), _operands(row.outputs),
            _backend(row.xnnpack, "delegated", "builtin kernels"), _backend(row.edgetpu, "Edge TPU", "CPU")]


def render_ops(page: Page) -> str:
    graph = page.graph
    if graph is None or not graph.ops:
        return ""
    ops = graph.ops
    parts = [f"<p>{len(ops)} ops in the main graph of the INT8 model (sha256 <span class=\"name\">"
             f"{esc(graph.model_sha256[:16])}…</span>); <b>{graph.xnnpack_delegated}</b> predicted delegated to "
             f"XNNPACK, <b>{graph.edgetpu.tpu_ops}</b> predicted mapped to the Edge TPU. Predictions, not "
             "measurements: XNNPACK from <code>edgeq check --target xnnpack</code> (ops it does not take run on "
             "LiteRT's builtin kernels, slower but correct), the Edge TPU from the partition prediction below.</p>"]
    shown = ops[:MAX_OPS]
    body = table(["#", "Op", "Inputs (quantization)", "Outputs (quantization)", "XNNPACK (predicted)",
                  "Edge TPU (predicted)"],
                 [_op_cells(r) for r in shown], numeric={0})
    opened = " open" if len(ops) <= OPEN_BELOW else ""
    parts.append(f"<details{opened}><summary>All {len(shown)} ops (execution order)</summary>\n{body}\n</details>")
    if len(ops) > MAX_OPS:
        parts.append(f'<p class="note">{len(ops) - MAX_OPS} more op(s) not shown; report.json\'s graph.ops holds '
                     "every op.</p>")
    return "\n".join(parts)


def render_edgetpu(page: Page) -> str:
    graph = page.graph
    if graph is None or not graph.edgetpu.placements:
        return ""
    partition = graph.edgetpu
    total = len(partition.placements)
    first = partition.first_unsupported
    if first is None:
        split = "no op splits the graph"
    else:
        op = partition.placements[first].op
        split = (f"the graph splits at op <b>{first} ({esc(op)})</b>, the first op the Edge TPU cannot run: it and "
                 "every op after it run on the CPU")
    parts = [f"<p><b>{partition.tpu_ops}</b> of {total} ops predicted mapped to the Edge TPU, "
             f"{partition.cpu_ops} on the CPU; {split}. Predicted from Coral's supported-op table by "
             "<code>edgeq check --target edgetpu</code> (conservative: the compiler maps only up to the first "
             "unsupported op in execution order); run <code>edgetpu_compiler</code> for the real partition.</p>"]
    cpu = [p for p in partition.placements if not p.on_tpu]
    if cpu:
        cells = [[fmt(p.index, "d"), esc(p.op), esc(p.rule_id or ""), esc(p.reason)] for p in cpu[:MAX_OPS]]
        classes = ["failed" if p.index == first else "" for p in cpu[:MAX_OPS]]
        parts.append("<h3>Ops on the CPU, and why</h3>")
        parts.append(table(["#", "Op", "Rule", "Reason"], cells, numeric={0}, row_classes=classes))
    return "\n".join(parts)
