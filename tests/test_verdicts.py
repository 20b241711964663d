"""Verdicts that survive statistics: intervals, the held-out split, the fidelity ranking and the max-drop gate.

The ranking, the split and the gate are pure functions of measurements, so most tests construct per-sample
predictions directly; one test runs the real ``edgeq validate`` on the tiny zoo CNN end to end.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeq.artifacts import Estimator
from edgeq.cli import main as cli
from edgeq.cli.validate import method_rows
from edgeq.errors import InputError
from edgeq.report.page import render_html, write_report
from edgeq.results.validation import Comparison, Half, SelectionScore, ValidationRun
from edgeq.validate.stats import PairedCounts, paired_difference_interval, wilson_interval, z_value
from edgeq.validate.verdicts import (
    FIDELITY_ORDER,
    Fidelity,
    comparison,
    fidelity_order,
    judge_drop,
    judge_limit,
    max_drop_gate,
    measure_drop,
    measure_fidelity,
    rank_by_fidelity,
    split_halves,
)

REPORT = Path(__file__).parent / "data" / "report" / "validate_report.json"  # a real edgeq validate report.json

# ---------------------------------------------------------------- intervals


@pytest.mark.parametrize(("successes", "n", "lo", "hi"), [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857, Table I
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_the_textbook(successes: int, n: int, lo: float, hi: float) -> None:
    assert wilson_interval(successes, n) == pytest.approx((lo, hi), abs=5e-5)


def _wilson_by_scanning(successes: int, n: int, step: float = 1e-6) -> tuple[float, float]:
    """The slow, obvious definition: every p the score test (p̂ - p)² <= z² p (1 - p) / n does not reject."""
    p = np.arange(0.0, 1.0 + step / 2, step)
    z = z_value()
    accepted = p[(successes / n - p) ** 2 <= z * z * p * (1 - p) / n + 1e-15]
    return float(accepted.min()), float(accepted.max())


@pytest.mark.parametrize(("successes", "n"), [(0, 1), (1, 1), (0, 7), (7, 7), (3, 10), (107, 120), (214, 240),
                                              (1, 1000), (999, 1000)])
def test_wilson_interval_is_the_set_the_score_test_accepts(successes: int, n: int) -> None:
    assert wilson_interval(successes, n) == pytest.approx(_wilson_by_scanning(successes, n), abs=2e-6)


def test_wilson_interval_refuses_impossible_counts() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for successes, n in ((-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(successes, n)


def test_paired_interval_matches_the_textbook() -> None:
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables, ch. 8: complete response
    before and after consolidation therapy (Cavo et al. 2012), Newcombe square-and-add -0.1186 to -0.0046."""
    counts = PairedCounts(both=59, first_only=6, second_only=16, neither=80)
    assert (counts.first_only - counts.second_only) / counts.n == pytest.approx(-0.0621, abs=5e-5)
    assert paired_difference_interval(counts) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


@given(st.integers(0, 60), st.integers(0, 15), st.integers(0, 15), st.integers(0, 60))
def test_paired_interval_holds_the_estimate_and_mirrors(both: int, first: int, second: int, neither: int) -> None:
    counts = PairedCounts(both, first, second, neither)
    if counts.n == 0:
        return
    lo, hi = paired_difference_interval(counts)
    estimate = (first - second) / counts.n
    assert -1.0 <= lo <= estimate + 1e-12 and estimate - 1e-12 <= hi <= 1.0
    mirrored = paired_difference_interval(PairedCounts(both, second, first, neither))
    assert mirrored == pytest.approx((-hi, -lo), abs=1e-12)


