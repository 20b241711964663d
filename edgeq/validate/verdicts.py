"""Verdicts that survive statistics: which method is best, and does it pass the max-drop gate.

Three rules, each a pure function so it can be tested without converting a model:

1. **Split** (:func:`split_halves`). The evaluation set is cut into a *selection* half and a *gate* half,
   stratified by (condition, label) (by condition alone for a set without labels): within each stratum a
   seeded permutation sends half of the samples to each side; strata of odd size give their extra sample
   alternately to selection and gate, so the halves differ by at most one sample overall and per stratum. A
   stratum's permutation is seeded by (seed, condition, label) alone, so adding or removing samples of other
   strata leaves its assignment as it was.
2. **Selection** (:func:`rank_by_fidelity`). Methods are ranked on the selection half by fidelity to FP32,
   never by top-1, on one output (the *ranked output*: the first declared, else the classifier's or the
   first): first the primary metric of its task (:data:`PRIMARY_METRICS`: agreement with FP32's predicted
   class for classification, recall of FP32's detections, mask IoU, normalized landmark error; a generic
   output has none), then output SQNR (a bit-exact method has an infinite SQNR and ranks first), then the
   mean absolute output error. Labels are not used. Exact ties are resolved in favour of ``auto``, then by
   the order the methods were given.
3. **Gate** (:func:`judge_drop`). The chosen method's top-1 drop is measured on the held-out gate half,
   with FP32 and INT8 on the same samples, and gets a paired 95 % interval (Newcombe). The gate fails when
   the drop's point estimate exceeds ``max_drop``; the verdict says whether that pass or failure is
   *clear* (the whole interval on the same side of the limit) or *inside the interval* (the limit lies
   within it: the samples cannot tell). A pass inside the interval is still a pass, never a silent one.
   Fidelity limits (:func:`judge_limit`: minimum SQNR, agreement, detection recall, mask IoU, maximum
   landmark error) are judged on the same held-out half, for the chosen method.

Picking the most accurate method on the very samples the gate then measures selects the method that got
lucky on them; the held-out half is what makes the gate's drop an honest estimate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.artifacts import Estimator
from edgeq.errors import InputError
from edgeq.results.gates import Gate
from edgeq.results.validation import Comparison, HeldOutGate, SelectionScore, SplitHalf, SplitRecord
from edgeq.validate.diagnostics import output_sqnr_db
from edgeq.validate.stats import CONFIDENCE, PairedCounts, paired_difference_interval, wilson_interval

SPLIT_SEED = 0
PREFERRED_ON_TIE = "auto"
FIDELITY_ORDER = ("agreement with FP32 (higher first)", "output SQNR (higher first; bit-exact is infinite)",
                  "mean absolute output error (lower first)")
#: task -> (the metric that ranks methods first, whether higher is better); generic has none
PRIMARY_METRICS: dict[str, tuple[str, bool]] = {
    "classification": ("agreement", True),
    "detection": ("recall", True),
    "segmentation": ("mean_iou", True),
    "landmarks": ("mean_error_norm", False),
}


def fidelity_order(task: str, output: str | None = None) -> tuple[str, ...]:
    """The ranking keys in words, for the report: FIDELITY_ORDER for a model's only (classification) output;
    an output among several is named."""
    if task == "classification" and output is None:
        return FIDELITY_ORDER
    of = f" of {output!r}" if output is not None else ""
    keys = [f"output SQNR{of} (higher first; bit-exact is infinite)", f"mean absolute error{of} (lower first)"]
    if task in PRIMARY_METRICS:
        metric, higher = PRIMARY_METRICS[task]
        words = "agreement with FP32" if metric == "agreement" else f"{task} {metric}"
        keys.insert(0, f"{words}{of} ({'higher' if higher else 'lower'} first)")
    return tuple(keys)


# ---------------------------------------------------------------- the split


@dataclass(frozen=True)
class Split:
    selection: np.ndarray  # sorted sample indices
    gate: np.ndarray
    seed: int

    def to_record(self, conditions: Sequence[str] | None, labelled: bool = True) -> SplitRecord:
        def side(indices: np.ndarray) -> SplitHalf:
            if not conditions:
                return SplitHalf(n=len(indices))
            names = [conditions[i] for i in indices]
            return SplitHalf(n=len(indices), per_condition={c: names.count(c) for c in dict.fromkeys(conditions)})

        by = (("condition",) if conditions else ()) + (("label",) if labelled else ())
        return SplitRecord(seed=self.seed, stratified_by=by, selection=side(self.selection), gate=side(self.gate))


def _stratum_seed(seed: int, condition: str, label: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{condition}\0{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_halves(labels: Sequence[Any] | np.ndarray | None, conditions: Sequence[str] | None = None,
                 seed: int = SPLIT_SEED, n: int | None = None) -> Split:
    """A deterministic, stratified, disjoint split of the sample indices into selection and gate halves.

    Without labels (None) the strata are the conditions alone; ``n`` gives the sample count when neither
    labels nor conditions do."""
    if labels is None:
        n = len(conditions) if conditions is not None else n
        if n is None:
            raise ValueError("split_halves needs labels, conditions or n")
        labels = np.zeros(n, dtype=np.int64)
    labels = np.asarray(labels)
    n = len(labels)
    if conditions is not None and len(conditions) != n:
        raise InputError(f"{len(conditions)} conditions for {n} labels")
    if n < 2:
        raise InputError(f"the evaluation set has {n} sample(s); picking a method and gating it on held-out "
                         "samples needs at least 2")
    strata: dict[tuple[str, str], list[int]] = {}
    for i in range(n):
        key = (str(conditions[i]) if conditions is not None else "", str(labels[i].item()))
        strata.setdefault(key, []).append(i)
    selection: list[int] = []
    gate: list[int] = []
    odd = 0
    for key in sorted(strata):
        members = np.asarray(strata[key])
        order = np.random.default_rng(_stratum_seed(seed, *key)).permutation(members)
        half = len(order) // 2
        if len(order) % 2:
            half += odd % 2 == 0  # the extra sample: selection, gate, selection, ...
            odd += 1
        selection += order[:half].tolist()
        gate += order[half:].tolist()
    if not gate:  # two samples in one stratum give one each; this only guards the invariant
        raise InputError("the gate half of the evaluation set is empty")
    return Split(selection=np.asarray(sorted(selection), dtype=np.int64),
                 gate=np.asarray(sorted(gate), dtype=np.int64), seed=seed)


# ---------------------------------------------------------------- fidelity and ranking


@dataclass(frozen=True)
class Fidelity:
    """How faithfully one INT8 model reproduces FP32 on some samples of the ranked output (no labels involved).

    The first ranking key is ``agreement`` for a classification output, else the task's ``metric`` and its
    ``value`` (:data:`PRIMARY_METRICS`); a generic output has neither."""

    method: str
    n: int
    agreement: float | None  # classification: share of samples with FP32's predicted class
    output_sqnr_db: float  # +inf when the outputs are bit-exact
    output_mae: float  # mean |FP32 - INT8| over every output element
    metric: str | None = None  # another task's first ranking key (PRIMARY_METRICS)
    value: float | None = None  # its value; None: nothing to measure it on (ranks last)

    @property
    def bit_exact(self) -> bool:
        return self.output_sqnr_db == math.inf

    def _primary(self) -> float:
        """The first sort key (lower sorts first): the metric, negated when higher is better; unmeasured last."""
        if self.metric is None and self.agreement is None:
            return 0.0  # a generic output: ranked by SQNR, then error
        value = self.agreement if self.metric is None else self.value
        higher = self.metric is None or next((h for m, h in PRIMARY_METRICS.values() if m == self.metric), True)
        if value is None or math.isnan(value):
            return math.inf
        return -value if higher else value

    def sort_key(self) -> tuple[float, float, float]:
        sqnr = self.output_sqnr_db if not math.isnan(self.output_sqnr_db) else -math.inf
        mae = self.output_mae if not math.isnan(self.output_mae) else math.inf
        return (self._primary(), -sqnr, mae)

    def to_score(self, rank: int) -> SelectionScore:
        """As the report records it: an infinite SQNR is None with ``bit_exact`` (JSON has no Infinity)."""
        return SelectionScore(n=self.n, agreement=self.agreement, metric=self.metric,
                              value=None if self.value is None else finite_or_none(self.value),
                              output_sqnr_db=finite_or_none(self.output_sqnr_db), bit_exact=self.bit_exact,
                              output_mae=finite_or_none(self.output_mae), rank=rank)

    @classmethod
    def from_score(cls, method: str, score: SelectionScore) -> Fidelity:
        sqnr = math.inf if score.bit_exact else math.nan if score.output_sqnr_db is None else score.output_sqnr_db
        return cls(method=method, n=score.n, agreement=score.agreement, output_sqnr_db=sqnr,
                   output_mae=math.nan if score.output_mae is None else score.output_mae, metric=score.metric,
                   value=score.value)


def measure_fidelity(method: str, reference: np.ndarray, scores: np.ndarray) -> Fidelity:
    """Agreement, output SQNR and mean absolute error of ``scores`` against FP32's ``reference`` (N, classes)."""
    reference = np.asarray(reference, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if reference.shape != scores.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(f"need two (N, classes) score arrays of one shape, got {reference.shape} and {scores.shape}")
    return Fidelity(method=method, n=len(reference),
                    agreement=float(np.mean(reference.argmax(-1) == scores.argmax(-1))),
                    output_sqnr_db=output_sqnr_db(reference, scores),
                    output_mae=float(np.mean(np.abs(reference - scores))))


def rank_by_fidelity(records: Sequence[Fidelity]) -> list[list[Fidelity]]:
    """Groups of records from most to least faithful; records in one group tie exactly on every key.

    Within a group, ``auto`` comes first, then the given order; the first record of the first group is
    the pick.
    """
    order = {id(r): i for i, r in enumerate(records)}
    ranked = sorted(records, key=lambda r: (r.sort_key(), r.method != PREFERRED_ON_TIE, order[id(r)]))
    groups: list[list[Fidelity]] = []
    for record in ranked:
        if groups and groups[-1][0].sort_key() == record.sort_key():
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


# ---------------------------------------------------------------- top-1 with intervals, and the gate


def comparison(lo: float, hi: float, tolerance: float = 1e-12) -> Comparison:
    """How INT8 compares with FP32 from the interval of the drop (FP32 - INT8): a difference whose interval
    contains 0 is a tie."""
    if lo > tolerance:
        return Comparison.WORSE
    if hi < -tolerance:
        return Comparison.BETTER
    return Comparison.TIE


@dataclass(frozen=True)
class DropMeasurement:
    """FP32 vs INT8 top-1 on the same samples, with a paired interval for the drop (in points)."""

    n: int
    fp32_top1: float
    int8_top1: float
    drop_pp: float  # rounded to 4 decimals: the number in the report is the number the gate compares
    drop_ci_pp: tuple[float, float]
    fp32_ci: tuple[float, float]
    int8_ci: tuple[float, float]

    @property
    def vs_fp32(self) -> Comparison:
        return comparison(*self.drop_ci_pp)


def measure_drop(fp32_correct: np.ndarray, int8_correct: np.ndarray,
                 confidence: float = CONFIDENCE) -> DropMeasurement:
    counts = PairedCounts.from_outcomes(fp32_correct, int8_correct)
    if counts.n == 0:
        raise ValueError("no samples to measure a drop on")
    lo, hi = paired_difference_interval(counts, confidence)
    return DropMeasurement(n=counts.n, fp32_top1=counts.first / counts.n, int8_top1=counts.second / counts.n,
                           drop_pp=round(100 * (counts.first_only - counts.second_only) / counts.n, 4),
                           drop_ci_pp=(round(100 * lo, 4), round(100 * hi, 4)),
                           fp32_ci=wilson_interval(counts.first, counts.n, confidence),
                           int8_ci=wilson_interval(counts.second, counts.n, confidence))


@dataclass(frozen=True)
class GateVerdict:
    method: str
    measurement: DropMeasurement
    max_drop_pp: float | None
    passed: bool | None  # None: no limit set
    clear: bool | None  # the whole interval on the verdict's side of the limit

    @property
    def detail(self) -> str:
        m = self.measurement
        lo, hi = m.drop_ci_pp
        text = (f"{self.method} drops {m.drop_pp:+.2f} pp on {m.n} held-out samples "
                f"(95% CI {lo:+.2f} to {hi:+.2f} pp)")
        if self.max_drop_pp is None:
            return text
        text += f", limit {self.max_drop_pp:g} pp: "
        if self.passed:
            return text + ("pass, clearly within the limit" if self.clear else
                           "pass, but the limit lies inside the interval (not statistically clear)")
        return text + ("fail, clearly over the limit" if self.clear else
                       "fail, the limit lies inside the interval (not statistically clear)")

    def to_result(self) -> HeldOutGate:
        m = self.measurement
        return HeldOutGate(method=Estimator(self.method), n=m.n, fp32_top1=m.fp32_top1, fp32_top1_ci=m.fp32_ci,
                           int8_top1=m.int8_top1, int8_top1_ci=m.int8_ci, drop_pp=m.drop_pp, drop_ci_pp=m.drop_ci_pp,
                           vs_fp32=m.vs_fp32, max_drop_pp=self.max_drop_pp, passed=self.passed, clear=self.clear,
                           detail=self.detail)


def judge_drop(method: str, measurement: DropMeasurement, max_drop_pp: float | None) -> GateVerdict:
    """Fail when the point estimate exceeds the limit; clear when the interval agrees."""
    if max_drop_pp is None:
        return GateVerdict(method, measurement, None, None, None)
    lo, hi = measurement.drop_ci_pp
    passed = measurement.drop_pp <= max_drop_pp
    clear = hi <= max_drop_pp if passed else lo > max_drop_pp
    return GateVerdict(method, measurement, max_drop_pp, passed, clear)


def max_drop_gate(gate: HeldOutGate) -> Gate:
    """The report's ``max_drop`` gate row from a judged held-out measurement (``validation.gate``)."""
    if gate.passed is None:
        raise ValueError("the held-out measurement was not judged: no max-drop limit was set")
    return Gate(name="max_drop", passed=gate.passed, detail=gate.detail, clear=gate.clear, n=gate.n,
                drop_pp=gate.drop_pp, drop_ci_pp=gate.drop_ci_pp)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- fidelity limits


@dataclass(frozen=True)
class LimitVerdict:
    """One fidelity limit judged on the held-out half: the measured value against the limit."""

    name: str  # the gate's name: min_output_sqnr:OUTPUT, min_agreement:OUTPUT, ...
    what: str  # the measured figure in words: "SQNR of 'regressors'"
    method: str
    n: int
    value: float | None  # None: nothing to measure it on (fails)
    limit: float
    higher_is_better: bool
    unit: str = ""
    exact: bool = False  # an SQNR of identical outputs: +inf, passes any minimum

    @property
    def passed(self) -> bool:
        if self.exact:
            return self.higher_is_better
        if self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def detail(self) -> str:
        if self.exact:
            shown = "∞ (bit-exact)"
        elif self.value is None or math.isnan(self.value):
            shown = "not measurable"
        else:
            shown = f"{self.value:.4g}{self.unit}"
        bound = "at least" if self.higher_is_better else "at most"
        text = (f"{self.method}: {self.what} {shown} on {self.n} held-out samples, limit {bound} "
                f"{self.limit:g}{self.unit}: ")
        if self.value is None and not self.exact:
            return text + "fail, nothing to measure it on"
        return text + ("pass" if self.passed else "fail")

    def to_gate(self) -> Gate:
        value = None if self.value is None else finite_or_none(self.value)
        return Gate(name=self.name, passed=self.passed, detail=self.detail, n=self.n, value=value, limit=self.limit)


def judge_limit(name: str, what: str, method: str, n: int, value: float | None, limit: float, *,
                higher_is_better: bool, unit: str = "", exact: bool = False) -> LimitVerdict:
    """A minimum (``higher_is_better``) or maximum on a measured value; passes at the limit (inclusive)."""
    return LimitVerdict(name=name, what=what, method=method, n=n, value=value, limit=limit,
                        higher_is_better=higher_is_better, unit=unit, exact=exact)
