"""The Accuracy section (``validation``): FP32 and every method side by side, how the best one was picked
and where its drop was gated, the figures and the advice; and the phrases the summary box shares with it."""

from __future__ import annotations

from edgeq.report.content import Page
from edgeq.report.format import esc, finite, fmt, interval, pct, table, with_interval
from edgeq.report.plots import figure, plot_conditions, plot_methods
from edgeq.results.validation import (
    Comparison,
    ConditionAccuracy,
    HeldOutGate,
    MethodResult,
    SelectionScore,
    ValidationSummary,
)

_COMPARISON_CLASS = {Comparison.TIE: "muted", Comparison.WORSE: "bad", Comparison.BETTER: "ok"}
_NOTE = ('<p class="note">Measured on the whole evaluation set; [lo, hi]: the 95% interval. Top-1 with its Wilson '
         "score interval. Drop: FP32 top-1 minus INT8 top-1 in percentage points (negative: INT8 scored higher) "
         "with its paired (Newcombe) interval, marked <i>tie</i> when that interval contains 0 (the two cannot be "
         "told apart on these samples), <i>worse</i> or <i>better</i> otherwise. Agreement: share of samples where "
         "INT8 predicts the same class as FP32. SQNR: FP32 vs INT8 outputs, higher is better; ∞ when the outputs "
         "are bit-exact. Rank: fidelity to FP32 on the selection half, the order the best method was picked in "
         "(below; equal ranks are exact ties).</p>")


def vs_fp32(value: Comparison) -> str:
    """How INT8 compares with FP32 by the drop's interval: a difference inside it is a tie."""
    return f'<span class="{_COMPARISON_CLASS[value]}">{esc(value)}</span>'


def sqnr_text(bit_exact: bool, sqnr_db: float | None, unit: str = "") -> str:
    """Output SQNR: '∞ (bit-exact)' for outputs equal to FP32's (stored as null plus bit_exact: true)."""
    return "∞ (bit-exact)" if bit_exact else fmt(sqnr_db, ".1f", unit)


def first_key(score: SelectionScore) -> str:
    """The first ranking key of a selection score, as 'agreement 99.17%, ' or 'recall 0.9714, ' ('' for none)."""
    if score.agreement is not None:
        return f"agreement {pct(score.agreement)}, "
    if score.metric is not None:
        return f"{esc(score.metric)} {fmt(score.value, '.4g')}, "
    return ""


def picked_by(row: MethodResult, validation: ValidationSummary) -> str:
    selection, chosen = validation.selection, row.selection
    shown = f"fidelity to FP32 on the selection half ({fmt(selection.n, 'd')} samples)"
    sqnr = sqnr_text(chosen.bit_exact, chosen.output_sqnr_db, " dB")
    shown += f": {first_key(chosen)}output SQNR {sqnr}"
    tied = [esc(t) for t in selection.tied_with_best]
    if tied:
        shown += f"; tied exactly with {', '.join(tied)}"
    return shown


def gate_text(gate: HeldOutGate) -> str:
    """The held-out drop and the verdict on it, saying whether the interval makes the verdict clear."""
    shown = f"held-out half, {fmt(gate.n, 'd')} samples"
    shown += f": FP32 {pct(gate.fp32_top1)} → INT8 {esc(gate.method)} "
    shown += f"{pct(gate.int8_top1)} (drop <b>{fmt(gate.drop_pp, '+.2f')} pp</b>"
    ci = interval(gate.drop_ci_pp, 1.0, "+.2f")
    shown += f", 95% CI {ci} pp" if ci else ""
    limit = finite(gate.max_drop_pp)
    if limit is None:
        return shown + ")"
    shown += f", limit {fmt(limit, 'g')} pp): "
    if gate.passed is True:
        verdict = ('<span class="ok">pass, clearly within the limit</span>' if gate.clear is True else
                   '<span class="warn">pass, but the limit lies inside the interval (not statistically '
                   "clear)</span>")
    elif gate.passed is False:
        verdict = ('<span class="bad">fail, clearly over the limit</span>' if gate.clear is True else
                   '<span class="bad">fail, the limit lies inside the interval (not statistically clear)</span>')
    else:
        verdict = '<span class="muted">no verdict</span>'
    return shown + verdict


