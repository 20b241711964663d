"""Converter-hint metadata (litert-torch's ``keep_stablehlo_constant``) is dropped at intake: with it, TF's
quantizer keeps every weight in float and the model cannot be made full-integer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgeq
from edgeq.intake.load import load_float_model
from edgeq.intake.rewrite import QUANTIZER_HINTS
from edgeq.tflite import model as tfl


@pytest.fixture(scope="module")
def hinted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from edgeq.intake.load import keras_to_float_tflite

    folder = tmp_path_factory.mktemp("hints")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = tfl.parse(keras_to_float_tflite(keras.Model(inputs, outputs)))
    schema = tfl.schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(b"\x01", np.uint8).copy()
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "keep_stablehlo_constant", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    (folder / "hinted.tflite").write_bytes(tfl.serialize(model))
    np.save(folder / "x.npy", np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32))
    return folder


def _names(data: bytes) -> set[str]:
    return {e.name.decode() if isinstance(e.name, bytes) else e.name for e in tfl.parse(data).metadata or []}


def test_the_hint_is_dropped_and_recorded(hinted: Path) -> None:
    loaded = load_float_model(hinted / "hinted.tflite")
    assert "keep_stablehlo_constant" in _names((hinted / "hinted.tflite").read_bytes())
    assert not _names(loaded.flatbuffer) & QUANTIZER_HINTS
    assert {r.name: r.count for r in loaded.rewrites} == {"drop_quantizer_hints": 1}


def test_a_hinted_model_converts_full_integer(hinted: Path, tmp_path: Path) -> None:
    artifact = edgeq.convert(hinted / "hinted.tflite", tmp_path / "int8.tflite", calib=hinted / "x.npy")
    assert artifact.float_ops == ()
    parsed = tfl.parse((tmp_path / "int8.tflite").read_bytes())
    assert {tfl.tensor_type_name(t.type) for t in parsed.subgraphs[0].tensors} <= {"INT8", "INT32"}
