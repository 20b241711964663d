"""edgeq.validate.tasks against slow, obvious references (plain loops) on small generated inputs, plus the
properties every task must keep: identical outputs are perfect, subsets reduce like the subset's arrays, and
bad shapes or config keys are refused with one clear line."""

from __future__ import annotations

import itertools
import json
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.errors import InputError
from edgeq.validate import tasks as T  # noqa: N812

# ---------------------------------------------------------------------------------------------------------
# slow references


def ref_iou(a, b) -> float:
    """IoU of two (ymin, xmin, ymax, xmax) boxes; empty union: 1 if equal, else 0."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    if union > 0:
        return inter / union
    return 1.0 if list(a) == list(b) else 0.0


def ref_percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def ref_detections(fb, fs, fc, qb, qs, qc, thr=0.5, iou_thr=0.5, same_index=False):
    """(fp32 count, int8 count, matched, Σ IoU, Σ |score error|) over all samples, by brute force."""
    total = [0, 0, 0, 0.0, 0.0]
    for i in range(len(fb)):
        f = [d for d in range(len(fs[i])) if fs[i][d] >= thr]
        q = [d for d in range(len(qs[i])) if qs[i][d] >= thr]
        candidates = [(ref_iou(fb[i][a], qb[i][b]), a, b) for a in f for b in q
                      if fc[i][a] == qc[i][b] and (not same_index or a == b)]
        candidates = [c for c in candidates if c[0] >= iou_thr]
        used_f, used_q = set(), set()
        while True:
            free = [c for c in candidates if c[1] not in used_f and c[2] not in used_q]
            if not free:
                break
            iou, a, b = max(free, key=lambda c: (c[0], -c[1], -c[2]))
            used_f.add(a)
            used_q.add(b)
            total[2] += 1
            total[3] += iou
            total[4] += abs(fs[i][a] - qs[i][b])
        total[0] += len(f)
        total[1] += len(q)
    return total


def ref_decode(reg, anchor, cfg: T.DetectionConfig):
    """MediaPipe's TensorsToDetectionsCalculator::DecodeBoxes for one anchor, written out."""
    o = cfg.box_coord_offset
    if cfg.reverse_output_order:
        x, y, w, h = reg[o], reg[o + 1], reg[o + 2], reg[o + 3]
    else:
        y, x, h, w = reg[o], reg[o + 1], reg[o + 2], reg[o + 3]
    acx, acy, aw, ah = anchor
    x = x / cfg.x_scale * aw + acx
    y = y / cfg.y_scale * ah + acy
    if cfg.apply_exponential_on_box_size:
        h = math.exp(h / cfg.h_scale) * ah
        w = math.exp(w / cfg.w_scale) * aw
    else:
        h = h / cfg.h_scale * ah
        w = w / cfg.w_scale * aw
    return [y - h / 2, x - w / 2, y + h / 2, x + w / 2]


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def same_metrics(a: T.Metrics, b: T.Metrics) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return da.keys() == db.keys() and all(close(da[k], db[k]) for k in da)


# ---------------------------------------------------------------------------------------------------------
# strategies: values on a coarse grid, so the fast and slow versions see exact ties and exact IoUs

quarters = st.integers(-16, 16).map(lambda v: v / 4)


def grid_arrays(shape, elements=quarters):
    return hnp.arrays(np.float64, shape, elements=elements)


@st.composite
def output_pairs(draw, min_n=0):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    shape = (draw(st.integers(min_n, 4)), *shape)
    fp32 = draw(grid_arrays(shape))
    int8 = draw(st.one_of(st.just(fp32.copy()), grid_arrays(shape),
                          grid_arrays(shape, st.sampled_from([0.0, 0.25, -0.25])).map(lambda e: fp32 + e)))
    return fp32, int8


# ---------------------------------------------------------------------------------------------------------
# output fidelity


@settings(max_examples=80)
@given(output_pairs())
def test_fidelity_matches_a_loop(pair) -> None:
    fp32, int8 = pair
    got = T.output_fidelity(fp32, int8)
    n = len(fp32)
    assert got.n == n
    if n == 0:
        assert got.sqnr_db is got.cosine is got.max_abs_error is got.mean_abs_error is None and not got.exact
        return
    signal = noise = 0.0
    cosines, errors = [], []
    for y, q in zip(fp32.reshape(n, -1).tolist(), int8.reshape(n, -1).tolist(), strict=True):
        signal += sum(v * v for v in y)
        noise += sum((a - b) ** 2 for a, b in zip(y, q, strict=True))
        errors += [abs(a - b) for a, b in zip(y, q, strict=True)]
        norm = math.sqrt(sum(v * v for v in y)) * math.sqrt(sum(v * v for v in q))
        cosines.append(1.0 if y == q else 0.0 if norm == 0 else sum(a * b for a, b in zip(y, q, strict=True)) / norm)
    sqnr = math.inf if noise == 0 else -math.inf if signal == 0 else 10 * math.log10(signal / noise)
    assert close(got.sqnr_db, sqnr) and got.exact == (noise == 0)
    assert close(got.cosine, sum(cosines) / n)
    assert got.max_abs_error == max(errors) and close(got.mean_abs_error, sum(errors) / len(errors))


