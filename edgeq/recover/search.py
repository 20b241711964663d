"""``--method search``: per-tensor ranges chosen by the end-to-end fidelity they give, judged on calibration
samples held out from the statistics.

1. The calibration set is split (seeded): statistics are collected on the *fit* part only; the *held-out*
   part only judges.
2. Starting from the outlier-ratio rule (``auto``), the most sensitive activation tensors (ranked on the
   simulated model, edgeq.recover.sensitivity) are visited in order; each tries every candidate estimator's
   range and keeps the one that gives the best simulated fidelity on the held-out samples.
3. The simulation proposes, the real INT8 model decides: the searched ranges and every single estimator are
   converted for real and measured on the held-out samples and on every calibration sample. Each departure
   from the outlier-ratio rule needs measured evidence (``_beats``): better by ``MARGIN_DB`` on the held-out
   samples and not worse on every calibration sample, where a clipping range pays for the samples that set
   the statistics (on the zoo CNN, percentile led minmax by 1.7 dB on the held-out quarter and lost 4.9 dB on
   the test split). auto ships unless a single estimator beats it, and that estimator unless the per-tensor
   choice beats it. The record says which won and every contender's figures (the held-out numbers, the guard
   against a search that only fits its own samples).
4. The winner's recipe is applied to statistics of the whole calibration set, as a single estimator is.

The result is a recipe: the base method plus one exact-name override per changed tensor, so the same ranges
can be rebuilt with ``edgeq convert --recipe``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeq.artifacts import Estimator, HeldOutScore, SearchRecord, TensorChoice
from edgeq.calib.collect import ActivationStats, collect, model_inputs
from edgeq.calib.data import CalibrationSet
from edgeq.calib.ranges import choose_ranges
from edgeq.errors import InputError, UsageError
from edgeq.harness.accuracy import predict_outputs
from edgeq.harness.backends import open_session, parse_backend
from edgeq.progress import task
from edgeq.quant_recipe import Override, QuantRecipe
from edgeq.recover.sensitivity import analysable
from edgeq.recover.simulate import Simulator, fidelity
from edgeq.tflite.model import TensorKey
from edgeq.tflite.runtime import CpuKernels, make_interpreter

MIN_SAMPLES = 8  # below this, a held-out quarter is too small to judge anything
HELD_OUT_FRACTION = 0.25
MAX_HELD_OUT = 128  # judging cost grows with it; beyond this the fit part gets the rest
SPLIT_SEED = 20261129
MAX_FIT_JUDGED = 256  # fit samples the final comparison also runs on (spread evenly)
MARGIN_DB = 0.25  # search must beat the best single estimator by this much on the held-out samples to ship
DEFAULT_TOP = 24  # tensors the search visits, most sensitive first

#: What each visited tensor may take: an estimator, and for percentile the percentile.
CANDIDATES: tuple[tuple[Estimator, float | None], ...] = (
    (Estimator.MINMAX, None), (Estimator.PERCENTILE, 99.9), (Estimator.PERCENTILE, 99.99),
    (Estimator.PERCENTILE, 99.999), (Estimator.MSE, None), (Estimator.KL, None))
#: The single estimators the searched ranges must beat on the held-out samples.
SINGLE = (Estimator.MINMAX, Estimator.PERCENTILE, Estimator.MSE, Estimator.KL, Estimator.AUTO)

Ranges = dict[TensorKey, tuple[float, float]]
RealQuantize = Callable[[bytes, Ranges, QuantRecipe], bytes]


@dataclass(frozen=True)
class SearchResult:
    recipe: QuantRecipe  # what to convert with (on ``stats``)
    stats: ActivationStats  # statistics of the whole calibration set
    record: SearchRecord


def split(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) sample indices, each sorted; a quarter (at least 2, at most ``MAX_HELD_OUT``) held out."""
    if n < MIN_SAMPLES:
        raise InputError(f"the search holds out a quarter of the calibration set to judge ranges on and needs at "
                         f"least {MIN_SAMPLES} samples; the set has {n}")
    order = np.random.default_rng(seed).permutation(n)
    held = min(MAX_HELD_OUT, max(2, round(n * HELD_OUT_FRACTION)))
    return np.sort(order[held:]), np.sort(order[:held])


def subset(data: CalibrationSet, indices: np.ndarray) -> CalibrationSet:
    return replace(data, arrays=tuple(a[indices] for a in data.arrays),
                   conditions=None if data.conditions is None else tuple(data.conditions[i] for i in indices))


def exact(name: str) -> str:
    """An fnmatch pattern matching exactly ``name`` (brackets, * and ? escaped)."""
    pattern = "".join(f"[{c}]" if c in "[]*?" else c for c in name)
    assert fnmatch.fnmatchcase(name, pattern)
    return pattern


def _ranges(stats: ActivationStats, recipe: QuantRecipe) -> Ranges:
    table = choose_ranges(stats, recipe)
    return {key: (r.min, r.max) for key, r in zip(sorted(stats.tensors), table.ranges, strict=True)}


