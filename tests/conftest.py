"""Shared fixtures. Zoo models used by tests are trained on a reduced budget into a per-session cache."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A loop's progress lines reach stderr once it has run a second, so how busy the machine is would decide what a
# test's stderr holds; tests/test_progress.py tests progress under its own setting.
os.environ["EDGEQ_PROGRESS"] = "off"

import pytest
from hypothesis import settings

# No test may depend on how busy the machine is: hypothesis's per-example deadline is a wall-clock
# assertion, so it is off everywhere. In CI the examples are derandomized, so a submission's verdict
# does not depend on which examples a run happened to draw (locally they stay random, to find bugs).
settings.register_profile("edgeq", deadline=None, derandomize=os.environ.get("CI") == "true", print_blob=True)
settings.load_profile("edgeq")


DEMO_FLOAT = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"

#: Test files by measured test time, slowest first (docs/testing.md, "Measured time"). `make test` hands whole
#: files to its two workers in collection order (``--dist loadfile --no-loadscope-reorder``); xdist's own order
#: (most tests first) left files with few but slow tests, such as test_validate_build.py, to the end, where one
#: worker ran them alone. Longest first keeps both busy to the end. Unlisted files follow in their usual order.
SLOW_FILES_FIRST = (
    "test_validate_build.py", "test_converter.py", "test_validate_tasks.py", "test_report_html.py",
    "test_data_safety.py", "test_baseline_comparability.py", "test_slim_install.py", "test_json_envelope.py",
    "test_metadata.py", "test_check.py", "test_harness.py", "test_onnx_intake.py", "test_build_recipe.py",
    "test_eval_unlabelled.py", "test_recovery_ladder.py", "test_outlier_samples.py", "test_verdicts.py",
    "test_zoo.py", "test_mediapipe.py", "test_datagen_hostile.py", "test_device_test_verb.py", "test_probe.py",
    "test_convert_bad_input.py", "test_ci_outputs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow files first (SLOW_FILES_FIRST); a stable sort, so each file's tests keep their order."""
    rank = {name: index for index, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))



def tiny_build_recipe(gates: str) -> str:
    """The cheapest whole ``edgeq build``: the demo CNN, 32 calibration and 40 evaluation digits, one method,
    five bench runs; ``gates`` is the inside of the recipe's ``gates`` mapping."""
    return (f"name: tiny\nmodel: {DEMO_FLOAT}\npreprocess: \"mean=127.5,std=127.5\"\n"
            "calibration: {source: digits:train, conditions: original, n: 32}\n"
            "evaluation: {source: digits:test, conditions: original, n: 40, seed: 1}\n"
            "methods: [minmax]\ntargets: [generic]\n"
            "bench: {backends: [cpu], threads: [1], runs: 5, min_seconds: 0}\n"
            f"gates: {{{gates}}}\n")


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo cache private to this test session, so tests never touch the user's cache."""
    return tmp_path_factory.mktemp("zoo-cache")


def reduced_recipe(name: str, epochs: int = 1, train_limit: int = 96):
    """The zoo recipe of ``name`` on a budget of seconds: tests exercise code paths, not accuracy."""
    from edgeq_models import ZOO

    return dataclasses.replace(ZOO[name].recipe, epochs=epochs, train_limit=train_limit)


@pytest.fixture(scope="session")
def tiny_cnn(zoo_cache: Path):
    """The zoo's plain CNN after one epoch on 96 images (BuiltModel)."""
    from edgeq_models import build

    return build("cnn", recipe=reduced_recipe("cnn"), cache=zoo_cache)


class _OnFirstUse(Mapping[str, Path]):
    """Zoo name -> a file made by ``make(name)`` the first time a test asks for it, so a test that needs only
    the CNN never waits for the ViT."""

    def __init__(self, make: Callable[[str], Path]) -> None:
        self._make = make
        self._paths: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        from edgeq_models import ZOO

        if name not in ZOO:
            raise KeyError(name)
        if name not in self._paths:
            self._paths[name] = self._make(name)
        return self._paths[name]

    def __iter__(self) -> Iterator[str]:
        from edgeq_models import ZOO

        return iter(ZOO)

    def __len__(self) -> int:
        from edgeq_models import ZOO

        return len(ZOO)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Path]:
    """Every zoo model after one short epoch: real architectures, real (if weak) weights.

    Trained on first use into a cache shared by the xdist workers of one run, with one lock per model: the
    first worker to ask for a model trains it, a worker asking meanwhile waits for that model and then reuses
    it (the zoo's builds are deterministic and renamed into place atomically), so the run trains each once."""
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None
    cache = (shared / "tiny-zoo-cache") if shared else tmp_path_factory.mktemp("tiny-zoo-cache")
    cache.mkdir(exist_ok=True)

    def train(name: str) -> Path:
        import fcntl

        from edgeq_models import build

        with open(cache / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return build(name, recipe=reduced_recipe(name, train_limit=64), cache=cache).path

    return _OnFirstUse(train)


@pytest.fixture(scope="session")
def tiny_zoo_int8(tiny_zoo: Mapping[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Path]:
    """Every tiny zoo model converted by edgeq (auto estimator, 32 real calibration images), with its sidecar.

    Converted on first use into a folder shared by the xdist workers of one run, one lock per model, as the
    tiny zoo: conversion is deterministic (tests/test_converter.py), so the run converts each model once."""
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None
    out = (shared / "tiny-zoo-int8") if shared else tmp_path_factory.mktemp("int8")
    out.mkdir(exist_ok=True)

    def convert(name: str) -> Path:
        import fcntl

        import edgeq
        from edgeq_models import ZOO

        path = out / f"{name}.tflite"
        with open(out / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():  # under the lock: a model another worker converted is complete
                calib = "lfw:train" if ZOO[name].dataset == "lfw" else "digits:train"
                edgeq.convert(tiny_zoo[name], path, calib=calib, limit=32, preprocessing=ZOO[name].preprocessing)
        return path

    return _OnFirstUse(convert)