@settings(max_examples=40)
@given(output_pairs(min_n=1))
def test_fidelity_sqnr_is_diagnostics_output_sqnr_db(pair) -> None:
    from edgeq.validate.diagnostics import output_sqnr_db

    fp32, int8 = pair
    assert close(T.output_fidelity(fp32, int8).sqnr_db, output_sqnr_db(fp32, int8))


def test_fidelity_by_hand() -> None:
    # y = (3, 4), ŷ = (3, 0): Σy² = 25, Σ(y−ŷ)² = 16, SQNR = 10·log10(25/16) ≈ 1.938 dB;
    # cosine = 9 / (5·3) = 0.6; errors (0, 4): max 4, mean 2
    got = T.output_fidelity(np.array([[3.0, 4.0]]), np.array([[3.0, 0.0]]))
    assert close(got.sqnr_db, 10 * math.log10(25 / 16)) and close(got.cosine, 0.6)
    assert got.max_abs_error == 4.0 and got.mean_abs_error == 2.0 and not got.exact


def test_fidelity_zero_vectors_and_json() -> None:
    zero, one = np.zeros((2, 3)), np.ones((2, 3))
    both = T.output_fidelity(zero, zero)
    assert both.exact and both.sqnr_db == math.inf and both.cosine == 1.0
    lost = T.output_fidelity(zero, one)  # FP32 all zero, INT8 not: no signal, some noise
    assert lost.sqnr_db == -math.inf and lost.cosine == 0.0 and not lost.exact
    assert T.output_fidelity(one, zero).cosine == 0.0
    for m in (both, lost):
        row = json.loads(json.dumps(m.to_dict(), allow_nan=False))
        assert row["sqnr_db"] is None and row["exact"] is m.exact
    per_sample = T.fidelity_samples(np.array([[1.0], [2.0]]), np.array([[1.0], [1.0]])).sqnr_db
    assert per_sample[0] == math.inf and close(float(per_sample[1]), 10 * math.log10(4 / 1))


@settings(max_examples=40)
@given(output_pairs(min_n=1))
def test_identical_outputs_are_exact(pair) -> None:
    fp32, _ = pair
    got = T.output_fidelity(fp32, fp32.copy())
    assert got.exact and got.sqnr_db == math.inf and got.cosine == 1.0
    assert got.max_abs_error == 0.0 and got.mean_abs_error == 0.0


# ---------------------------------------------------------------------------------------------------------
# classification


@st.composite
def classifier_outputs(draw):
    n, classes = draw(st.integers(0, 6)), draw(st.integers(1, 7))
    values = st.integers(-3, 3).map(float)  # few values: many ties
    labels = draw(st.none() | hnp.arrays(np.int64, (n,), elements=st.integers(0, classes - 1)))
    return draw(grid_arrays((n, classes), values)), draw(grid_arrays((n, classes), values)), labels


@settings(max_examples=80)
@given(classifier_outputs(), st.integers(1, 8))
def test_classification_matches_a_loop(outputs, top_k) -> None:
    fp32, int8, labels = outputs
    got = T.classification_metrics(fp32, int8, labels, T.ClassificationConfig(top_k=top_k))
    n, classes = fp32.shape
    k = min(top_k, classes)

    def ranking(row):
        return sorted(range(classes), key=lambda c: (-row[c], c))

    agree = contained = fp32_right = int8_right = 0
    for i in range(n):
        f, q = ranking(fp32[i].tolist()), ranking(int8[i].tolist())
        agree += f[0] == q[0]
        contained += f[0] in q[:k]
        if labels is not None:
            fp32_right += f[0] == labels[i]
            int8_right += q[0] == labels[i]
    assert got.n == n and got.k == k
    assert close(got.agreement, agree / n if n else None)
    assert close(got.top_k_containment, contained / n if n else None)
    if labels is None or n == 0:
        assert got.fp32_accuracy is None and got.int8_accuracy is None
    else:
        assert close(got.fp32_accuracy, fp32_right / n) and close(got.int8_accuracy, int8_right / n)


def test_classification_accepts_singleton_axes_and_clamps_k() -> None:
    scores = np.array([[[[0.1, 0.7, 0.2]]], [[[0.5, 0.3, 0.2]]]])  # [N, 1, 1, C]
    got = T.classification_metrics(scores, scores[..., ::-1], config=T.ClassificationConfig(top_k=5))
    # reversed classes: argmax 1 -> 1 (middle stays), 0 -> 2: agreement 1/2; k = 3 classes: containment 1
    assert got.k == 3 and got.agreement == 0.5 and got.top_k_containment == 1.0


# ---------------------------------------------------------------------------------------------------------
# detection

coords = st.integers(0, 6).map(float)
scores_grid = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])


