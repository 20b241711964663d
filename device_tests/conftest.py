"""Options and fixtures for the on-device suite: run it on the target (or in CI) against a real model.

    pytest device_tests --model m_int8.tflite --backend xnnpack,cpu --eval-set calib/ --budget budget.yaml

Without --model it tests the CNN shipped with the suite (data/cnn_digits_int8.tflite) on the shipped digits
test set (data/digits_test.npz): a self-test of the runtime on a board with nothing but
``pip install 'edgeq[device-test]'`` (``edgeq device-test`` runs this suite from the install). A backend that
cannot run here is skipped with the reason.

Latency is judged by a stated percentile over enough samples (edgeq.harness.budget). On a device the
suite measures it; with ``--latency-from bench.json`` (written by ``edgeq bench --json``) it judges
those recorded results instead of the clock — how ``make test`` exercises the budget path, since a
shared CI machine's timings say nothing about the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgeq.errors import InputError
from edgeq.harness.budget import LatencyBudget

DATA = Path(__file__).resolve().parent / "data"
SHIPPED_MODEL = DATA / "cnn_digits_int8.tflite"  # the zoo CNN converted by edgeq (data/make_recorded.py)
SHIPPED_EVAL_SET = DATA / "digits_test.npz"  # digits:test without scikit-learn (data/make_digits_test.py)
BUDGET: pytest.StashKey[Budget] = pytest.StashKey()
BUDGET_KEYS = {"latency", "latency_per_backend", "max_p90_ms", "min_top1", "min_output_sqnr_db",
               "require_full_delegation", "allowed_undelegated_ops", "threads", "runs"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgeq device tests")
    group.addoption("--model", help=".tflite model to test (default: the CNN shipped with the suite, evaluated on "
                                    "its shipped digits test set)")
    group.addoption("--backend", default="ref,cpu,xnnpack", help="comma-separated backends (ref,cpu,xnnpack)")
    group.addoption("--eval-set", help="evaluation data: a set from 'edgeq datagen', a .npy/.npz, an image folder or "
                                       "digits:test; top-1 needs labels, fidelity needs --reference")
    group.addoption("--reference", help="FP32 .tflite the model was made from: each output's SQNR against it on "
                                        "--eval-set is judged by min_output_sqnr_db")
    group.addoption("--budget", help="YAML: latency {max_ms, percentile, min_samples, max_spread}, "
                                     "latency_per_backend, min_top1, min_output_sqnr_db, require_full_delegation, "
                                     "allowed_undelegated_ops, threads, runs")
    group.addoption("--preprocess", help="preprocessing for --eval-set (default: the model's TFLite Metadata, "
                                         "else the set's own; an explicit value wins)")
    group.addoption("--latency-from", metavar="BENCH_JSON",
                    help="judge the latency budget on these recorded 'edgeq bench --json' results, not the clock")


@dataclass(frozen=True)
class Budget:
    latency: LatencyBudget | None = None
    latency_per_backend: dict[str, LatencyBudget] = field(default_factory=dict)
    min_top1: float | None = None
    min_output_sqnr_db: dict[str, float] = field(default_factory=dict)  # output name (or "*": every output) -> dB
    require_full_delegation: bool = False
    allowed_undelegated_ops: tuple[str, ...] = ()  # with require_full_delegation: ops the delegate may leave
    threads: int = 1
    runs: int = 200

    def latency_for(self, backend: str) -> LatencyBudget | None:
        return self.latency_per_backend.get(backend, self.latency)


def parse_budget(document: Any, where: str) -> Budget:
    """The budget file's mapping; unknown keys and wrong types are usage errors, never ignored."""
    if document is None:
        return Budget()
    if not isinstance(document, dict):
        raise InputError(f"{where} must hold a mapping")
    unknown = sorted(set(document) - BUDGET_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown budget key(s) {unknown}; allowed: {sorted(BUDGET_KEYS)}")
    runs = document.get("runs", Budget.runs)
    threads = document.get("threads", Budget.threads)
    for name, value in (("runs", runs), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{where}: {name} must be a positive integer, got {value!r}")

    def latency(spec: Any, key: str) -> LatencyBudget:
        if not isinstance(spec, dict):
            raise InputError(f"{where}: {key} must be a mapping (max_ms, percentile, min_samples, max_spread)")
        return LatencyBudget.from_mapping({"min_samples": runs, **spec}, f"{where}: {key}")

    if "latency" in document and "max_p90_ms" in document:
        raise InputError(f"{where}: give 'latency' or its shorthand 'max_p90_ms', not both")
    overall = latency(document["latency"], "latency") if "latency" in document else None
    if document.get("max_p90_ms") is not None:
        overall = latency({"max_ms": document["max_p90_ms"], "percentile": 90}, "max_p90_ms")
    per_backend = document.get("latency_per_backend") or {}
    if not isinstance(per_backend, dict):
        raise InputError(f"{where}: latency_per_backend must map a backend to a budget")
    min_top1 = document.get("min_top1")
    if min_top1 is not None and (isinstance(min_top1, bool) or not isinstance(min_top1, (int, float))
                                 or not 0 <= min_top1 <= 1):
        raise InputError(f"{where}: min_top1 must be a fraction in [0, 1], got {min_top1!r}")
    sqnr = document.get("min_output_sqnr_db")
    if isinstance(sqnr, (int, float)) and not isinstance(sqnr, bool):
        sqnr = {"*": sqnr}
    sqnr = {} if sqnr is None else sqnr
    if not isinstance(sqnr, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                             and not isinstance(v, bool) for k, v in sqnr.items()):
        raise InputError(f"{where}: min_output_sqnr_db must be a number (every output) or map output names to dB")
    full = document.get("require_full_delegation", False)
    if not isinstance(full, bool):
        raise InputError(f"{where}: require_full_delegation must be true or false")
    allowed = document.get("allowed_undelegated_ops") or []
    if not isinstance(allowed, list) or not all(isinstance(op, str) for op in allowed):
        raise InputError(f"{where}: allowed_undelegated_ops must be a list of op names")
    return Budget(latency=overall, min_top1=min_top1, min_output_sqnr_db={k: float(v) for k, v in sqnr.items()},
                  require_full_delegation=full, threads=threads, runs=runs,
                  allowed_undelegated_ops=tuple(op.upper() for op in allowed),
                  latency_per_backend={str(k): latency(v, f"latency_per_backend.{k}") for k, v in per_backend.items()})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        names = [b.strip() for b in metafunc.config.getoption("--backend").split(",") if b.strip()]
        metafunc.parametrize("backend_name", names)


def pytest_configure(config: pytest.Config) -> None:
    """Read the budget file up front: a bad budget is a usage error (exit 4), not a test error."""
    path = config.getoption("--budget", default=None)
    if not path:
        config.stash[BUDGET] = Budget()
        return
    from edgeq.configfile import load_config

    try:
        config.stash[BUDGET] = parse_budget(load_config(path, "budget"), path)
    except InputError as error:
        raise pytest.UsageError(f"--budget {path}: {error}") from None


@pytest.fixture(scope="session")
def budget(request: pytest.FixtureRequest) -> Budget:
    return request.config.stash[BUDGET]


@pytest.fixture(scope="session")
def recorded_latency(request: pytest.FixtureRequest) -> list[dict[str, Any]] | None:
    """The BenchResult documents of ``--latency-from`` (a bench --json document or one BenchResult)."""
    path = request.config.getoption("--latency-from")
    if not path:
        return None
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise pytest.UsageError(f"--latency-from {path}: {error}") from None
    results = document.get("results", [document]) if isinstance(document, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise pytest.UsageError(f"--latency-from {path}: not an 'edgeq bench --json' document")
    return [r for r in results if r.get("kind") == "bench_result"]


@pytest.fixture(scope="session")
def model_path(request: pytest.FixtureRequest) -> Path:
    given = request.config.getoption("--model")
    return Path(given) if given else SHIPPED_MODEL


@pytest.fixture(scope="session")
def eval_set(request: pytest.FixtureRequest) -> str | None:
    """--eval-set; without it and without --model, the shipped model's own digits test set."""
    given = request.config.getoption("--eval-set")
    if given or request.config.getoption("--model"):
        return given
    return str(SHIPPED_EVAL_SET)


@pytest.fixture(scope="session")
def reference_path(request: pytest.FixtureRequest) -> Path | None:
    given = request.config.getoption("--reference")
    return Path(given) if given else None