def test_paired_interval_covers_the_true_drop() -> None:
    """Seeded simulation: paired tables of 120 samples with a known difference; the 95% interval must hold it
    at least about 95% of the time (Newcombe's interval is a little conservative when discordance is rare)."""
    rng = np.random.default_rng(12)
    for probs in ((0.85, 0.03, 0.02, 0.10), (0.5, 0.1, 0.05, 0.35)):
        truth = probs[1] - probs[2]
        tables = rng.multinomial(120, probs, size=1000)
        hits = sum(lo <= truth <= hi for lo, hi in (paired_difference_interval(PairedCounts(*map(int, t)))
                                                    for t in tables))
        assert 0.93 <= hits / len(tables) <= 1.0, (probs, hits)


def test_paired_counts_from_outcomes() -> None:
    fp32 = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    int8 = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    counts = PairedCounts.from_outcomes(fp32, int8)
    assert (counts.both, counts.first_only, counts.second_only, counts.neither) == (3, 1, 1, 1)
    assert (counts.n, counts.first, counts.second) == (6, 4, 4)
    with pytest.raises(ValueError):
        PairedCounts.from_outcomes(fp32, int8[:3])


# ---------------------------------------------------------------- ties


def test_differences_inside_the_interval_are_ties() -> None:
    """Two samples of 240 (the demo's 'mse beats FP32') are a tie; thirty are a real drop; a real gain is better."""
    fp32 = np.arange(240) < 210  # 87.50 %
    two_better = fp32.copy()
    two_better[[230, 231]] = True  # 88.33 %
    tie = measure_drop(fp32, two_better)
    assert tie.drop_pp == pytest.approx(-0.8333, abs=1e-4) and tie.vs_fp32 == "tie"
    lo, hi = tie.drop_ci_pp
    assert lo < 0 < hi
    worse = fp32.copy()
    worse[:30] = False
    assert measure_drop(fp32, worse).vs_fp32 == "worse"
    assert measure_drop(worse, fp32).vs_fp32 == "better"
    assert measure_drop(fp32, fp32).vs_fp32 == "tie" and measure_drop(fp32, fp32).drop_pp == 0.0
    assert tie.n == 240
    assert comparison(-0.5, 0.5) == "tie" and comparison(0.0, 1.0) == "tie"  # a bound on 0 is inside
    assert comparison(0.1, 2.0) == "worse" and comparison(-2.0, -0.1) == "better"


# ---------------------------------------------------------------- the fidelity ranking