def best_row(validation: ValidationSummary) -> MethodResult | None:
    return next((m for m in validation.methods if m.method == validation.best_method), None)


def _top1(per_condition: dict[str, ConditionAccuracy], condition: str) -> float | None:
    entry = per_condition.get(condition)
    return None if entry is None else entry.top1


def _fidelity_only(validation: ValidationSummary) -> str:
    """The section for a set without labels (or a model without a classification output): no top-1, the
    methods by their fidelity to FP32."""
    methods, best = validation.methods, validation.best_method
    n = validation.split.selection.n + validation.split.gate.n
    facts = [f"evaluated on <b>{esc(validation.eval_set)}</b>"] if validation.eval_set else []
    facts.append(f"{fmt(n, 'd')} samples, no top-1 (no labels, or no classification output): every method is "
                 "judged by its fidelity to FP32 (the Outputs section has each output)")
    if validation.calibration:
        facts.append(f"calibrated on <b>{esc(validation.calibration)}</b>")
    parts = [f"<p>{'; '.join(facts)}.</p>"]
    has_agreement = any(m.agreement is not None for m in methods)
    metric = next((m.selection.metric for m in methods if m.selection.metric), None)
    headers = ["Model", *(["Agreement"] if has_agreement else []),
               *([f"{metric} (selection half)"] if metric else []), "SQNR (dB)", "Mean |err|", "Rank"]
    rows, classes = [], []
    for m in methods:
        tag = ' <span class="badge ok">best</span>' if m.method == best else ""
        rows.append([f"INT8 {esc(m.method)}{tag}", *([pct(m.agreement)] if has_agreement else []),
                     *([fmt(m.selection.value, ".4g")] if metric else []), sqnr_text(m.bit_exact, m.output_sqnr_db),
                     fmt(m.output_mae, ".4g"), fmt(m.selection.rank, "d")])
        classes.append("best" if m.method == best else "")
    parts.append(table(headers, rows, numeric=set(range(1, len(headers))), row_classes=classes))
    parts.append('<p class="note">SQNR and mean |err|: the ranked output against FP32 on the whole set; rank: '
                 "fidelity to FP32 on the selection half (below; equal ranks are exact ties).</p>")
    parts.append(_selection_and_gate(validation))
    advice = [a for a in validation.advice if a]
    if advice:
        items = "\n".join(f"<li>{esc(a)}</li>" for a in advice)
        parts.append(f'<h3>Advice</h3>\n<ul class="advice">\n{items}\n</ul>')
    return "\n".join(parts)