@st.composite
def decoded_detections(draw):
    n, count = draw(st.integers(0, 3)), draw(st.integers(0, 5))
    classes = draw(st.sampled_from([None, 1, 3]))
    score_shape = (n, count) if classes is None else (n, count, classes)
    fb = draw(grid_arrays((n, count, 4), coords))
    qb = draw(st.one_of(st.just(fb.copy()), grid_arrays((n, count, 4), coords)))
    fs = draw(grid_arrays(score_shape, scores_grid))
    qs = draw(st.one_of(st.just(fs.copy()), grid_arrays(score_shape, scores_grid)))
    return fb, fs, qb, qs


def scores_and_classes(scores: np.ndarray):
    if scores.ndim == 2:
        return scores.tolist(), np.zeros(scores.shape, dtype=int).tolist()
    top = [[max(range(s.shape[-1]), key=lambda c, s=s: (s[c], -c)) for s in row] for row in scores]
    return scores.max(axis=-1).tolist(), top


@settings(max_examples=100)
@given(decoded_detections(), st.sampled_from([0.1, 0.5, 1.0]), st.sampled_from([0.25, 0.5]), st.booleans())
def test_decoded_detection_matches_brute_force(dets, iou_thr, score_thr, match_classes) -> None:
    fb, fs, qb, qs = dets
    config = T.DetectionConfig(iou_threshold=iou_thr, score_threshold=score_thr, match_classes=match_classes)
    got = T.detection_metrics(fb, fs, qb, qs, config=config)
    (f_s, f_c), (q_s, q_c) = scores_and_classes(fs), scores_and_classes(qs)
    if not match_classes:
        f_c = q_c = np.zeros(fs.shape[:2], dtype=int).tolist()
    found, made, matched, iou_sum, err_sum = ref_detections(fb.tolist(), f_s, f_c, qb.tolist(), q_s, q_c,
                                                            score_thr, iou_thr)
    assert (got.fp32_detections, got.int8_detections, got.matched) == (found, made, matched)
    assert close(got.recall, matched / found if found else None)
    assert close(got.precision, matched / made if made else None)
    assert close(got.mean_iou, iou_sum / matched if matched else None)
    assert close(got.score_mae, err_sum / matched if matched else None)


@settings(max_examples=60)
@given(decoded_detections())
def test_box_formats_are_the_same_boxes(dets) -> None:
    fb, fs, qb, qs = dets
    reference = T.detection_metrics(fb, fs, qb, qs)

    def as_format(b: np.ndarray, fmt: str) -> np.ndarray:
        ymin, xmin, ymax, xmax = np.moveaxis(b, -1, 0)
        if fmt == "xyxy":
            return np.stack([xmin, ymin, xmax, ymax], axis=-1)
        return np.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], axis=-1)

    for fmt in ("xyxy", "cxcywh"):
        got = T.detection_metrics(as_format(fb, fmt), fs, as_format(qb, fmt), qs,
                                  config=T.DetectionConfig(box_format=fmt))
        assert same_metrics(got, reference)


@settings(max_examples=100)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=coords),
       hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=coords))
def test_box_iou_matches_a_loop(a, b) -> None:
    got = T.box_iou(a[:, None], b[None, :])
    for i, j in np.ndindex(got.shape):
        assert got[i, j] == ref_iou(a[i].tolist(), b[j].tolist())


def test_a_shifted_box_loses_iou_monotonically() -> None:
    # boxes 10×10, the INT8 one shifted right by s: intersection 10·(10−s), union 200 − 10·(10−s), so
    # IoU = (10 − s) / (10 + s): 1, 9/11, 8/12, ... 0 at s = 10; >= 0.5 (a match at the default) for s <= 3
    fp32_box = np.array([[[0.0, 0.0, 10.0, 10.0]]])
    score = np.ones((1, 1))
    ious, recalls = [], []
    for s in range(12):
        int8_box = fp32_box + np.array([0.0, s, 0.0, s])
        loose = T.detection_metrics(fp32_box, score, int8_box, score, config=T.DetectionConfig(iou_threshold=1e-9))
        ious.append(loose.mean_iou or 0.0)
        recalls.append(T.detection_metrics(fp32_box, score, int8_box, score).recall)
        assert close(ious[-1], (10 - s) / (10 + s) if s < 10 else 0.0)
    assert all(a > b for a, b in itertools.pairwise(ious[:11])) and ious[10] == ious[11] == 0.0
    assert recalls == [1.0] * 4 + [0.0] * 8


@settings(max_examples=40)
@given(decoded_detections())
def test_identical_detections_are_perfect(dets) -> None:
    fb, fs, _, _ = dets
    got = T.detection_metrics(fb, fs, fb.copy(), fs.copy())
    assert got.int8_detections == got.fp32_detections == got.matched
    if got.fp32_detections:
        boxes_with_area = np.all(fb[..., 2:] > fb[..., :2], axis=-1)
        assert got.recall == got.precision == 1.0 and got.score_mae == 0.0
        if boxes_with_area.all():
            assert got.mean_iou == 1.0
    else:
        assert got.recall is got.precision is got.mean_iou is None


