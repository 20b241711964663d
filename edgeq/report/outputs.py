"""The Outputs section (``outputs``): every model output's fidelity to FP32 and its task's figures, per method and
per condition; and the plain-text task summary the CLI prints too."""

from __future__ import annotations

from edgeq.report.content import Page
from edgeq.report.format import bool_badge, esc, fmt, name_cell, pct, table
from edgeq.results.validation import (
    ClassificationFigures,
    DetectionFigures,
    FidelityFigures,
    LandmarkFigures,
    OutputDeclaration,
    OutputFigures,
    SegmentationFigures,
)

_NOTE = ('<p class="note">Each INT8 output against FP32\'s on the same inputs, dequantized, in output units. SQNR: '
         "signal over quantization-error power over every value (∞: identical); cosine: mean over samples. Task "
         "figures (docs/tasks.md): classification agreement with FP32's class and top-k containment; detection "
         "recall and precision of FP32's detections and their mean IoU; landmarks mean point error normalized by "
         "the landmarks' box (and in pixels); segmentation mean mask IoU with FP32's mask.</p>")


def sqnr_text(fidelity: FidelityFigures) -> str:
    """An output's SQNR in dB: '∞ (exact)' for identical outputs, '—' when not finite or not measured."""
    if fidelity.exact:
        return "∞ (exact)"
    return fmt(fidelity.sqnr_db, ".1f")


def _share(value: float | None) -> str:
    return pct(value, 1)


def task_text(figures: OutputFigures) -> str:
    """The task's figures in one line of plain text ('' for a generic output)."""
    c, d, lm, s = figures.classification, figures.detection, figures.landmarks, figures.segmentation
    if isinstance(c, ClassificationFigures):
        text = f"agreement {_share(c.agreement)}, top-{c.k} {_share(c.top_k_containment)}"
        if c.int8_accuracy is not None:
            text += f", top-1 {_share(c.fp32_accuracy)} → {_share(c.int8_accuracy)}"
        return text
    if isinstance(d, DetectionFigures):
        return (f"recall {_share(d.recall)}, precision {_share(d.precision)}, IoU {fmt(d.mean_iou, '.3f')} "
                f"({fmt(d.matched, 'd')} of {fmt(d.fp32_detections, 'd')} FP32 detections matched)")
    if isinstance(lm, LandmarkFigures):
        return (f"error {fmt(lm.mean_error_norm, '.4f')} of the box (p95 {fmt(lm.p95_error_norm, '.4f')}), "
                f"{fmt(lm.mean_error_px, '.2f')} px")
    if isinstance(s, SegmentationFigures):
        return f"mask IoU {fmt(s.mean_iou, '.3f')}"
    return ""


def _declarations(rows: tuple[OutputDeclaration, ...], ranked: str) -> str:
    cells = []
    for d in rows:
        config = ", ".join(f"{k}={v}" for k, v in d.config.items())
        tag = ' <span class="badge muted">ranks methods</span>' if d.name == ranked else ""
        cells.append([name_cell(d.name) + tag, esc("×".join(str(v) for v in d.shape)), esc(d.task),
                      "declared" if d.declared else '<span class="muted">default</span>', esc(config)])
    return table(["Output", "Shape", "Task", "", "Settings"], cells, names={0})


def _figure_cells(figures: OutputFigures) -> list[str]:
    f = figures.fidelity
    return [sqnr_text(f), fmt(f.cosine, ".4f"), fmt(f.max_abs_error, ".4g"), fmt(f.mean_abs_error, ".4g"),
            esc(task_text(figures)) or '<span class="muted">—</span>']


_FIGURE_HEADERS = ["SQNR (dB)", "Cosine", "Max |err|", "Mean |err|", "Task figures"]


def render(page: Page) -> str:
    outputs = page.outputs
    if outputs is None or not outputs.methods:
        return ""
    best = page.validation.best_method if page.validation is not None else None
    parts = [_declarations(outputs.model_outputs, outputs.ranked_by)]
    cells, classes = [], []
    for m in outputs.methods:
        tag = ' <span class="badge ok">best</span>' if m.method == best else ""
        for r in m.outputs:
            n = fmt(r.figures.fidelity.n, "d")
            cells.append([f"INT8 {esc(m.method)}{tag}", name_cell(r.output), n, *_figure_cells(r.figures)])
            classes.append("best" if m.method == best else "")
    parts.append(table(["Model", "Output", "n", *_FIGURE_HEADERS], cells, numeric={2, 3, 4, 5, 6}, names={1},
                       row_classes=classes))
    parts.append(_NOTE)
    names = [d.name for d in outputs.model_outputs]
    for name in names:
        rows = []
        for m in outputs.methods:
            result = next((r for r in m.outputs if r.output == name), None)
            if result is None:
                continue
            rows += [[f"INT8 {esc(m.method)}", esc(condition), fmt(figures.fidelity.n, "d"), *_figure_cells(figures)]
                     for condition, figures in result.per_condition.items()]
        if rows:
            parts.append(f'<h3 class="name">{name_cell(name, 80)} per condition</h3>')
            parts.append(table(["Model", "Condition", "n", *_FIGURE_HEADERS], rows, numeric={2, 3, 4, 5, 6}))
    if outputs.gates:
        failed = [g for g in outputs.gates if not g.passed]
        shown = f"{len(outputs.gates) - len(failed)} of {len(outputs.gates)} fidelity limit(s) met on the held-out half"
        listed = {g.name for g in page.gates or ()}
        if all(g.name in listed for g in outputs.gates):
            parts.append(f'<p class="{"bad" if failed else "ok"}">{esc(shown)} (the Gates section lists each).</p>')
        else:
            parts.append(f"<h3>Fidelity limits</h3>\n<p>{esc(shown)}.</p>")
            parts.append(table(["Gate", "Result", "Detail"],
                               [[esc(g.name), bool_badge(g.passed), esc(g.detail)] for g in outputs.gates],
                               row_classes=["" if g.passed else "failed" for g in outputs.gates]))
    return "\n".join(parts)