def render(page: Page) -> str:
    validation = page.validation
    if validation is None:
        return ""
    baseline, methods, best = validation.baseline, validation.methods, validation.best_method
    if baseline is None:
        return _fidelity_only(validation)
    facts = []
    if validation.eval_set:
        facts.append(f"evaluated on <b>{esc(validation.eval_set)}</b>")
    facts.append(f"{fmt(baseline.n, 'd')} samples")
    if validation.calibration:
        facts.append(f"calibrated on <b>{esc(validation.calibration)}</b>")
    limit = finite(validation.max_drop_pp)
    if limit is not None:
        facts.append(f"gate: drop ≤ {fmt(limit, 'g')} pp on the held-out half")
    parts = [f"<p>{'; '.join(facts)}.</p>"]

    conditions = list(dict.fromkeys([*baseline.per_condition, *(c for m in methods for c in m.per_condition)]))
    has_top5 = any(finite(m.top5) is not None for m in methods)
    has_rank = bool(methods)
    headers = ["Model", "Top-1", *(["Top-5"] if has_top5 else []), "Drop (pp)", "Agreement", "SQNR (dB)",
               *(["Rank"] if has_rank else []), *[f"Top-1 {c}" for c in conditions]]
    rows = [["FP32 (baseline)", with_interval(pct(baseline.top1), baseline.top1_ci),
             *([pct(baseline.top5)] if has_top5 else []), "—", "—", "—", *(["—"] if has_rank else []),
             *[pct(_top1(baseline.per_condition, c)) for c in conditions]]]
    classes = [""]
    for m in methods:
        tag = ' <span class="badge ok">best</span>' if m.method == best else ""
        drop = f"{vs_fp32(m.vs_fp32)} {fmt(m.drop_pp, '+.2f')}"  # tie / worse / better by the drop's interval
        rows.append([f"INT8 {esc(m.method)}{tag}", with_interval(pct(m.top1), m.top1_ci),
                     *([pct(m.top5)] if has_top5 else []), with_interval(drop, m.drop_ci_pp, 1.0, "+.2f"),
                     pct(m.agreement), sqnr_text(m.bit_exact, m.output_sqnr_db), fmt(m.selection.rank, "d"),
                     *[pct(_top1(m.per_condition, c)) for c in conditions]])
        classes.append("best" if m.method == best else "")
    parts.append(table(headers, rows, numeric=set(range(1, len(headers))), row_classes=classes))
    parts.append(_NOTE)
    parts.append(_selection_and_gate(validation))

    plotted = [(m.method.value, top1, m.top1_ci) for m in methods if (top1 := finite(m.top1)) is not None]
    parts.append(figure(plot_methods, finite(baseline.top1), [(m, v) for m, v, _ in plotted], best.value,
                        [_finite_pair(ci) for _, _, ci in plotted], alt="Top-1 by method",
                        caption="Top-1 of each INT8 model with its 95% interval; the dashed line is FP32. The y "
                                "axis is zoomed and does not start at 0."))
    if conditions:
        series = [("FP32", [finite(_top1(baseline.per_condition, c)) for c in conditions])]
        series += [(m.method.value, [finite(_top1(m.per_condition, c)) for c in conditions]) for m in methods]
        parts.append(figure(plot_conditions, conditions, series, alt="Top-1 per condition",
                            caption="Which conditions lose accuracy under INT8. The y axis is zoomed."))

    advice = [a for a in validation.advice if a]
    if advice:
        items = "\n".join(f"<li>{esc(a)}</li>" for a in advice)
        parts.append(f'<h3>Advice</h3>\n<ul class="advice">\n{items}\n</ul>')
    return "\n".join(p for p in parts if p)


def _finite_pair(pair: tuple[float, float]) -> tuple[float, float] | None:
    lo, hi = finite(pair[0]), finite(pair[1])
    return None if lo is None or hi is None else (lo, hi)


def _selection_and_gate(validation: ValidationSummary) -> str:
    """How the best method was picked (selection half) and where its drop was gated (held-out half)."""
    split, selection = validation.split, validation.selection
    halves = (("selection", split.selection), ("gate", split.gate))
    shown = (f"The evaluation set is split in two halves, stratified by "
             f"{esc(' and '.join(split.stratified_by) or 'label')} (seed {fmt(split.seed, 'd')}): ")
    shown += ", ".join(f"{name} {fmt(side.n, 'd')} samples" for name, side in halves)
    parts = ["<h3>Selection and gate</h3>", f"<p>{shown}.</p>"]
    by = "; then ".join(esc(b) for b in selection.by)
    groups = [[esc(m) for m in group] for group in selection.ranking]
    shown = (f"<b>{esc(validation.best_method)}</b> was picked on the selection half by fidelity to FP32 ({by}); "
             "labels are not used.")
    if groups:
        shown += f" Ranking: {' &gt; '.join(' = '.join(g) for g in groups)}"
        shown += " (=: identical measurements)." if any(len(g) > 1 for g in groups) else "."
    parts.append(f"<p>{shown}</p>")
    if validation.gate is None:
        parts.append("<p>Fidelity limits, when set, are judged on the held-out gate half (there is no top-1 to "
                     "gate without labels and a classification output).</p>")
        return "\n".join(parts)
    parts.append(f"<p>The max-drop gate is measured on the held-out gate half: {gate_text(validation.gate)}.</p>")
    parts.append('<p class="note">The gate fails when the drop\'s point estimate exceeds the limit. It is '
                 "<i>clear</i> when the whole 95% interval lies on the same side of the limit; otherwise the "
                 "samples cannot tell, and more evaluation samples would narrow the interval.</p>")
    return "\n".join(parts)
