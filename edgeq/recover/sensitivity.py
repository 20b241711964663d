"""Which tensors cost the accuracy: per activation and weight tensor, the end-to-end output fidelity when only
that tensor is quantized, and when every tensor but it is (QuantAnalyzer-style), on the simulated model.

Both are measured with :class:`edgeq.recover.simulate.Simulator`, so one analysis is ``2 × (A + W)`` passes
over the samples through one loaded probe, never a reconversion. A tensor whose int8 output shares its input's
scale (max pooling, reshapes) is not a separate choice and is listed with the tensor it follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from edgeq.artifacts import SensitivityReport, TensorSensitivity
from edgeq.errors import UsageError
from edgeq.progress import task
from edgeq.recover.simulate import Config, Simulator, fidelity
from edgeq.tflite.model import TensorKey

Samples = Sequence[Sequence[np.ndarray]]


def analysable(sim: Simulator) -> list[int]:
    """Indices of the activations that are a choice of their own: not following another's scale, not fixed."""
    return [i for i, a in enumerate(sim.activations) if a.key not in sim.same_scale and a.key not in sim.fixed]


def analyse(sim: Simulator, ranges: Mapping[TensorKey, tuple[float, float]], samples: Samples, *,
            reference: list[np.ndarray] | None = None, described_as: str = "",
            progress: Callable[[int, int], None] | None = None) -> SensitivityReport:
    """Rank every activation (with its ``ranges``) and weight tensor of ``sim`` by end-to-end sensitivity.

    Activation rows run on two probes with constant weights (float for "only it", int8 for "all but it"), which
    XNNPACK runs several times faster than ``sim``'s switchable weights; weight rows run on ``sim``."""
    options = {"per_tensor": sim.per_tensor, "per_tensor_dense": sim.per_tensor_dense}
    with_float = Simulator(sim.float_model, weights="float", **options)
    with_int8 = Simulator(sim.float_model, weights="quantized", **options)
    reference = reference if reference is not None else with_float.run(with_float.float_config(), samples)

    def score(probe: Simulator, config: Config) -> float:
        return fidelity(reference, probe.run(config, samples))

    everything = sim.params(ranges)
    nothing = sim.float_config()
    all_db = score(with_int8, everything)
    indices = analysable(sim)
    total = len(indices) + len(sim.weights)
    rows: list[TensorSensitivity] = []
    with task("analysing tensors", total, callback=progress) as counted:
        for i in indices:
            a = sim.activations[i]
            only = nothing.with_row(i, everything.activations[i])
            but = everything.with_row(i, nothing.activations[i])
            # the tensors that take this one's scale are switched with it
            for j, other in enumerate(sim.activations):
                if sim.same_scale.get(other.key) == a.key:
                    only = only.with_row(j, everything.activations[j])
                    but = but.with_row(j, nothing.activations[j])
            but_db = score(with_int8, but)
            rows.append(TensorSensitivity(name=a.name, tensor_kind="activation", op=a.producer,
                                          only_db=score(with_float, only), all_but_db=but_db,
                                          recovers_db=but_db - all_db))
            counted.advance()
        for k, w in enumerate(sim.weights):
            try:  # the weight swapped in a fixed-weights probe (XNNPACK), else switched in sim
                only_db = score(with_float.with_weight(w.key, quantized=True), nothing)
                but_db = score(with_int8.with_weight(w.key, quantized=False), everything)
            except UsageError:
                only_db = score(sim, nothing.with_weight(k, 1.0))
                but_db = score(sim, everything.with_weight(k, 0.0))
            rows.append(TensorSensitivity(name=w.name, tensor_kind="weight", op=w.producer, only_db=only_db,
                                          all_but_db=but_db, recovers_db=but_db - all_db))
            counted.advance()
    ranked = sorted(rows, key=lambda r: (r.only_db, -r.recovers_db, r.name))
    names = {a.key: a.name for a in sim.activations}
    return SensitivityReport(
        samples=len(samples), all_quantized_db=all_db,
        activations_only_db=score(with_float, everything),
        weights_only_db=score(with_int8, nothing),
        tensors=tuple(replace(r, rank=n) for n, r in enumerate(ranked, 1)),
        shares_scale={names[k]: names[v] for k, v in sorted(sim.same_scale.items())}, ranges=described_as)
