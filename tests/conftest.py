"""Shared fixtures. Zoo models used by tests are trained on a reduced budget into a per-session cache."""

from __future__ import annotations

import dataclasses
import os
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


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every zoo model after one short epoch: real architectures, real (if weak) weights.

    Shared by the xdist workers of one run: the first to get the lock trains, the others reuse its cache
    (the zoo's builds are deterministic and renamed into place atomically), so the run trains them once."""
    import fcntl

    from edgeq_models import ZOO, build

    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None
    cache = (shared / "tiny-zoo-cache") if shared else tmp_path_factory.mktemp("tiny-zoo-cache")
    cache.mkdir(exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return {name: build(name, recipe=reduced_recipe(name, train_limit=64), cache=cache).path for name in ZOO}


@pytest.fixture(scope="session")
def tiny_zoo_int8(tiny_zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny zoo model converted by edgeq (auto estimator, 32 real calibration images)."""
    import edgeq
    from edgeq_models import ZOO

    out = tmp_path_factory.mktemp("int8")
    converted = {}
    for name, path in tiny_zoo.items():
        calib = "lfw:train" if ZOO[name].dataset == "lfw" else "digits:train"
        converted[name] = out / f"{name}.tflite"
        edgeq.convert(path, converted[name], calib=calib, limit=32, preprocessing=ZOO[name].preprocessing)
    return converted
