"""The Per-layer error section (``layers``) and the Activation ranges section (``histograms``), which ends
with the outlier calibration samples (``calibration_samples``)."""

from __future__ import annotations

import math

from edgeq.report.content import Page
from edgeq.report.format import esc, finite, fmt, name_cell, pct, table
from edgeq.report.plots import HEALTHY_SQNR_DB, LOW_SQNR_DB, figure, plot_histogram, plot_sqnr, sqnr_class
from edgeq.results.validation import CalibrationSamples, LayerDiagnostics

_LAYER_HEADERS = ["#", "Layer", "Op", "Local SQNR (dB)", "Accumulated SQNR (dB)", "rmse / scale", "Saturation",
                  "Clipped"]
_NUMERIC = {0, 3, 4, 5, 6, 7}


def _sqnr_cell(value: float | None) -> str:
    """Coloured by the same thresholds as the chart's bars (edgeq.report.plots.sqnr_class)."""
    number = finite(value)
    if number is None:
        return '<span class="muted">—</span>'
    cls = sqnr_class(number)
    shown = f"{number:.1f}"
    return f'<span class="{cls}">{shown}</span>' if cls != "ok" else shown


def layer_anchor(index: int) -> str:
    """The id of a layer's row in the All layers table (the chart's areas link to it)."""
    return f"layer-{index}"


def _layer_cells(index: int | None, name: str, layer: LayerDiagnostics | None) -> list[str]:
    """One table row; a worst layer the rows do not hold keeps its name and shows dashes."""
    number = "" if index is None else fmt(index, "d")
    if layer is None:
        return [number, name_cell(name), "", _sqnr_cell(None), _sqnr_cell(None), fmt(None), pct(None), pct(None)]
    return [number, name_cell(layer.name), esc(layer.op), _sqnr_cell(layer.local_sqnr_db), _sqnr_cell(layer.sqnr_db),
            fmt(layer.rmse_over_scale, ".3f"), pct(layer.saturation), pct(layer.clip_fraction)]


def _hover(index: int, layer: LayerDiagnostics) -> str:
    return (f"#{index} {layer.name} ({layer.op}): local {fmt(layer.local_sqnr_db, '.1f')} dB, "
            f"accumulated {fmt(layer.sqnr_db, '.1f')} dB")


def _ranked(rows: tuple[LayerDiagnostics, ...], worst: list[str]) -> list[str]:
    """The worst layers, lowest local SQNR first (unmeasured last): the order the table and the chart say."""
    local = {r.name: finite(r.local_sqnr_db) for r in rows}
    return sorted(worst, key=lambda n: (local.get(n) is None, local.get(n) or 0.0))


def render_layers(page: Page) -> str:
    layers = page.layers
    if layers is None or not (layers.rows or layers.worst):
        return ""
    rows, worst_names = layers.rows, _ranked(layers.rows, list(layers.worst))
    facts = []
    if layers.method:
        facts.append(f"INT8 model calibrated with <b>{esc(layers.method)}</b> against FP32")
    facts.append(f"on {fmt(layers.samples, 'd')} inputs")
    parts = [f"<p>{' '.join(facts)}, every activation tensor compared. <b>Local SQNR</b>: this layer's own "
             "range and rounding, with exact inputs; <b>accumulated SQNR</b>: everything up to and including it. "
             "The worst layers are ranked by local SQNR: accumulated SQNR blames every layer downstream of a bad "
             "one.</p>"]
    ranked_by = "local SQNR"
    if rows and not worst_names:  # no finite local SQNR to rank by: the lowest accumulated ones
        measured = sorted((r for r in rows if finite(r.sqnr_db) is not None), key=lambda r: r.sqnr_db or 0.0)
        worst_names = [r.name for r in measured[:3]]
        ranked_by = "accumulated SQNR (no layer has a finite local SQNR)"
    if rows:
        index = {id(r): i for i, r in enumerate(rows)}
        parts.append(figure(plot_sqnr, [r.name for r in rows], [finite(r.local_sqnr_db) for r in rows],
                            [finite(r.sqnr_db) for r in rows], set(worst_names),
                            [_hover(index[id(r)], r) for r in rows],
                            [f"#{layer_anchor(index[id(r)])}" for r in rows],
                            alt="Per-layer SQNR", map_name="layers-map",
                            caption=f"Layers in execution order. Bars: local SQNR, coloured by it (red below "
                                    f"{LOW_SQNR_DB:.0f} dB, amber below {HEALTHY_SQNR_DB:.0f} dB, blue above), the "
                                    "worst layers outlined; line: accumulated SQNR. Dotted line: "
                                    f"{HEALTHY_SQNR_DB:.0f} dB, typical of a healthy int8 activation; n/a: no local "
                                    "SQNR (an exact layer or not measured). Hover a bar for its full name."))
    positions = {r.name: i for i, r in enumerate(rows)}
    by_name = {r.name: r for r in rows}
    if worst_names:
        parts.append(f"<h3>Worst layers (ranked by {ranked_by})</h3>")
        parts.append(table(_LAYER_HEADERS, [_layer_cells(positions.get(n), n, by_name.get(n)) for n in worst_names],
                           numeric=_NUMERIC, names={1}))
    if rows:
        every = table(_LAYER_HEADERS, [_layer_cells(i, r.name, r) for i, r in enumerate(rows)], numeric=_NUMERIC,
                      names={1}, row_ids=[layer_anchor(i) for i in range(len(rows))])
        parts.append(f"<details><summary>All {len(rows)} layers (execution order)</summary>\n{every}\n</details>")
        parts.append('<p class="note">SQNR: higher is better. rmse / scale ≈ 0.29 is pure rounding noise. '
                     "Saturation: share of int8 values at qmin/qmax. Clipped: share of FP32 values outside the "
                     "representable range. See docs/report.md.</p>")
    return "\n".join(p for p in parts if p)


