"""Custom ops with exact builtin decompositions (edgeq.intake.custom_ops).

MediaPipe's Convolution2DTransposeBias is checked three ways: the numpy reference against a literal
transcription of MediaPipe's kernel loop (the slow obvious one), LiteRT's TRANSPOSE_CONV after the rewrite
against that reference over many shapes, strides and paddings, and the real selfie segmenter (vendored from
the mediapipe wheel) end to end: it converts full-integer and its INT8 mask matches the float mask."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tflite_builders import GraphBuilder

import edgeq
from edgeq.artifacts import Preprocessing
from edgeq.errors import InputError
from edgeq.intake.custom_ops import DECOMPOSITIONS, decompose_custom_ops, transpose_conv_bias_reference
from edgeq.intake.load import load_float_model
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

SELFIE = Path(__file__).parent / "data" / "mediapipe" / "selfie_segmentation.tflite"
SAME, VALID = 1, 2


def mediapipe_loop(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, padding: int, stride_w: int,
                   stride_h: int) -> np.ndarray:
    """MediaPipe's Prepare (output size) and TransposeConvBias (the loops), transcribed line by line."""
    batches, in_h, in_w, in_c = x.shape
    out_c, f_h, f_w, _ = weights.shape
    pad_h = max(0, f_h - (in_h - 1) % stride_h - 1) if padding == SAME else 0
    pad_w = max(0, f_w - (in_w - 1) % stride_w - 1) if padding == SAME else 0
    out_h, out_w = stride_h * (in_h - 1) + f_h - pad_h, stride_w * (in_w - 1) + f_w - pad_w
    out = np.zeros((batches, out_h, out_w, out_c))
    out[:] = bias
    for b in range(batches):
        for in_y in range(in_h):
            for in_x in range(in_w):
                for ic in range(in_c):
                    origin_x, origin_y = in_x * stride_w - pad_w // 2, in_y * stride_h - pad_h // 2
                    for fy in range(f_h):
                        for fx in range(f_w):
                            for oc in range(out_c):
                                ox, oy = origin_x + fx, origin_y + fy
                                if 0 <= ox < out_w and 0 <= oy < out_h:
                                    out[b, oy, ox, oc] += x[b, in_y, in_x, ic] * weights[oc, fy, fx, ic]
    return out


def custom_model(in_h: int, in_w: int, in_c: int, out_c: int, kernel: tuple[int, int], strides: tuple[int, int],
                 padding: int, seed: int = 0, name: str = "Convolution2DTransposeBias") -> tuple[bytes, tuple]:
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(out_c, *kernel, in_c)).astype(np.float32)
    bias = rng.normal(size=out_c).astype(np.float32)
    reference = mediapipe_loop(np.zeros((1, in_h, in_w, in_c)), weights, bias, padding, strides[1], strides[0])
    builder = GraphBuilder()
    x = builder.tensor("x", (1, in_h, in_w, in_c), "FLOAT32")
    w = builder.tensor("w", weights.shape, "FLOAT32", weights)
    b = builder.tensor("b", bias.shape, "FLOAT32", bias)
    y = builder.tensor("y", reference.shape, "FLOAT32")
    builder.custom_op(name, [x, w, b], [y], struct.pack("<iii", padding, strides[1], strides[0]))
    return builder.build([x], [y]), (weights, bias)


@settings(max_examples=25)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
       st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.sampled_from([SAME, VALID]), st.integers(0, 9))
def test_the_reference_is_mediapipes_kernel(in_h: int, in_w: int, in_c: int, out_c: int, k_h: int, k_w: int,
                                            s_h: int, s_w: int, padding: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, w, b = rng.normal(size=(1, in_h, in_w, in_c)), rng.normal(size=(out_c, k_h, k_w, in_c)), rng.normal(size=out_c)
    want = mediapipe_loop(x, w, b, padding, s_w, s_h)
    got = transpose_conv_bias_reference([x, w, b], struct.pack("<iii", padding, s_w, s_h))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=40)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
       st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.sampled_from([SAME, VALID]))