def _scores(predicted: np.ndarray, classes: int = 10, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """One-hot-ish scores whose argmax is ``predicted``, with optional noise that keeps the argmax."""
    scores = np.full((len(predicted), classes), 0.01, dtype=np.float32)
    scores[np.arange(len(predicted)), predicted] = 0.9
    if jitter:
        scores += np.random.default_rng(seed).uniform(-jitter, jitter, scores.shape).astype(np.float32)
    return scores


def test_a_method_that_wins_top1_by_two_samples_but_disagrees_more_is_not_picked() -> None:
    """The demo's failure: mse scored 2 samples more than FP32 by changing FP32's answer; minmax and auto
    reproduce FP32 on every sample. The old rule (highest top-1) picked mse; fidelity picks auto."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 240)
    fp32_pred = labels.copy()
    wrong = rng.choice(240, 30, replace=False)
    fp32_pred[wrong] = (labels[wrong] + 1) % 10  # FP32 87.50 %
    fp32 = _scores(fp32_pred, jitter=0.02, seed=1)
    mse_pred = fp32_pred.copy()
    mse_pred[wrong[:2]] = labels[wrong[:2]]  # two lucky flips towards the label
    predictions = {"minmax": fp32_pred, "mse": mse_pred, "auto": fp32_pred}
    int8 = {m: _scores(p, jitter=0.03, seed=i + 2) for i, (m, p) in enumerate(predictions.items())}
    top1 = {m: float(np.mean(s.argmax(-1) == labels)) for m, s in int8.items()}
    assert round(240 * (top1["mse"] - top1["minmax"])) == 2
    assert max(top1, key=top1.__getitem__) == "mse"  # what the old rule picked

    records = [measure_fidelity(m, fp32, s) for m, s in int8.items()]
    by_method = {r.method: r for r in records}
    assert by_method["mse"].agreement == pytest.approx(238 / 240) and by_method["minmax"].agreement == 1.0
    groups = rank_by_fidelity(records)
    assert groups[-1][0].method == "mse"
    assert groups[0][0].method in ("minmax", "auto") and "mse" not in [r.method for r in groups[0]]


def _record(method: str, agreement: float, sqnr: float, mae: float = 0.01) -> Fidelity:
    return Fidelity(method=method, n=120, agreement=agreement, output_sqnr_db=sqnr, output_mae=mae)


def test_a_bit_exact_method_ranks_first_also_after_a_json_round_trip() -> None:
    records = [_record("minmax", 1.0, 31.2), _record("kl", 1.0, math.inf, 0.0), _record("mse", 0.99, 45.0)]
    assert rank_by_fidelity(records)[0][0].method == "kl"
    row = records[1].to_score(rank=1).to_document()
    assert row["output_sqnr_db"] is None and row["bit_exact"] is True  # JSON has no Infinity
    text = json.dumps(row, allow_nan=False)
    restored = [Fidelity.from_score(r.method, SelectionScore.from_document(json.loads(json.dumps(
        r.to_score(rank=2).to_document())))) for r in records[:1]]
    restored.append(Fidelity.from_score("kl", SelectionScore.from_document(json.loads(text))))
    assert restored[1].bit_exact and rank_by_fidelity(restored)[0][0].method == "kl"
    # the old `r["output_sqnr_db"] or 0.0` turned exactly this record into the worst SQNR of all
    assert (row["output_sqnr_db"] or 0.0) < records[0].output_sqnr_db


def test_bit_exact_outputs_are_measured_as_infinite() -> None:
    fp32 = _scores(np.arange(20) % 10, jitter=0.05)
    record = measure_fidelity("auto", fp32, fp32.copy())
    assert record.bit_exact and record.output_sqnr_db == math.inf and record.output_mae == 0.0
    assert record.agreement == 1.0


def test_ranking_keys_in_order_and_exact_ties_grouped() -> None:
    records = [
        _record("percentile", 0.99, 40.0),  # lower agreement loses to any SQNR
        _record("minmax", 1.0, 30.0, 0.02),
        _record("mse", 1.0, 30.0, 0.01),  # same agreement and SQNR: the smaller output error wins
        _record("kl", 1.0, 29.0),
        _record("auto", 1.0, 30.0, 0.01),  # identical to mse: a tie, resolved in auto's favour
        _record("odd", 1.0, math.nan),  # an unmeasurable SQNR ranks below every measured one
    ]
    groups = [[r.method for r in g] for g in rank_by_fidelity(records)]
    assert groups == [["auto", "mse"], ["minmax"], ["kl"], ["odd"], ["percentile"]]
    # without auto among the tied, the given order decides
    groups = [[r.method for r in g] for g in rank_by_fidelity([records[2], _record("kl", 1.0, 30.0, 0.01)])]
    assert groups == [["mse", "kl"]]


def _task_record(method: str, metric: str | None, value: float | None, sqnr: float = 30.0,
                 mae: float = 0.01) -> Fidelity:
    return Fidelity(method=method, n=60, agreement=None, output_sqnr_db=sqnr, output_mae=mae, metric=metric,
                    value=value)


def test_the_ranking_follows_the_ranked_outputs_task() -> None:
    """The task's primary metric first (in its own direction), then SQNR, then error; unmeasured ranks last."""
    recall = [_task_record("minmax", "recall", 0.90, 40.0), _task_record("mse", "recall", 0.95, 20.0),
              _task_record("kl", "recall", None, 50.0), _task_record("auto", "recall", 0.95, 20.0)]
    assert [[r.method for r in g] for g in rank_by_fidelity(recall)] == [["auto", "mse"], ["minmax"], ["kl"]]
    errors = [_task_record("minmax", "mean_error_norm", 0.02), _task_record("kl", "mean_error_norm", 0.01)]
    assert rank_by_fidelity(errors)[0][0].method == "kl"  # landmark error: lower first
    generic = [_task_record("minmax", None, None, 30.0), _task_record("kl", None, None, 31.0),
               _task_record("mse", None, None, 31.0, 0.001)]
    assert [[r.method for r in g] for g in rank_by_fidelity(generic)] == [["mse"], ["kl"], ["minmax"]]
    score = recall[1].to_score(rank=1)
    assert score.agreement is None and (score.metric, score.value) == ("recall", 0.95)
    assert "agreement" not in score.to_document()
    assert Fidelity.from_score("mse", SelectionScore.from_document(score.to_document())).sort_key() == \
        recall[1].sort_key()
    assert fidelity_order("classification") == FIDELITY_ORDER
    assert fidelity_order("detection", "boxes")[0] == "detection recall of 'boxes' (higher first)"
    assert fidelity_order("landmarks")[0] == "landmarks mean_error_norm (lower first)"
    assert len(fidelity_order("generic", "y")) == 2


def test_a_limit_is_inclusive_and_fails_when_nothing_was_measured() -> None:
    at = judge_limit("min_mask_iou:m", "mask IoU of 'm'", "auto", 12, 0.8, 0.8, higher_is_better=True)
    assert at.passed and at.detail == "auto: mask IoU of 'm' 0.8 on 12 held-out samples, limit at least 0.8: pass"
    assert not judge_limit("x", "error", "kl", 12, 0.0101, 0.01, higher_is_better=False).passed
    nothing = judge_limit("min_detection_recall:b", "recall", "auto", 5, None, 0.5, higher_is_better=True)
    assert not nothing.passed and nothing.detail.endswith("fail, nothing to measure it on")
    exact = judge_limit("min_output_sqnr:y", "SQNR", "auto", 5, math.inf, 90.0, higher_is_better=True, exact=True)
    gate = exact.to_gate()
    assert gate.passed and gate.value is None and gate.limit == 90.0 and "∞ (bit-exact)" in gate.detail
    assert judge_limit("s", "SQNR", "auto", 5, -math.inf, 0.0, higher_is_better=True).passed is False


# ---------------------------------------------------------------- the split


def _strata(labels: np.ndarray, conditions: list[str] | None, indices: np.ndarray) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for i in indices:
        key = (conditions[i] if conditions else "", int(labels[i]))
        out[key] = out.get(key, 0) + 1
    return out


@given(st.lists(st.tuples(st.sampled_from(["original", "noise", "blur"]), st.integers(0, 4)), min_size=2,
                max_size=200), st.integers(0, 2**32))
def test_the_split_is_deterministic_stratified_and_disjoint(samples: list[tuple[str, int]], seed: int) -> None:
    conditions = [c for c, _ in samples]
    labels = np.array([label for _, label in samples])
    split = split_halves(labels, conditions, seed)
    again = split_halves(labels, conditions, seed)
    assert np.array_equal(split.selection, again.selection) and np.array_equal(split.gate, again.gate)
    assert not set(split.selection) & set(split.gate)
    assert sorted([*split.selection, *split.gate]) == list(range(len(labels)))
    assert abs(len(split.selection) - len(split.gate)) <= 1 and len(split.gate) > 0
    selected, gated = _strata(labels, conditions, split.selection), _strata(labels, conditions, split.gate)
    for key in set(selected) | set(gated):
        assert abs(selected.get(key, 0) - gated.get(key, 0)) <= 1, key


def test_the_split_depends_on_the_seed_and_records_its_counts() -> None:
    labels = np.repeat(np.arange(10), 24)
    conditions = ["original", "noise", "blur", "overexposed"] * 60
    a, b = split_halves(labels, conditions, 0), split_halves(labels, conditions, 1)
    assert not np.array_equal(a.gate, b.gate)
    record = a.to_record(conditions)
    assert record.seed == 0 and record.stratified_by == ("condition", "label")
    assert record.selection.n == record.gate.n == 120
    assert record.gate.per_condition == {c: 30 for c in ("original", "noise", "blur", "overexposed")}
    assert split_halves(labels, None, 0).to_record(None).stratified_by == ("label",)
    assert "per_condition" not in split_halves(labels, None, 0).to_record(None).to_document()["gate"]


def test_a_strata_assignment_does_not_depend_on_other_strata() -> None:
    labels = np.array([0] * 9 + [1] * 8)
    full = split_halves(labels, None, 5)
    only_zeros = split_halves(labels[:9], None, 5)
    assert [i for i in full.gate if i < 9] == list(only_zeros.gate)


def test_an_unlabelled_split_is_stratified_by_condition_alone() -> None:
    conditions = ["original", "noise"] * 10
    split = split_halves(None, conditions, 0)
    assert len(split.selection) == len(split.gate) == 10
    record = split.to_record(conditions, labelled=False)
    assert record.stratified_by == ("condition",) and record.gate.per_condition == {"original": 5, "noise": 5}
    assert np.array_equal(split.gate, split_halves(np.zeros(20, dtype=int), conditions, 0).gate)
    plain = split_halves(None, None, 0, n=7)
    assert sorted([*plain.selection, *plain.gate]) == list(range(7))
    assert plain.to_record(None, labelled=False).stratified_by == ()


def test_the_split_needs_two_samples() -> None:
    with pytest.raises(InputError, match="at least 2"):
        split_halves(np.array([3]), ["original"])
    with pytest.raises(InputError):
        split_halves(np.array([3, 4]), ["original"])  # conditions that do not line up


# ---------------------------------------------------------------- the gate


def _drop(fp32_right: int, int8_right: int, n: int = 120) -> Any:
    """A paired measurement: the first fp32_right (int8_right) samples are right under FP32 (INT8)."""
    return measure_drop(np.arange(n) < fp32_right, np.arange(n) < int8_right)


def test_the_gate_judges_the_point_estimate_and_says_whether_the_interval_makes_it_clear() -> None:
    small = _drop(108, 107)  # 0.83 pp on 120 samples: interval about ±3 pp
    assert small.drop_pp == pytest.approx(0.8333, abs=1e-4)
    cases = {
        100.0: (True, True, "pass, clearly within the limit"),
        1.0: (True, False, "pass, but the limit lies inside the interval (not statistically clear)"),
        0.5: (False, False, "fail, the limit lies inside the interval (not statistically clear)"),
        -50.0: (False, True, "fail, clearly over the limit"),
    }
    for limit, (passed, clear, words) in cases.items():
        verdict = judge_drop("auto", small, limit)
        assert (verdict.passed, verdict.clear) == (passed, clear), limit
        assert verdict.detail.endswith(words) and "auto drops +0.83 pp on 120 held-out samples" in verdict.detail
        row = verdict.to_result()
        assert row.split is Half.GATE and row.drop_ci_pp == small.drop_ci_pp and row.n == 120
        assert row.vs_fp32 is Comparison.TIE and row.detail == verdict.detail
    at_the_estimate = judge_drop("auto", small, small.drop_pp)  # inclusive: the number shown is the number judged
    assert at_the_estimate.passed is True and at_the_estimate.clear is False
    ungated = judge_drop("auto", small, None)
    assert ungated.passed is None and ungated.clear is None and "limit" not in ungated.detail


# ---------------------------------------------------------------- rendering


def _run(bit_exact: bool) -> ValidationRun:
    """A real validate report with its methods, pick and gate set to known values: mse scores higher, auto is
    picked (bit-exact or not) and passes its 1 pp gate inside the interval."""
    real = ValidationRun.from_document(json.loads(REPORT.read_text()))
    validation = real.report.validation
    template = validation.methods[0]
    auto = dataclasses.replace(
        template, method=Estimator.AUTO, top1=0.875, top1_ci=(0.827, 0.911), drop_pp=0.0, drop_ci_pp=(-1.5, 1.5),
        vs_fp32=Comparison.TIE, agreement=1.0, output_sqnr_db=None if bit_exact else 31.2, bit_exact=bit_exact,
        output_mae=0.0, selection=dataclasses.replace(template.selection, n=120, agreement=1.0, rank=1,
                                                      output_sqnr_db=None if bit_exact else 31.2,
                                                      bit_exact=bit_exact))
    mse = dataclasses.replace(
        template, method=Estimator.MSE, top1=0.8833, top1_ci=(0.836, 0.918), drop_pp=-0.8333, drop_ci_pp=(-2.8, 0.96),
        vs_fp32=Comparison.TIE, agreement=0.9917, output_sqnr_db=29.5, bit_exact=False,
        selection=dataclasses.replace(template.selection, n=120, agreement=0.99, rank=2, output_sqnr_db=29.5,
                                      bit_exact=False))
    gate = judge_drop("auto", _drop(105, 105), 1.0).to_result()
    edited = dataclasses.replace(
        validation, baseline=dataclasses.replace(validation.baseline, top1=0.875, top1_ci=(0.827, 0.911), n=240),
        methods=(mse, auto), best_method=Estimator.AUTO, max_drop_pp=1.0, gate=gate,
        selection=dataclasses.replace(validation.selection, n=120, ranking=((Estimator.AUTO,), (Estimator.MSE,)),
                                      tied_with_best=()))
    return dataclasses.replace(real, report=dataclasses.replace(real.report, validation=edited),
                               gates=(max_drop_gate(gate),), passed=True)


def test_bit_exact_and_ties_are_shown_in_the_table_the_html_and_the_json(tmp_path: Path) -> None:
    run = _run(bit_exact=True)
    rows = {r[0]: r for r in method_rows(run.report.validation)}
    assert rows["INT8 auto *"][5] == "∞ (bit-exact)" and rows["INT8 auto *"][3] == "tie"
    assert rows["INT8 mse"][1] == "88.33% [83.6, 91.8]" and rows["INT8 mse"][2] == "-0.83 [-2.80, +0.96]"
    json_path, html_path = write_report(run, tmp_path)
    saved = json.loads(json_path.read_text())["validation"]["methods"][1]
    assert saved["output_sqnr_db"] is None and saved["bit_exact"] is True
    page = html_path.read_text()
    accuracy = page.split('<section id="validation">', 1)[1]
    assert "∞ (bit-exact)" in accuracy and '<span class="muted">tie</span>' in accuracy
    assert "87.50%<br><span class=\"muted\">[82.7, 91.1]</span>" in accuracy
    summary = page.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "output SQNR ∞ (bit-exact)" in summary  # the 'Picked by' line
    assert "<dt>Max-drop gate</dt>" in summary and "held-out half, 120 samples" in summary
    assert "not statistically clear" in summary and '<span class="warn">pass' in summary
    assert "∞ (bit-exact)" not in render_html(_run(bit_exact=False)).split('<section id="validation">', 1)[1]
    assert ValidationRun.from_document(json.loads(json_path.read_text())) == run  # and reads back as it was


def test_the_summary_invents_no_best_method() -> None:
    """A best method that is none of the measured rows (a report edited by hand) gets no row of another."""
    run = _run(bit_exact=False)
    run = dataclasses.replace(run, report=dataclasses.replace(run.report, validation=dataclasses.replace(
        run.report.validation, best_method=Estimator.KL)))
    summary = render_html(run).split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "<dt>Best method</dt><dd><b>kl</b></dd>" in summary and "Picked by" not in summary
    assert "INT8 mse" not in summary and "INT8 auto" not in summary.split("Max-drop gate")[0]


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verdicts-eval") / "set"
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise", "--n", "60",
                     "--preprocess", "mean=127.5,std=127.5", "-o", str(folder)]) == 0
    return folder