def render_histograms(page: Page) -> str:
    parts = []
    for item in page.histograms:
        name = item.name or "?"
        edges = [float(e) for e in item.bin_edges]
        counts = [float(c) for c in item.counts]
        ranges = [(method, lo, hi) for method, (lo, hi) in item.ranges.items()
                  if math.isfinite(lo) and math.isfinite(hi)]
        parts.append(f'<h3 class="name">{name_cell(name, 80)}</h3>')
        if not all(math.isfinite(v) for v in (*edges, *counts)):
            parts.append('<p class="note">Histogram not drawn: non-finite bin edges or counts.</p>')
        else:
            parts.append(figure(plot_histogram, name, edges, counts, ranges, alt=f"Histogram of {name}",
                                caption="Calibration activations (log count) with each estimator's [lo, hi] "
                                        "range: values outside a range are clipped by that method."))
        if ranges:
            cells = [[esc(m), fmt(lo, ".4g"), fmt(hi, ".4g"), fmt(hi - lo, ".4g")] for m, lo, hi in ranges]
            parts.append(table(["Estimator", "lo", "hi", "width"], cells, numeric={1, 2, 3}))
    if parts and page.calibration_samples is not None:
        parts.append(_calibration_samples(page.calibration_samples))
    return "\n".join(p for p in parts if p)


def _calibration_samples(section: CalibrationSamples) -> str:
    """Samples that alone set activation ranges, and what the sample guard did (edgeq.calib.outliers): a part of
    the Activation ranges section, shown when there is an outlier sample or the guard is off."""
    guard, samples, trimmed = section.guard, section.outlier_samples, section.trimmed
    if guard.enabled and not samples and not trimmed:
        return ""
    parts = ["<h3>Outlier calibration samples</h3>"]
    if guard.enabled:
        factor, follow = fmt(guard.factor, "g"), fmt(guard.follow, "g")
        parts.append(f"<p>Sample guard <b>on</b>: a sample whose max|x| on a tensor is {factor}× beyond every other "
                     f"sample's (an outlier sample, then {follow}× wherever it stretches a range) is left out of that "
                     f"tensor's range; {len(trimmed)} of {fmt(section.tensors, 'd')} range(s) were chosen "
                     "without one.</p>")
    else:
        parts.append("<p>Sample guard <b>off</b>: every range keeps every calibration sample.</p>")
    if samples:
        cells = []
        for s in samples:
            where = "—"
            if s.worst:
                top = s.worst[0]
                where = (f"{name_cell(top.tensor, 40)}: {fmt(top.value, '.4g')} vs "
                         f"{fmt(top.next_value, '.4g')} (sample {fmt(top.next_sample, 'd')})")
            cells.append([fmt(s.sample, "d"), esc(s.id or "—"), esc(s.condition or "—"), name_cell(s.source or "—"),
                          fmt(s.tensors, "d"), fmt(s.max_factor, ".3g", "×"), fmt(s.trimmed, "d"), where])
        parts.append(table(["Sample", "Id", "Condition", "Source", "Tensors it stretches", "Largest stretch",
                            "Ranges without it", "Most stretched tensor"], cells, numeric={0, 4, 5, 6}, names={3}))
    return "\n".join(parts)