def test_no_fp32_detections_recall_is_none_and_pooled() -> None:
    box = np.array([[[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]]] * 2)
    fp32 = np.array([[0.9, 0.9], [0.1, 0.1]])  # sample 0: two detections; sample 1: none
    int8 = np.array([[0.9, 0.1], [0.1, 0.8]])  # sample 0: one of two kept; sample 1: one spurious
    got = T.detection_metrics(box, fp32, box, int8)
    assert list(got.samples.recall[:1]) == [0.5] and math.isnan(got.samples.recall[1])
    # pooled: 1 matched of 2 FP32 detections, 1 of 2 INT8 detections matched
    assert (got.recall, got.precision, got.mean_iou) == (0.5, 0.5, 1.0)
    empty = got.subset([1])
    assert empty.recall is None and empty.precision == 0.0 and empty.mean_iou is None


@st.composite
def ssd_outputs(draw):
    n, count = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    width = draw(st.integers(4, 6))
    fr = draw(grid_arrays((n, count, width)))
    qr = draw(st.one_of(st.just(fr.copy()), grid_arrays((n, count, width)),
                        grid_arrays((n, count, width), st.sampled_from([0.0, 0.25])).map(lambda e: fr + e)))
    logits = st.integers(-8, 8).map(lambda v: v / 2)
    fs = draw(grid_arrays((n, count, 1), logits))
    qs = draw(st.one_of(st.just(fs.copy()), grid_arrays((n, count, 1), logits)))
    config = T.DetectionConfig(form="ssd", sigmoid_score=True, reverse_output_order=draw(st.booleans()),
                               box_coord_offset=draw(st.integers(0, width - 4)),
                               x_scale=draw(st.sampled_from([1.0, 0.5, 4.0])),
                               w_scale=draw(st.sampled_from([1.0, 2.0])),
                               iou_threshold=draw(st.sampled_from([0.3, 0.5])))
    anchors = draw(st.none() | grid_arrays((count, 4), st.integers(1, 8).map(lambda v: v / 4)))
    return fr, fs, qr, qs, config, anchors


@settings(max_examples=100)
@given(ssd_outputs())
def test_ssd_detection_matches_brute_force(outputs) -> None:
    fr, fs, qr, qs, config, anchors = outputs
    got = T.detection_metrics(fr, fs, qr, qs, config=config, anchors=anchors)
    unit = [[0.0, 0.0, 1.0, 1.0]] * fr.shape[1]
    grid = anchors.tolist() if anchors is not None else unit

    def decode(r):
        return [[ref_decode(row, grid[a], config) for a, row in enumerate(sample)] for sample in r.tolist()]

    def sigmoid(s):
        return [[1 / (1 + math.exp(-v[0])) for v in row] for row in s.tolist()]

    zeros = np.zeros(fs.shape[:2], dtype=int).tolist()
    found, made, matched, iou_sum, err_sum = ref_detections(
        decode(fr), sigmoid(fs), zeros, decode(qr), sigmoid(qs), zeros, config.score_threshold,
        config.iou_threshold, same_index=anchors is None)
    assert (got.fp32_detections, got.int8_detections, got.matched) == (found, made, matched)
    assert close(got.mean_iou, iou_sum / matched if matched else None)
    assert math.isclose(got.score_mae or 0.0, err_sum / matched if matched else 0.0, abs_tol=1e-12)


@settings(max_examples=40)
@given(st.integers(1, 5).flatmap(lambda a: st.tuples(
    grid_arrays((1, a, 4)), grid_arrays((1, a, 4)), grid_arrays((a, 4), st.integers(1, 16).map(lambda v: v / 4)))),
    st.booleans())
def test_exponential_ssd_decoding(arrays, reverse) -> None:
    regressors, _, anchors = arrays
    config = T.DetectionConfig(form="ssd", apply_exponential_on_box_size=True, reverse_output_order=reverse,
                               h_scale=2.0, y_scale=4.0)
    got = T.decode_ssd_boxes(regressors, anchors, config)
    expected = [ref_decode(r, a, config) for r, a in zip(regressors[0].tolist(), anchors.tolist(), strict=True)]
    assert np.allclose(got[0], expected, rtol=1e-12, atol=1e-12)


def _regressors(a: int):
    """[1, a, 4] (y, x, h, w) with sizes of at least 0.05: boxes with an extent (see below)."""
    return st.tuples(hnp.arrays(np.float64, (1, a, 2), elements=st.floats(-3, 3)),
                     hnp.arrays(np.float64, (1, a, 2), elements=st.floats(0.05, 3))).map(
        lambda parts: np.concatenate(parts, axis=2))


@settings(max_examples=100)
@given(st.integers(1, 6).flatmap(lambda a: st.tuples(
    _regressors(a), _regressors(a),
    hnp.arrays(np.float64, (a, 2), elements=st.floats(-2, 2)),
    hnp.arrays(np.float64, (a, 2), elements=st.floats(0.05, 4)))), st.booleans())
