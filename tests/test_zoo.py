"""The zoo's build/cache path on a reduced training budget: train once, reuse, retrain on change."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import edgeq_models.zoo as zoo
from conftest import reduced_recipe
from edgeq.cli import main as cli
from edgeq.errors import UsageError


def test_first_build_trains_and_records_a_card(tiny_cnn: zoo.BuiltModel, zoo_cache: Path) -> None:
    card = tiny_cnn.card
    assert tiny_cnn.path.is_file()
    assert tiny_cnn.path.parent.parent == zoo_cache / "zoo"
    assert card.name == "cnn" and card.recipe.epochs == 1 and card.recipe.train_limit == 96
    assert card.params > 10_000
    assert 0.0 <= card.test_accuracy <= 1.0
    stored = json.loads((tiny_cnn.path.parent / "card.json").read_text())
    assert zoo.ZooCard.from_dict(stored) == card
    assert not any(p.name.startswith(".") for p in (zoo_cache / "zoo").iterdir())  # no staging left


def test_second_build_reuses_the_cache(tiny_cnn: zoo.BuiltModel, zoo_cache: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(zoo, "_train_into_staging", no_training)
    again = zoo.build("cnn", recipe=reduced_recipe("cnn"), cache=zoo_cache)
    assert again.reused
    assert again.card == tiny_cnn.card
    assert again.path == tiny_cnn.path


def test_recipe_change_changes_the_key() -> None:
    entry = zoo.ZOO["cnn"]
    base = zoo.recipe_key(entry, entry.recipe)
    assert base == zoo.recipe_key(entry, entry.recipe)
    assert base != zoo.recipe_key(entry, dataclasses.replace(entry.recipe, seed=1))
    assert base != zoo.recipe_key(entry, dataclasses.replace(entry.recipe, epochs=2))
    assert base != zoo.recipe_key(zoo.ZOO["resnet"], entry.recipe)


def test_cache_location_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "env"))
    assert zoo.cache_dir() == tmp_path / "env"
    assert zoo.cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(zoo.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "edgeq"


def test_training_is_deterministic(tiny_cnn: zoo.BuiltModel, tmp_path: Path) -> None:
    """The same recipe trained again from scratch gives the same weights and the same accuracy."""
    retrained = zoo.build("cnn", recipe=reduced_recipe("cnn"), cache=tmp_path)
    assert not retrained.reused
    assert retrained.card.key == tiny_cnn.card.key
    assert retrained.card.test_accuracy == tiny_cnn.card.test_accuracy
    first, second = zoo.load_model(tiny_cnn.path), zoo.load_model(retrained.path)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["vit", "face_cnn"])
def test_every_family_builds_saves_and_loads(name: str, tiny_zoo: Mapping[str, Path]) -> None:
    """Including the ViT's custom position-embedding layer, which must survive save/load.

    The models are the session's tiny zoo (built and saved by zoo.build, as here before, but once per run)."""
    model = zoo.load_model(tiny_zoo[name])
    entry = zoo.ZOO[name]
    assert tuple(model.input_shape[1:]) == entry.input_shape
    assert model.output_shape[-1] == entry.num_classes
    x = np.zeros((2, *entry.input_shape), np.float32)
    probs = model.predict(x, verbose=0)
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)  # the zoo's classifiers end in softmax


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2"])
def test_architectures_have_their_defining_layers(name: str) -> None:
    import keras

    model = zoo.ZOO[name].builder((32, 32, 3), 10)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Add" in kinds
    if name == "mobilenet_v2":
        assert "DepthwiseConv2D" in kinds
        assert any(isinstance(layer, keras.layers.ReLU) and layer.max_value == 6.0 for layer in model.layers)


def test_bad_recipe_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        zoo.build("cnn", recipe=dataclasses.replace(zoo.ZOO["cnn"].recipe, epochs=0))


def test_cli_build_writes_the_model_and_reuses_cache(tiny_cnn: zoo.BuiltModel, zoo_cache: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI's --epochs keeps the rest of the recipe, so reuse the fixture's reduced recipe here.
    monkeypatch.setitem(zoo.ZOO, "cnn", dataclasses.replace(zoo.ZOO["cnn"], recipe=reduced_recipe("cnn")))
    out = tmp_path / "cnn.keras"
    code = cli.main(["zoo", "build", "cnn", "--epochs", "1", "--cache-dir", str(zoo_cache), "-o", str(out),
                     "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "edgeq.zoo" and document["reused"] is True and document["output"] == str(out)
    assert document["card"]["test_accuracy"] == tiny_cnn.card.test_accuracy
    assert out.read_bytes() == tiny_cnn.path.read_bytes()
