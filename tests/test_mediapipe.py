"""Real exported models: MediaPipe's face detectors (float16 weights; sparse float16 weights behind DENSIFY)
convert to full-integer models that pass the check, run in LiteRT and stay close to float on real photos."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeq
from edgeq.artifacts import Preprocessing
from edgeq.intake.sparsity import VALUE_DTYPES, densify
from edgeq.spec.check import check_model
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from mediapipe_accuracy import (
    MODELS,
    input_size,
    output_names,
    photos,
    run_outputs,
    split,
    sqnr_db,
    to_model_input,
)

EXPECTED_REWRITES = {
    "face_detection_short_range": {"fold_float16_dequantize": 74},
    "face_detection_full_range_sparse": {"densify_sparse_weights": 46, "fold_float16_dequantize": 182},
}
#: A guard against a wrong function, not an accuracy target: measured 10.1-16.7 dB per output on the held-out photos
#: (docs/accuracy.md); a mis-decoded weight or a missing range gives about 0 dB or less.
MIN_SQNR_DB = 8.0


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any, np.ndarray, np.ndarray]]:
    """Each model converted (auto estimator) on 14 bundled photos; with all 21 photos as model input."""
    out = tmp_path_factory.mktemp("mediapipe")
    result = {}
    for name, model in MODELS.items():
        _, images = photos(input_size(model))
        calib, held = split(len(images))
        np.save(out / f"{name}.npy", images[calib])
        artifact = edgeq.convert(model, out / f"{name}_int8.tflite", calib=out / f"{name}.npy",
                                 preprocessing=Preprocessing(mean=(127.5,), std=(127.5,)))
        result[name] = (out / f"{name}_int8.tflite", artifact, to_model_input(images), held)
    return result


@pytest.mark.parametrize("name", list(MODELS))
def test_converts_full_integer_and_passes_the_check(name: str, converted: dict[str, Any]) -> None:
    path, artifact, _, _ = converted[name]
    assert artifact.rewrites == EXPECTED_REWRITES[name]
    assert artifact.float_ops == ()
    data = path.read_bytes()
    parsed = tfl.parse(data)
    assert len(parsed.subgraphs) == 1
    types = {tfl.tensor_type_name(t.type) for t in parsed.subgraphs[0].tensors}
    assert types <= {"INT8", "INT32"}
    kinds = {tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators}
    assert not kinds & {"DENSIFY", "DEQUANTIZE", "QUANTIZE"}
    assert all(t.sparsity is None for t in parsed.subgraphs[0].tensors)
    assert check_model(data).passed


@pytest.mark.parametrize("name", list(MODELS))
def test_int8_outputs_track_float_on_held_out_photos(name: str, converted: dict[str, Any]) -> None:
    path, _, x, held = converted[name]
    reference, approx = run_outputs(MODELS[name], x[held]), run_outputs(path, x[held])
    for output, r, a in zip(output_names(MODELS[name]), reference, approx, strict=True):
        assert np.all(np.isfinite(a))
        assert sqnr_db(r, a) > MIN_SQNR_DB, output


def test_densify_matches_litert_on_the_real_sparse_model() -> None:
    """Every DENSIFY of the MediaPipe model, decoded by edgeq, equals the dense tensor LiteRT computes."""
    model = MODELS["face_detection_full_range_sparse"]
    data = model.read_bytes()
    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    interpreter, _ = make_interpreter(data, CpuKernels.CPU, preserve_all_tensors=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, 192, 192, 3), np.float32))
    interpreter.invoke()
    checked = 0
    for op in graph.operators:
        if tfl.op_type(parsed, op) != "DENSIFY":
            continue
        sparse = graph.tensors[op.inputs[0]]
        raw = bytes(parsed.buffers[sparse.buffer].data)
        values = np.frombuffer(raw, dtype=VALUE_DTYPES[tfl.tensor_type_name(sparse.type)])
        ours = densify(tuple(int(d) for d in sparse.shape), sparse.sparsity, values)
        np.testing.assert_array_equal(ours, interpreter.get_tensor(int(op.outputs[0])))
        checked += 1
    assert checked == 46


def test_sparse_model_size_is_called_larger_with_the_reason(converted: dict[str, Any]) -> None:
    from edgeq.cli.convert import _size_summary

    _, artifact, _, _ = converted["face_detection_full_range_sparse"]
    assert artifact.int8_bytes > artifact.float_bytes  # sparse float16 source, dense int8 result
    summary = _size_summary(artifact)  # the 'size' row of `edgeq convert`
    assert "x larger): the source's sparse weights were densified" in summary and "smaller" not in summary
    _, short, _, _ = converted["face_detection_short_range"]
    assert "x smaller): the source stored float16 weights" in _size_summary(short)