def _real_outputs(model: bytes, samples: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The real INT8 model's outputs on ``samples`` (LiteRT's builtin kernels), each flattened."""
    x = np.concatenate([s[0] for s in samples])
    return [o.reshape(-1) for o in predict_outputs(open_session(model, parse_backend("cpu")), x).values()]


def _pooled(reference: Sequence[list[np.ndarray]], outputs: Sequence[list[np.ndarray]]) -> float:
    """fidelity over several sample groups at once (each group: per output, flattened values)."""
    joined = [np.concatenate(parts) for parts in zip(*(r for r in reference), strict=True)]
    got = [np.concatenate(parts) for parts in zip(*(o for o in outputs), strict=True)]
    return fidelity(joined, got)


def _beats(challenger: HeldOutScore, holder: HeldOutScore) -> bool:
    """Measured evidence: better by ``MARGIN_DB`` on the held-out samples (within it is noise on a set this
    small) and not worse on every calibration sample (a range that clips pays there for the samples that set
    the statistics, as it will on data that comes later)."""
    whole = (challenger.calibration_db or -np.inf) >= (holder.calibration_db or -np.inf)
    return challenger.real_db >= holder.real_db + MARGIN_DB and whole


def _winner(scores: dict[str, HeldOutScore]) -> HeldOutScore:
    """The outlier-ratio rule (auto) ships unless a single estimator beats it, and that estimator unless the
    per-tensor choice beats it: each departure from the rule needs measured evidence."""
    winner = scores[Estimator.AUTO.value]
    challengers = [s for m, s in scores.items() if m not in ("search", winner.method) and _beats(s, winner)]
    if challengers:
        winner = max(challengers, key=lambda s: s.calibration_db or -np.inf)
    return scores["search"] if _beats(scores["search"], winner) else winner


def search(float_model: bytes, data: CalibrationSet, recipe: QuantRecipe, real_quantize: RealQuantize, *,
           top: int = DEFAULT_TOP, seed: int = SPLIT_SEED,
           progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """Choose per-tensor ranges for ``float_model`` from ``data``; ``real_quantize(model, ranges, recipe)``
    converts for the final, real comparison (edgeq.converter.quantize, passed in to keep the layers one-way)."""
    if recipe.overrides:
        raise UsageError("the search chooses per-tensor estimators itself; drop the recipe's overrides or pick "
                         "another method")
    interpreter, _ = make_interpreter(float_model, CpuKernels.CPU)
    inputs = model_inputs(interpreter)
    if len(inputs) != 1:
        raise UsageError(f"the search measures single-input models; this one has {len(inputs)} inputs "
                         "(pick a single estimator, or a recipe with overrides)")
    fit_idx, held_idx = split(len(data), seed)
    stats = collect(float_model, subset(data, fit_idx), sample_indices=[int(i) for i in fit_idx])
    held = [batch for _, batch in subset(data, held_idx).samples(inputs)]
    options = {"per_tensor": recipe.per_tensor, "per_tensor_dense": recipe.per_tensor_dense}
    sim = Simulator(float_model, weights="quantized", **options)  # what a range is judged on: int8 weights
    alone = Simulator(float_model, weights="float", **options)  # what a tensor's own cost is measured on
    reference = alone.run(alone.float_config(), held)
    base = replace(recipe, method=Estimator.AUTO)
    candidates = {c: _ranges(stats, replace(base, method=c[0], percentile=c[1] or recipe.percentile))
                  for c in CANDIDATES}

    def simulated(ranges: Ranges) -> float:
        return fidelity(reference, sim.run(sim.params(ranges), held))

    current = _ranges(stats, base)
    everything, nothing = sim.params(current), sim.float_config()
    costs = [(fidelity(reference, alone.run(nothing.with_row(i, everything.activations[i]), held)), i)
             for i in analysable(sim)]
    order = [i for _, i in sorted(costs)][:top]
    score = simulated(current)
    choices = []
    with task("searching ranges", len(order), callback=progress) as counted:
        for i in order:
            key = sim.activations[i].key
            best, best_candidate = score, None
            for candidate, ranges in candidates.items():
                if ranges[key] == current[key]:
                    continue
                trial = simulated({**current, key: ranges[key]})
                if trial > best + 1e-9:
                    best, best_candidate = trial, candidate
            if best_candidate is not None:
                current = {**current, key: candidates[best_candidate][key]}
                choices.append(TensorChoice(tensor=sim.activations[i].name, estimator=best_candidate[0],
                                            percentile=best_candidate[1], gain_db=best - score))
                score = best
            counted.advance()
    searched = replace(base, overrides=tuple(Override(method=c.estimator, tensors=exact(c.tensor),
                                                      percentile=c.percentile) for c in choices))
    contenders = {"search": searched, **{m.value: replace(base, method=m) for m in SINGLE}}
    judged = np.linspace(0, len(fit_idx) - 1, min(MAX_FIT_JUDGED, len(fit_idx))).round().astype(int)
    fit = [batch for _, batch in subset(data, fit_idx[np.unique(judged)]).samples(inputs)]
    held_reference = [r.reshape(-1) for r in reference]
    fit_reference = [r.reshape(-1) for r in alone.run(alone.float_config(), fit)]
    scores = []
    for name, contender in contenders.items():
        ranges = _ranges(stats, contender)
        model = real_quantize(float_model, ranges, contender)
        on_held, on_fit = _real_outputs(model, held), _real_outputs(model, fit)
        scores.append(HeldOutScore(method=name, simulated_db=simulated(ranges),
                                   real_db=fidelity(held_reference, on_held),
                                   calibration_db=_pooled([held_reference, fit_reference], [on_held, on_fit])))
    winner = _winner({s.method: s for s in scores})
    record = SearchRecord(fit_samples=len(fit_idx), held_out_samples=len(held_idx), split_seed=seed,
                          visited=len(order), choices=tuple(choices), scores=tuple(scores), chosen=winner.method)
    # what ships is the winner's recipe on statistics of every calibration sample: chosen on the split, it then
    # loses nothing to a single estimator calibrated on the whole set (and is that model when one won)
    whole = collect(float_model, data)
    return SearchResult(recipe=contenders[winner.method], stats=whole, record=record)