def test_same_anchor_iou_does_not_depend_on_the_anchor(arrays, exponential) -> None:
    """The unit-anchor claim (docs/tasks.md): an anchor (cx, cy, w, h) maps x -> cx + w·x and y -> cy + h·y for
    both boxes decoded from it; IoU is invariant under a per-axis shift and positive scaling (every area,
    intersection included, scales by w·h). So without anchors, same-anchor IoUs are right. Boxes without
    extent are left out: their IoU is 1 when equal, else 0, and rounding at a far anchor centre can make two
    almost equal points equal."""
    fp32, int8, centres, sizes = arrays
    config = T.DetectionConfig(form="ssd", apply_exponential_on_box_size=exponential, x_scale=2.0, h_scale=3.0)
    anchors = np.concatenate([centres, sizes], axis=1)
    with_anchor = T.box_iou(T.decode_ssd_boxes(fp32, anchors, config), T.decode_ssd_boxes(int8, anchors, config))
    unit = T.box_iou(T.decode_ssd_boxes(fp32, None, config), T.decode_ssd_boxes(int8, None, config))
    assert np.allclose(with_anchor, unit, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# landmarks


@st.composite
def landmark_outputs(draw):
    n, points, dims = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.sampled_from([2, 3]))
    values = st.integers(0, 20).map(float)
    fp32 = draw(grid_arrays((n, points, dims), values))
    int8 = draw(st.one_of(st.just(fp32.copy()), grid_arrays((n, points, dims), values)))
    return fp32, int8


@settings(max_examples=80)
@given(landmark_outputs(), st.booleans(), st.sampled_from([None, (64.0, 32.0)]), st.sampled_from([None, 8.0]))
def test_landmarks_match_a_loop(outputs, flatten, image_size, box_size) -> None:
    fp32, int8 = outputs
    n, points, dims = fp32.shape
    config = T.LandmarksConfig(dims=dims if flatten else None, box_size=box_size, image_size=image_size,
                               coordinates="normalized" if image_size else "pixels")
    shaped = (lambda a: a.reshape(n, points * dims)) if flatten else (lambda a: a)
    got = T.landmark_metrics(shaped(fp32), shaped(int8), config)
    sx, sy = image_size or (1.0, 1.0)
    errors, normalized, unscaled = [], [], 0
    for f, q in zip(fp32.tolist(), int8.tolist(), strict=True):
        sample = [math.hypot((a[0] - b[0]) * sx, (a[1] - b[1]) * sy) for a, b in zip(f, q, strict=True)]
        xs, ys = [p[0] * sx for p in f], [p[1] * sy for p in f]
        scale = box_size or math.hypot(max(xs) - min(xs), max(ys) - min(ys))
        errors += sample
        if scale > 0:
            normalized += [e / scale for e in sample]
        else:
            unscaled += 1
    assert got.points == points and got.unscaled_samples == unscaled
    assert close(got.mean_error_px, sum(errors) / len(errors)) and close(got.max_error_px, max(errors))
    assert close(got.p95_error_px, ref_percentile(errors, 95))
    assert close(got.mean_error_norm, sum(normalized) / len(normalized) if normalized else None)
    assert close(got.p95_error_norm, ref_percentile(normalized, 95) if normalized else None)


