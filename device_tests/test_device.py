"""On-target checks: the model loads, agrees with the reference kernels, meets the latency and accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.artifacts import LatencyStats
from edgeq.harness.backends import availability, open_session, parse_backend
from edgeq.harness.budget import judge, summary_line
from edgeq.harness.latency import LatencyConfig, open_timed, random_inputs, run_interleaved


def _session(model_path: Path, backend_name: str, threads: int = 1):
    backend = parse_backend(backend_name)
    if backend.remote:
        pytest.skip(f"{backend.kind} runs through 'edgeq bench --backend {backend}', not in-process")
    status = availability(backend)
    if not status.available:
        pytest.skip(f"{backend} unavailable: {status.reason}")
    return open_session(model_path.read_bytes(), backend, threads)


def test_model_loads_and_runs(model_path: Path, backend_name: str) -> None:
    session = _session(model_path, backend_name)
    session.set_inputs(random_inputs(session, 0))
    session.invoke()
    outputs = session.get_outputs()
    assert len(outputs) == len(session.outputs)
    assert all(np.all(np.isfinite(o.astype(np.float64))) for o in outputs)


def test_outputs_match_reference_kernels(model_path: Path, backend_name: str) -> None:
    """Optimized kernels and delegates may round differently, never by more than a couple of steps."""
    session = _session(model_path, backend_name)
    reference = open_session(model_path.read_bytes(), parse_backend("ref"))
    for seed in range(3):
        inputs = random_inputs(session, seed)
        session.set_inputs(inputs)
        reference.set_inputs(inputs)
        session.invoke()
        reference.invoke()
        for got, want, info in zip(session.get_outputs(), reference.get_outputs(), session.outputs, strict=True):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            tolerance = 2 if np.issubdtype(info.dtype, np.integer) else 1e-3 * (1 + np.abs(want).max())
            assert diff.max() <= tolerance, f"{backend_name}: output {info.name} differs by {diff.max()}"


def test_latency_budget(model_path: Path, backend_name: str, budget: Any,
                        recorded_latency: list[dict[str, Any]] | None, record_property: Any) -> None:
    """The budget's percentile over enough samples; measured here, or read from recorded bench results."""
    latency_budget = budget.latency_for(backend_name)
    if recorded_latency is not None:
        stats = _recorded_stats(recorded_latency, model_path, backend_name, budget.threads)
    else:
        measurement = open_timed(backend_name, lambda: _session(model_path, backend_name, budget.threads))
        run_interleaved([measurement], LatencyConfig(runs=budget.runs, min_seconds=0.2, warmup_seconds=0.1))
        stats = measurement.stats()
        assert stats.n >= budget.runs
    for name in ("n", "p50_ms", "p90_ms", "p99_ms", "max_ms"):
        record_property(f"latency_{name}", getattr(stats, name))
    record_property("latency_source", "recorded" if recorded_latency is not None else "measured")
    if latency_budget is None:
        pytest.skip(f"the budget sets no latency limit for {backend_name} (measured: {summary_line(stats)})")
    verdict = judge(stats, latency_budget)
    assert verdict.passed, f"{backend_name}: {verdict.reason}"


def _recorded_stats(recorded: list[dict[str, Any]], model_path: Path, backend_name: str, threads: int) -> LatencyStats:
    """The recorded result for this model, backend and thread count; a result for another model is refused."""
    from edgeq.artifacts import BenchResult
    from edgeq.tflite.model import sha256

    digest = sha256(model_path.read_bytes())
    results = [BenchResult.from_dict(r) for r in recorded]
    matching = [r for r in results if r.backend == backend_name and r.threads == threads]
    if not matching:
        pytest.skip(f"no recorded {backend_name} result with {threads} thread(s)")
    # a bench document may hold several models: take this model's result, refuse when it has none
    result = next((r for r in matching if r.model_sha256 == digest), matching[0])
    assert result.model_sha256 == digest, (f"the recorded {backend_name} result is for model "
                                           f"{result.model_sha256[:12]}, not {model_path.name} ({digest[:12]})")
    return result.latency


def test_full_delegation_budget(model_path: Path, backend_name: str, budget: Any) -> None:
    session = _session(model_path, backend_name)
    if not budget.require_full_delegation:
        pytest.skip("the budget does not require full delegation")
    if session.delegation is None:
        pytest.skip(f"{backend_name} has no delegate")
    left = set(session.delegation.undelegated_ops) - set(budget.allowed_undelegated_ops)
    allowed = ", ".join(budget.allowed_undelegated_ops) or "-"
    assert session.delegation.full or not left, (
        f"{session.delegation.nodes_delegated}/{session.delegation.nodes_total} nodes delegated; left: "
        f"{', '.join(session.delegation.undelegated_ops)} (allowed: {allowed})")


