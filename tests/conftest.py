"""Shared fixtures. Zoo models used by tests are trained on a reduced budget into a per-session cache."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest


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