def _validate(model: Path, eval_set: Path, out: Path, max_drop: float) -> tuple[int, ValidationRun]:
    code = cli.main(["validate", str(model), "--calib", "digits:train", "--eval", str(eval_set),
                     "--preprocess", "mean=127.5,std=127.5", "--methods", "minmax,kl,auto",
                     "--max-drop", repr(max_drop), "-o", str(out)])
    return code, ValidationRun.from_document(json.loads((out / "report.json").read_text()))


def test_validate_picks_by_fidelity_on_one_half_and_gates_on_the_other(
        tiny_zoo: dict[str, Path], eval_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.harness.labelled import load_labelled

    code, run = _validate(tiny_zoo["cnn"], eval_set, tmp_path / "strict", -100.0)
    assert code == 1
    err = capsys.readouterr().err
    validation = run.report.validation
    gate = validation.gate

    # the split: recorded, reproducible from the set, stratified, and what the gate was measured on
    _, labels, conditions, _ = load_labelled(str(eval_set))
    split = split_halves(labels, conditions, 0)
    assert validation.split == split.to_record(conditions)
    assert validation.selection.n == len(split.selection) and gate.n == len(split.gate)
    assert len(split.selection) + len(split.gate) == validation.baseline.n == 60

    # the pick: the first of the fidelity ranking of the recorded selection-half measurements
    records = [Fidelity.from_score(m.method.value, m.selection) for m in validation.methods]
    groups = rank_by_fidelity(records)
    assert [[m.value for m in group] for group in validation.selection.ranking] == [[r.method for r in g]
                                                                                   for g in groups]
    assert validation.best_method == groups[0][0].method == run.report.layers.method
    assert [m.value for m in validation.selection.tied_with_best] == [r.method for r in groups[0][1:]]
    for m in validation.methods:
        assert m.selection.n == len(split.selection)
        if m.bit_exact:  # encoded explicitly: JSON has no Infinity
            assert m.output_sqnr_db is None and m.agreement == 1.0
        lo, hi = m.top1_ci
        assert lo <= m.top1 <= hi
        lo, hi = m.drop_ci_pp
        assert lo <= m.drop_pp <= hi and m.vs_fp32 == comparison(lo, hi)

    # the gate: held out, paired interval, a clear failure at an impossible limit
    assert gate.method == validation.best_method
    assert gate.drop_pp == pytest.approx(100 * (gate.fp32_top1 - gate.int8_top1), abs=1e-4)
    assert gate.drop_ci_pp[0] <= gate.drop_pp <= gate.drop_ci_pp[1]
    assert (gate.passed, gate.clear) == (False, True)
    assert run.gates[0].name == "max_drop" and run.gates[0].detail == gate.detail
    assert "gate max_drop failed" in err and "held-out samples" in err and "clearly over the limit" in err

    # the limit at the measured held-out drop passes (inclusive), and says whether that is clear
    code, at = _validate(tiny_zoo["cnn"], eval_set, tmp_path / "at", gate.drop_pp)
    out = capsys.readouterr().out
    assert code == 0 and at.passed is True and at.report.gate.drop_pp == gate.drop_pp
    clear = at.report.gate.clear
    assert clear is (at.report.gate.drop_ci_pp[1] <= gate.drop_pp)
    assert ("clearly within the limit" if clear else "not statistically clear") in out
    assert "top-1 [95% CI]" in out and f"picked: {validation.best_method}" in out
    page = (tmp_path / "at" / "report.html").read_text()
    assert "Selection and gate" in page and "held-out half" in page


@pytest.mark.parametrize("seed", ["-1", "x", "1.5"])
def test_a_bad_split_seed_is_a_usage_error(seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["validate", "m.keras", "--calib", "digits:train", "--eval", "digits:test", "--split-seed", seed,
                     "-o", str(tmp_path / "v")])
    assert code == 2 and "--split-seed" in capsys.readouterr().err and not (tmp_path / "v").exists()