def _eval_inputs(model_path: Path, eval_set: str, request: pytest.FixtureRequest,
                 record_property: Any) -> tuple[Any, Any]:
    """The evaluation set and its model inputs under the resolved preprocessing (uint8 images), or as given."""
    import warnings

    from edgeq.calib.data import parse_preprocessing
    from edgeq.errors import InputError
    from edgeq.harness.evaldata import load_eval_set
    from edgeq.preprocess import PreprocessingWarning, own_preprocessing, resolve
    from edgeq.tflite import model as tfl

    graph = tfl.parse(model_path.read_bytes()).subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    try:
        data = load_eval_set(eval_set, input_shape=tuple(int(d) for d in tensor.shape[1:]),
                             input_name=tfl.tensor_name(tensor))
        # --preprocess, else the model's own metadata (or sidecar), else the set's; none known for images fails
        resolved = resolve(parse_preprocessing(request.config.getoption("--preprocess")), data_set=data.preprocessing,
                           model=own_preprocessing(model_path.read_bytes(), model_path), images=data.images is not None,
                           model_name=model_path.name, data_name=eval_set)
    except InputError as exc:
        pytest.fail(str(exc))
    record_property("preprocessing", resolved.line())
    for message in resolved.warnings:
        warnings.warn(message, PreprocessingWarning, stacklevel=1)
    return data, data.model_inputs(resolved.spec)


def test_accuracy_budget(model_path: Path, backend_name: str, budget: Any, eval_set: str | None,
                         request: pytest.FixtureRequest, record_property: Any) -> None:
    if not eval_set:
        pytest.skip("no --eval-set given")
    from edgeq.harness.accuracy import predict, top1

    data, x = _eval_inputs(model_path, eval_set, request, record_property)
    if not data.labelled:
        if budget.min_top1 is not None:
            pytest.fail(f"min_top1 needs labels and {eval_set} has none; judge fidelity instead (--reference, "
                        "min_output_sqnr_db)")
        pytest.skip(f"{eval_set} has no labels: top-1 is not measured (fidelity is, with --reference)")
    accuracy = top1(predict(_session(model_path, backend_name), x), data.labels)
    record_property("top1", accuracy)
    record_property("samples", len(data))
    if budget.min_top1 is None:  # measured, not judged: a skip says so (as the latency test does)
        pytest.skip(f"the budget sets no min_top1 (measured: top-1 {accuracy:.2%} on {len(data)} samples)")
    assert accuracy >= budget.min_top1, f"top-1 {accuracy:.2%} < budget {budget.min_top1:.2%} on {eval_set}"


def test_fidelity_budget(model_path: Path, backend_name: str, budget: Any, eval_set: str | None,
                         reference_path: Path | None, request: pytest.FixtureRequest, record_property: Any) -> None:
    """Every output's SQNR against the FP32 reference on --eval-set (labelled or not), on this backend."""
    if not budget.min_output_sqnr_db:
        pytest.skip("no min_output_sqnr_db in the budget")
    if not eval_set or reference_path is None:
        pytest.fail("min_output_sqnr_db needs --eval-set and --reference (the FP32 model)")
    from edgeq.harness.accuracy import pair_outputs, predict_outputs
    from edgeq.validate.tasks import output_fidelity

    _, x = _eval_inputs(model_path, eval_set, request, record_property)
    outputs = predict_outputs(_session(model_path, backend_name), x)
    reference = predict_outputs(open_session(reference_path.read_bytes(), parse_backend("cpu")), x)
    unknown = set(budget.min_output_sqnr_db) - set(outputs) - {"*"}
    assert not unknown, f"min_output_sqnr_db names no output of the model: {sorted(unknown)} (outputs: {list(outputs)})"
    failures = []
    from edgeq.errors import InputError

    try:
        pairs = pair_outputs(outputs, reference)  # by name, else by position; other counts or shapes refused
    except InputError as exc:
        pytest.fail(f"--reference {reference_path.name}: {exc}")
    for name, y, ref in pairs:
        limit = budget.min_output_sqnr_db.get(name, budget.min_output_sqnr_db.get("*"))
        if limit is None:
            continue
        fidelity = output_fidelity(ref, y)
        record_property(f"sqnr_db[{name}]", fidelity.sqnr_db)
        if not fidelity.exact and not (fidelity.sqnr_db is not None and fidelity.sqnr_db >= limit):
            failures.append(f"{name}: {fidelity.sqnr_db:.1f} dB < {limit:g} dB on {fidelity.n} samples")
    assert not failures, "; ".join(failures)
