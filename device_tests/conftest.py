"""Options and fixtures for the on-device suite: run it on the target (or in CI) against a real model.

    pytest device_tests --model m_int8.tflite --backend xnnpack,cpu --eval-set calib/ --budget budget.yaml

Without --model it takes the zoo's CNN (trained once, cached) and converts it to INT8 (needs the full
install). A backend that cannot run here is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgeq device tests")
    group.addoption("--model", help=".tflite model to test (default: a zoo CNN converted by edgeq)")
    group.addoption("--backend", default="ref,cpu,xnnpack", help="comma-separated backends (ref,cpu,xnnpack)")
    group.addoption("--eval-set", help="labelled set from 'edgeq datagen' (or digits:test) for accuracy")
    group.addoption("--budget", help="YAML: max_p90_ms, min_top1, require_full_delegation, threads, runs")
    group.addoption("--preprocess", help="preprocessing for --eval-set when it carries none")


@dataclass(frozen=True)
class Budget:
    max_p90_ms: float | None = None
    min_top1: float | None = None
    require_full_delegation: bool = False
    threads: int = 1
    runs: int = 50


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        names = [b.strip() for b in metafunc.config.getoption("--backend").split(",") if b.strip()]
        metafunc.parametrize("backend_name", names)


@pytest.fixture(scope="session")
def budget(request: pytest.FixtureRequest) -> Budget:
    path = request.config.getoption("--budget")
    if not path:
        return Budget()
    import yaml

    document = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(document) - set(Budget.__dataclass_fields__)
    if unknown:
        raise pytest.UsageError(f"{path}: unknown budget key(s) {sorted(unknown)}")
    return Budget(**document)


@pytest.fixture(scope="session")
def model_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = request.config.getoption("--model")
    if given:
        return Path(given)
    pytest.importorskip("tensorflow", reason="building the default zoo model needs the full install; pass --model")
    import edgeq
    from edgeq_models import ZOO, build

    folder = tmp_path_factory.mktemp("device-model")
    built = build("cnn")  # the full recipe, from the zoo cache (about 15 s to train the first time)
    out = folder / "cnn_int8.tflite"
    edgeq.convert(built.path, out, calib="digits:train", limit=256, preprocessing=ZOO["cnn"].preprocessing)
    return out


@pytest.fixture(scope="session")
def eval_set(request: pytest.FixtureRequest) -> str | None:
    return request.config.getoption("--eval-set")