def test_the_rewrite_computes_what_the_custom_op_computes(in_h: int, in_w: int, in_c: int, out_c: int, k_h: int,
                                                          k_w: int, s_h: int, s_w: int, padding: int) -> None:
    """LiteRT's TRANSPOSE_CONV after the rewrite equals MediaPipe's loop, or the rewrite refuses (never wrong)."""
    data, (weights, bias) = custom_model(in_h, in_w, in_c, out_c, (k_h, k_w), (s_h, s_w), padding)
    parsed = tfl.parse(data)
    try:
        decompose_custom_ops(parsed)
    except InputError as exc:
        assert "no TRANSPOSE_CONV padding reproduces" in str(exc)
        return
    assert tfl.op_type(parsed, parsed.subgraphs[0].operators[0]) == "TRANSPOSE_CONV"
    interpreter, _ = make_interpreter(tfl.serialize(parsed), CpuKernels.CPU)
    x = np.random.default_rng(1).normal(size=(1, in_h, in_w, in_c)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    want = mediapipe_loop(x.astype(np.float64), weights, bias, padding, s_w, s_h)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_some_shapes_of_the_common_2x2_upsampler_rewrite(tmp_path: Path) -> None:
    """The shape real models use (2x2 kernel, stride 2, SAME) always rewrites: the refusal above is rare."""
    for size in (1, 2, 7, 64):
        parsed = tfl.parse(custom_model(size, size, 4, 2, (2, 2), (2, 2), SAME)[0])
        assert len(decompose_custom_ops(parsed)) == 1


def test_load_decomposes_and_records_it(tmp_path: Path) -> None:
    data, _ = custom_model(8, 8, 3, 2, (2, 2), (2, 2), SAME)
    (tmp_path / "up.tflite").write_bytes(data)
    loaded = load_float_model(tmp_path / "up.tflite")
    assert {r.name: r.count for r in loaded.rewrites} == {"decompose_Convolution2DTransposeBias": 1}
    parsed = tfl.parse(loaded.flatbuffer)
    assert [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators] == ["TRANSPOSE_CONV"]


def test_a_custom_op_without_kernel_or_decomposition_is_refused_by_name(tmp_path: Path) -> None:
    data, _ = custom_model(4, 4, 2, 2, (2, 2), (2, 2), SAME, name="MysteryUpsample")
    (tmp_path / "mystery.tflite").write_bytes(data)
    with pytest.raises(InputError, match=r"custom op\(s\) MysteryUpsample .* decomposes: "
                                         + "|".join(DECOMPOSITIONS)):
        load_float_model(tmp_path / "mystery.tflite")


def test_bad_custom_options_are_refused(tmp_path: Path) -> None:
    data, _ = custom_model(4, 4, 2, 2, (2, 2), (2, 2), SAME)
    parsed = tfl.parse(data)
    parsed.subgraphs[0].operators[0].customOptions = np.frombuffer(struct.pack("<iii", 7, 2, 2), np.uint8).copy()
    with pytest.raises(InputError, match="padding=7"):
        decompose_custom_ops(parsed)


@pytest.fixture(scope="module")
def selfie(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from mediapipe_accuracy import photos, split

    folder = tmp_path_factory.mktemp("selfie")
    _, images = photos((256, 256))
    calib, held = split(len(images))
    np.save(folder / "calib.npy", images[calib])
    artifact = edgeq.convert(SELFIE, folder / "selfie_int8.tflite", calib=folder / "calib.npy",
                             preprocessing=Preprocessing(mean=(0.0,), std=(255.0,)))
    assert artifact.rewrites == {"decompose_Convolution2DTransposeBias": 1, "fold_float16_dequantize": 110}
    assert artifact.float_ops == ()
    return folder / "selfie_int8.tflite", images[held].astype(np.float32) / 255.0, artifact


def test_the_selfie_segmenter_comes_out_full_integer(selfie: tuple) -> None:
    parsed = tfl.parse(selfie[0].read_bytes())
    graph = parsed.subgraphs[0]
    assert {tfl.tensor_type_name(t.type) for t in graph.tensors} <= {"INT8", "INT32"}
    assert "TRANSPOSE_CONV" in {tfl.op_type(parsed, op) for op in graph.operators}


def test_the_selfie_mask_matches_float_on_held_out_photos(selfie: tuple) -> None:
    """Measured with the auto estimator: IoU 0.898 on the astronaut (the held-out photo with a person) and
    0.78-1.0 on the others, mean |error| 0.022; a wrong decomposition gives an IoU near 0."""
    from mediapipe_accuracy import run_outputs

    path, x, _ = selfie
    reference = run_outputs(load_float_model(SELFIE).flatbuffer, x)[0]
    approx = run_outputs(path, x)[0]
    person, other = reference[0] > 0.5, approx[0] > 0.5  # the astronaut photo
    assert (person & other).sum() / (person | other).sum() > 0.85
    assert float(np.abs(reference - approx).mean()) < 0.04


def _postprocess_model(folder: Path) -> Path:
    """A small SSD-style head (Keras) ending in TFLite's own TFLite_Detection_PostProcess custom op, which
    LiteRT registers a kernel for."""
    import keras
    from flatbuffers import flexbuffers

    from edgeq.intake.load import keras_to_float_tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Reshape((64, 8))(keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    head = keras.Model(inputs, [keras.layers.Dense(4)(x), keras.layers.Dense(3, activation="sigmoid")(x)])
    model = tfl.parse(keras_to_float_tflite(head))
    graph = model.subgraphs[0]
    boxes = next(int(i) for i in graph.outputs if int(graph.tensors[i].shape[-1]) == 4)
    scores = next(int(i) for i in graph.outputs if int(graph.tensors[i].shape[-1]) == 3)
    builder = GraphBuilder()
    builder.model, builder.graph = model, graph
    centres = (np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(-1, 2)[:, ::-1] + 0.5) / 8
    anchors = builder.tensor("anchors", (64, 4), "FLOAT32", np.concatenate([centres, np.full((64, 2), 0.2)], 1)
                             .astype(np.float32))
    outs = [builder.tensor(name, shape, "FLOAT32") for name, shape in
            (("boxes", (1, 10, 4)), ("classes", (1, 10)), ("scores", (1, 10)), ("count", (1,)))]
    options = flexbuffers.Builder()
    with options.Map():
        for key, value in (("max_detections", 10), ("max_classes_per_detection", 1), ("detections_per_class", 10),
                           ("num_classes", 2)):
            options.Int(key, value)
        options.Bool("use_regular_nms", False)
        for key, value in (("nms_score_threshold", 0.3), ("nms_iou_threshold", 0.5), ("y_scale", 10.0),
                           ("x_scale", 10.0), ("h_scale", 5.0), ("w_scale", 5.0)):
            options.Float(key, value)
    builder.custom_op("TFLite_Detection_PostProcess", [boxes, scores, anchors], outs, bytes(options.Finish()))
    path = folder / "postprocess.tflite"
    path.write_bytes(builder.build([int(i) for i in graph.inputs], outs))
    np.save(folder / "x.npy", np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32))
    return path


def test_a_custom_op_the_runtime_runs_stays_float_with_allow_float_ops(tmp_path: Path) -> None:
    from edgeq.quant_recipe import QuantRecipe

    model = _postprocess_model(tmp_path)
    with pytest.raises(InputError, match="cannot quantize CUSTOM:TFLite_Detection_PostProcess"):
        edgeq.convert(model, tmp_path / "strict.tflite", calib=tmp_path / "x.npy")
    assert not (tmp_path / "strict.tflite").exists()
    artifact = edgeq.convert(model, tmp_path / "int8.tflite", calib=tmp_path / "x.npy",
                             recipe=QuantRecipe(allow_float_ops=True))
    assert any(op.startswith("CUSTOM:TFLite_Detection_PostProcess") for op in artifact.float_ops)
    interpreter, _ = make_interpreter(tmp_path / "int8.tflite", CpuKernels.CPU)  # it runs: verified before written
    detail = interpreter.get_input_details()[0]
    scale, zero = detail["quantization"]
    x = np.load(tmp_path / "x.npy")[:1]
    interpreter.set_tensor(detail["index"], np.clip(np.round(x / scale) + zero, -128, 127).astype(detail["dtype"]))
    interpreter.invoke()
    shapes = [tuple(interpreter.get_tensor(d["index"]).shape) for d in interpreter.get_output_details()]
    assert sorted(shapes) == sorted([(1, 10, 4), (1, 10), (1, 10), (1,)])


def test_custom_ops_are_found_in_every_subgraph() -> None:
    """The refusal names custom ops wherever they are (a WHILE body, an IF branch), not only in the main graph."""
    from edgeq.intake.custom_ops import custom_ops

    parsed = tfl.parse(custom_model(4, 4, 2, 2, (2, 2), (2, 2), SAME, name="MysteryUpsample")[0])
    main = tfl.schema().SubGraphT()
    main.tensors, main.operators, main.inputs, main.outputs = [], [], np.array([], np.int32), np.array([], np.int32)
    parsed.subgraphs = [main, *parsed.subgraphs]  # the custom op now lives in subgraph 1
    assert custom_ops(parsed) == {"MysteryUpsample": 1}