def test_landmarks_by_hand() -> None:
    # FP32 points (0, 0) and (30, 40): box diagonal 50. INT8 moves the second by (3, 4): errors 0 and 5 px;
    # mean 2.5 px, p95 = 0 + 0.95·5 = 4.75 px; normalized mean 2.5 / 50 = 0.05
    fp32 = np.array([[[0.0, 0.0], [30.0, 40.0]]])
    got = T.landmark_metrics(fp32, fp32 + np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert (got.mean_error_px, got.p95_error_px, got.max_error_px) == (2.5, 4.75, 5.0)
    assert close(got.mean_error_norm, 0.05) and close(float(got.samples.mean_norm[0]), 0.05)


def test_identical_landmarks_have_no_error() -> None:
    points = np.arange(24, dtype=np.float64).reshape(2, 1, 1, 12)  # [N, 1, 1, K·3] as MediaPipe emits
    got = T.landmark_metrics(points, points.copy(), T.LandmarksConfig(dims=3))
    assert got.points == 4 and got.mean_error_px == got.p95_error_px == got.mean_error_norm == 0.0


# ---------------------------------------------------------------------------------------------------------
# segmentation


@st.composite
def mask_outputs(draw):
    n, h, w, channels = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(
        st.sampled_from([0, 1, 2, 3]))
    shape = (n, h, w) if channels == 0 else (n, h, w, channels)
    values = scores_grid if channels <= 1 else st.integers(0, 2).map(float)
    fp32 = draw(grid_arrays(shape, values))
    int8 = draw(st.one_of(st.just(fp32.copy()), grid_arrays(shape, values)))
    return fp32, int8


def ref_masks(fp32: np.ndarray, int8: np.ndarray, threshold: float):
    """Per sample: per-class (intersection, union) pixel counts, by counting pixel by pixel."""
    multi = fp32.ndim == 4 and fp32.shape[3] > 1
    classes = fp32.shape[3] if multi else 1
    counts = []
    for f, q in zip(fp32.tolist(), int8.tolist(), strict=True):
        inter, union = [0] * classes, [0] * classes
        for frow, qrow in zip(f, q, strict=True):
            for a, b in zip(frow, qrow, strict=True):
                if multi:
                    ca = max(range(classes), key=lambda c, a=a: (a[c], -c))
                    cb = max(range(classes), key=lambda c, b=b: (b[c], -c))
                    inter[ca] += ca == cb
                    union[ca] += 1
                    union[cb] += ca != cb
                else:
                    a, b = (v[0] if isinstance(v, list) else v for v in (a, b))
                    inter[0] += a >= threshold and b >= threshold
                    union[0] += a >= threshold or b >= threshold
        counts.append((inter, union))
    return counts


@settings(max_examples=80)
@given(mask_outputs())
def test_segmentation_matches_pixel_counting(masks) -> None:
    fp32, int8 = masks
    got = T.segmentation_metrics(fp32, int8)
    counts = ref_masks(fp32, int8, 0.5)
    per_sample = []
    for inter, union in counts:
        present = [i / u for i, u in zip(inter, union, strict=True) if u]
        per_sample.append(sum(present) / len(present) if present else 1.0)  # empty ∪ empty = 1.0
    classes = len(counts[0][0])
    pooled = [(sum(c[0][k] for c in counts), sum(c[1][k] for c in counts)) for k in range(classes)]
    class_iou = [i / u if u else None for i, u in pooled]
    present = [v for v in class_iou if v is not None]
    assert got.classes == classes and close(got.mean_iou, sum(per_sample) / len(per_sample))
    assert close(list(got.class_iou), class_iou)
    assert close(got.mean_class_iou, sum(present) / len(present) if present else 1.0)


def test_segmentation_logits_and_empty_masks() -> None:
    # sigmoid >= 0.5 where the logit >= 0: FP32 foreground {(0,1), (1,0)}, INT8 {(1,0), (1,1)};
    # intersection {(1,0)}, union of 3 pixels: IoU 1/3
    fp32 = np.array([[[-2.0, 0.0], [1.0, -0.5]]])
    int8 = np.array([[[-2.0, -1.0], [1.0, 0.5]]])
    as_logits = T.segmentation_metrics(fp32, int8, T.SegmentationConfig(sigmoid=True))
    as_probs = T.segmentation_metrics(1 / (1 + np.exp(-fp32)), 1 / (1 + np.exp(-int8)))
    assert same_metrics(as_logits, as_probs) and close(as_logits.mean_iou, 1 / 3)
    empty = T.segmentation_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    assert empty.mean_iou == 1.0 and empty.class_iou == (None,) and empty.mean_class_iou == 1.0


@settings(max_examples=30)
@given(mask_outputs())
def test_identical_masks_have_iou_one(masks) -> None:
    fp32, _ = masks
    got = T.segmentation_metrics(fp32, fp32.copy())
    assert got.mean_iou == got.mean_class_iou == 1.0 and all(v in (None, 1.0) for v in got.class_iou)


# ---------------------------------------------------------------------------------------------------------
# subsets: per-condition breakdowns


def _all_tasks(draw):
    """(metrics on full arrays, function of an index array giving metrics on the subset's arrays)."""
    kind = draw(st.sampled_from(["fidelity", "classification", "detection", "ssd", "landmarks", "segmentation"]))
    if kind == "fidelity":
        f, q = draw(output_pairs(min_n=1))
        return T.output_fidelity(f, q), lambda i: T.output_fidelity(f[i], q[i])
    if kind == "classification":
        f, q, labels = draw(classifier_outputs().filter(lambda o: len(o[0]) > 0))
        return (T.classification_metrics(f, q, labels),
                lambda i: T.classification_metrics(f[i], q[i], None if labels is None else labels[i]))
    if kind == "detection":
        fb, fs, qb, qs = draw(decoded_detections().filter(lambda d: len(d[0]) > 0))
        return T.detection_metrics(fb, fs, qb, qs), lambda i: T.detection_metrics(fb[i], fs[i], qb[i], qs[i])
    if kind == "ssd":
        fr, fs, qr, qs, c, a = draw(ssd_outputs())
        return (T.detection_metrics(fr, fs, qr, qs, config=c, anchors=a),
                lambda i: T.detection_metrics(fr[i], fs[i], qr[i], qs[i], config=c, anchors=a))
    if kind == "landmarks":
        f, q = draw(landmark_outputs())
        return T.landmark_metrics(f, q), lambda i: T.landmark_metrics(f[i], q[i])
    f, q = draw(mask_outputs())
    return T.segmentation_metrics(f, q), lambda i: T.segmentation_metrics(f[i], q[i])


@settings(max_examples=120)
@given(st.data())
def test_subset_metrics_equal_metrics_of_the_subset(data) -> None:
    full, on_arrays = _all_tasks(data.draw)
    mask = data.draw(hnp.arrays(bool, (full.n,)))
    picked = np.flatnonzero(mask)
    assert same_metrics(full.subset(mask), on_arrays(picked))
    assert same_metrics(full.subset(picked.tolist()), on_arrays(picked))
    assert same_metrics(full.subset(None), full) and full.subset(mask).n == len(picked)
    json.dumps(full.to_dict(), allow_nan=False)


# ---------------------------------------------------------------------------------------------------------
# declarations and the registry


def test_output_task_measures_every_registered_task() -> None:
    rng = np.random.default_rng(0)
    fp32 = {"logits": rng.normal(size=(6, 4)), "boxes": rng.uniform(0, 1, (6, 3, 4)).cumsum(axis=2),
            "scores": rng.uniform(0, 1, (6, 3)), "regressors": rng.normal(size=(6, 5, 16)),
            "classificators": rng.normal(size=(6, 5, 1)), "points": rng.uniform(0, 1, (6, 21 * 3)),
            "mask": rng.uniform(0, 1, (6, 8, 8, 1))}
    declarations = [
        {"output": "logits", "task": "generic"},
        {"output": "logits", "task": "classification", "top_k": 2},
        {"output": "boxes", "task": "detection", "scores": "scores", "box_format": "yxyx"},
        {"output": "regressors", "task": "detection", "form": "ssd", "scores": "classificators", "x_scale": 128,
         "y_scale": 128, "w_scale": 128, "h_scale": 128, "reverse_output_order": True, "sigmoid_score": True,
         "score_clipping_thresh": 100, "anchors": "anchors.npy"},
        {"output": "points", "task": "landmarks", "dims": 3, "coordinates": "normalized", "image_size": [192, 192]},
        {"output": "mask", "task": "segmentation", "threshold": 0.5},
    ]
    anchors = np.column_stack([rng.uniform(0, 1, (5, 2)), np.ones((5, 2))])
    assert set(T.TASKS) == {d["task"] for d in declarations}
    for declared in declarations:
        task = T.OutputTask.parse(declared)
        assert set(task.reads().values()) <= set(fp32)
        loaded = anchors if "anchors" in declared else None
        same = task.measure(fp32, fp32, labels=np.arange(6) % 4, anchors=loaded)
        assert same.n == 6 and json.dumps(same.to_dict(), allow_nan=False)
        noisy = task.measure(fp32, {k: v + 0.01 for k, v in fp32.items()}, anchors=loaded)
        assert isinstance(noisy, T.Metrics) and noisy.n == 6
    assert T.OutputTask.parse(declarations[0]).measure(fp32, fp32).exact


def test_declarations_are_typed_and_frozen() -> None:
    config = T.DetectionConfig(x_scale=128, score_clipping_thresh=100)
    assert isinstance(config.x_scale, float) and config.x_scale == 128.0
    landmarks = T.OutputTask.parse({"output": "p", "task": "landmarks", "coordinates": "normalized",
                                    "image_size": [256, 128]}).config
    assert landmarks.image_size == (256.0, 128.0)
    with pytest.raises(AttributeError):
        config.x_scale = 1.0  # type: ignore[misc]
    for name, task in T.TASKS.items():
        assert task.summary and isinstance(task.config(), T.TaskConfig), name


def _one_line_error(call, *fragments: str) -> None:
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message


@pytest.mark.parametrize(("mapping", "fragments"), [
    ({"output": "reg", "task": "detection", "scores": "s", "anchor": "a.npy"}, ("'reg'", "unknown key 'anchor'",
                                                                                  "anchors")),
    ({"output": "x", "task": "generic", "top_k": 3}, ("unknown key 'top_k'", "known keys: none")),
    ({"output": "x", "task": "classification", "top_k": "5"}, ("top_k must be an integer", "'5'")),
    ({"output": "x", "task": "classification", "top_k": 0}, ("top_k must be at least 1",)),
    ({"output": "x", "task": "detection", "scores": "s", "form": "yolo"}, ("form must be one of decoded, ssd",)),
    ({"output": "x", "task": "detection", "scores": "s", "iou_threshold": 1.5}, ("iou_threshold",)),
    ({"output": "x", "task": "detection", "scores": "s", "x_scale": 0}, ("x_scale must not be 0",)),
    ({"output": "x", "task": "detection", "scores": "s", "anchors": "a.npy"}, ("anchors apply to form: ssd",)),
    ({"output": "x", "task": "detection"}, ("needs scores",)),
    ({"output": "x", "task": "detection", "scores": "s", "match_classes": "yes"}, ("true or false",)),
    ({"output": "x", "task": "landmarks", "image_size": [1, 2, 3], "coordinates": "normalized"}, ("list of 2",)),
    ({"output": "x", "task": "landmarks", "coordinates": "normalized"}, ("image_size",)),
    ({"output": "x", "task": "landmarks", "dims": 1}, ("dims must be at least 2",)),
    ({"output": "x", "task": "segmentation", "sigmoid": True, "threshold": 1.0}, ("threshold",)),
    ({"output": "x", "task": "segmentation", "threshold": float("nan")}, ("threshold must be a number",)),
    ({"output": "x", "task": "segment"}, ("task must be one of", "segmentation", "'segment'")),
    ({"output": "x"}, ("task must be one of",)),
    ({"task": "generic"}, ("needs output",)),
    ({"output": "x", "task": "generic", 3: 1}, ("unknown key 3",)),
    (["output", "x"], ("must be a mapping",)),
])
def test_bad_declarations_are_refused_in_one_line(mapping, fragments) -> None:
    _one_line_error(lambda: T.OutputTask.parse(mapping), *fragments)


def test_measure_names_missing_outputs_and_anchors() -> None:
    task = T.OutputTask.parse({"output": "reg", "task": "detection", "form": "ssd", "scores": "cls",
                               "anchors": "anchors.npy"})
    reg, cls = np.zeros((1, 2, 4)), np.zeros((1, 2))
    _one_line_error(lambda: task.measure({"reg": reg}, {"reg": reg, "cls": cls}), "'cls'", "FP32", "outputs: reg")
    _one_line_error(lambda: task.measure({"reg": reg, "cls": cls}, {"reg": reg, "cls": cls}), "anchors.npy",
                    "did not load")
    with pytest.raises(InputError, match="needs a DetectionConfig"):
        T.OutputTask("x", "detection", T.GenericConfig())


def _bad(shape, fill=0.0):
    return np.full(shape, fill)


@pytest.mark.parametrize(("call", "fragments"), [
    (lambda: T.output_fidelity(_bad((2, 3)), _bad((2, 4))), ("differ in shape", "[2, 3] vs [2, 4]")),
    (lambda: T.output_fidelity(np.float64(1.0), np.float64(1.0)), ("at least 1 dimensions",)),
    (lambda: T.output_fidelity(_bad((2, 0)), _bad((2, 0))), ("no values per sample",)),
    (lambda: T.output_fidelity(_bad((2, 3), np.nan), _bad((2, 3))), ("FP32", "6 non-finite")),
    (lambda: T.output_fidelity(np.array([["a"]]), np.array([["a"]])), ("real numbers",)),
    (lambda: T.output_fidelity(_bad((2, 3)), _bad((2, 3))).subset([5]), ("[0, 2)",)),
    (lambda: T.output_fidelity(_bad((2, 3)), _bad((2, 3))).subset([True]), ("mask must have shape [2]",)),
    (lambda: T.output_fidelity(_bad((2, 3)), _bad((2, 3))).subset([0.5]), ("list of integers",)),
    (lambda: T.classification_metrics(_bad((2, 3, 4)), _bad((2, 3, 4))), ("[N, C]", "[2, 3, 4]")),
    (lambda: T.classification_metrics(_bad((2,)), _bad((2,))), ("at least 2 dimensions",)),
    (lambda: T.classification_metrics(_bad((2, 3)), _bad((2, 3)), labels=[0]), ("2 integer class ids",)),
    (lambda: T.classification_metrics(_bad((2, 3)), _bad((2, 3)), labels=[0, 3]), ("[0, 3)",)),
    (lambda: T.classification_metrics(_bad((2, 3)), _bad((2, 3)), labels=[0.0, 1.0]), ("integer class ids",)),
    (lambda: T.detection_metrics(_bad((1, 2, 5)), _bad((1, 2)), _bad((1, 2, 5)), _bad((1, 2))), ("[N, D, 4]",)),
    (lambda: T.detection_metrics(_bad((1, 2, 4)), _bad((1, 3)), _bad((1, 2, 4)), _bad((1, 3))), ("[N, 2]",)),
    (lambda: T.detection_metrics(_bad((1, 2, 4)), _bad((1, 2)), _bad((1, 2, 4)), _bad((1, 2)),
                                 fp32_classes=_bad((1, 3)), int8_classes=_bad((1, 3))), ("classes must have",)),
    (lambda: T.detection_metrics(_bad((1, 2, 5)), _bad((1, 2)), _bad((1, 2, 5)), _bad((1, 2)),
                                 config=T.DetectionConfig(form="ssd", box_coord_offset=2)), ("at least 6",)),
    (lambda: T.detection_metrics(_bad((1, 2, 4)), _bad((1, 2)), _bad((1, 2, 4)), _bad((1, 2)),
                                 config=T.DetectionConfig(form="ssd"), anchors=_bad((3, 4), 1.0)), ("[2, 4]",)),
    (lambda: T.detection_metrics(_bad((1, 2, 4)), _bad((1, 2)), _bad((1, 2, 4)), _bad((1, 2)),
                                 config=T.DetectionConfig(form="ssd"), anchors=_bad((2, 4))), ("positive",)),
    (lambda: T.landmark_metrics(_bad((2, 12)), _bad((2, 12))), ("declare dims",)),
    (lambda: T.landmark_metrics(_bad((2, 10)), _bad((2, 10)), T.LandmarksConfig(dims=3)), ("multiple of dims 3",)),
    (lambda: T.landmark_metrics(_bad((2, 4, 3)), _bad((2, 4, 3)), T.LandmarksConfig(dims=2)),
     ("[N, K·2]", "[2, 4, 3]")),
    (lambda: T.segmentation_metrics(_bad((2, 3)), _bad((2, 3))), ("at least 3 dimensions",)),
    (lambda: T.segmentation_metrics(_bad((2, 3, 3, 1, 1)), _bad((2, 3, 3, 1, 1))), ("[N, H, W, C]",)),
    (lambda: T.segmentation_metrics(_bad((2, 0, 3)), _bad((2, 0, 3))), ("[N, H, W]",)),
])
def test_bad_shapes_are_refused_in_one_line(call, fragments) -> None:
    _one_line_error(call, *fragments)
