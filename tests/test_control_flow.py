"""Every subgraph, everywhere: a WHILE loop's body is calibrated on every iteration, stamped, checked and
listed; an IF's branches likewise; what cannot be measured is refused naming the subgraph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeq
from edgeq.calib.collect import ActivationStats, collect
from edgeq.calib.data import CalibrationSet
from edgeq.errors import InputError
from edgeq.quant_recipe import QuantRecipe
from edgeq.spec.check import check_model
from edgeq.tflite import model as tfl

RNG = np.random.default_rng(0)
W = (RNG.normal(size=(8, 8)) * 0.4).astype(np.float32)
B = (RNG.normal(size=8) * 0.1).astype(np.float32)
ITERATIONS = 3


def _tflite(fn: Any) -> bytes:
    from edgeq.quiet import native_output_captured
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    with native_output_captured():
        return bytes(converter.convert())


def _step(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = h @ W + B
    return z, np.sqrt(np.abs(z) + 1.0) * np.tanh(z)


@pytest.fixture(scope="module")
def while_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x (1, 8) -> WHILE i < 3: h = sqrt(|h W + b| + 1) * tanh(h W + b) -> h * 2 (from tf.while_loop)."""
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()
    w, b = tf.constant(W), tf.constant(B)

    @tf.function(input_signature=[tf.TensorSpec((1, 8), tf.float32)])
    def loop(x: Any) -> Any:
        def body(i: Any, h: Any) -> Any:
            z = tf.matmul(h, w) + b
            return i + 1, tf.sqrt(tf.abs(z) + 1.0) * tf.tanh(z)

        _, h = tf.while_loop(lambda i, h: i < ITERATIONS, body, [tf.constant(0), x])
        return h * 2.0

    path = tmp_path_factory.mktemp("while") / "while.tflite"
    path.write_bytes(_tflite(loop))
    return path


def _calibration(x: np.ndarray) -> CalibrationSet:
    return CalibrationSet(source="test", arrays=(x,), preprocessing=None, conditions=None)


def _key(stats: ActivationStats, subgraph: int, producer: str) -> tuple[int, int]:
    return next(k for k in sorted(stats.tensors) if k[0] == subgraph and stats.producers[k] == producer)


def test_the_model_is_a_real_while_loop(while_model: Path) -> None:
    parsed = tfl.parse(while_model.read_bytes())
    assert [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators] == ["WHILE", "MUL"]
    body = [tfl.op_type(parsed, op) for op in parsed.subgraphs[2].operators]
    assert {"FULLY_CONNECTED", "SQRT", "TANH"} <= set(body)
    assert tfl.reachable_subgraphs(parsed) == [0, 1, 2]


def test_body_statistics_cover_every_iteration(while_model: Path) -> None:
    x = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    stats = collect(while_model.read_bytes(), _calibration(x))
    fc = stats.tensors[_key(stats, 2, "FULLY_CONNECTED")]
    product = stats.tensors[_key(stats, 2, "MUL")]
    expected_z, expected_h = [], []
    for sample in x:
        h = sample[None]
        for _ in range(ITERATIONS):
            z, h = _step(h)
            expected_z.append(z)
            expected_h.append(h)
    assert fc.count == product.count == 6 * ITERATIONS * 8  # the interpreter alone would show the last iteration
    assert fc.min == pytest.approx(float(np.min(expected_z)), abs=1e-5)
    assert fc.max == pytest.approx(float(np.max(expected_z)), abs=1e-5)
    assert product.max == pytest.approx(float(np.max(expected_h)), abs=1e-5)
    condition_input = stats.tensors[_key(stats, 1, "ARGUMENT")]
    assert condition_input.count == 6 * (ITERATIONS + 1) * 8  # the condition runs once more, to stop


def test_stats_file_keeps_subgraphs(while_model: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    stats = collect(while_model.read_bytes(), _calibration(x))
    loaded = ActivationStats.load(stats.save(tmp_path / "stats.npz"))
    assert loaded.names == stats.names and loaded.producers == stats.producers
    assert {k: (t.count, t.min, t.max) for k, t in loaded.tensors.items()} == \
        {k: (t.count, t.min, t.max) for k, t in stats.tensors.items()}
    assert {k[0] for k in loaded.tensors} == {0, 1, 2}


@pytest.fixture(scope="module")
def while_int8(while_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("while_int8")
    np.save(folder / "x.npy", np.random.default_rng(2).normal(size=(16, 8)).astype(np.float32))
    out = folder / "while_int8.tflite"
    artifact = edgeq.convert(while_model, out, calib=folder / "x.npy", recipe=QuantRecipe(allow_float_ops=True))
    return out, artifact


def test_without_allow_float_ops_the_while_is_named(while_model: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(4, 8)).astype(np.float32))
    with pytest.raises(InputError, match=r"cannot quantize WHILE to int8 \(first: WHILE \(op 1"):
        edgeq.convert(while_model, tmp_path / "m.tflite", calib=tmp_path / "x.npy")
    assert not (tmp_path / "m.tflite").exists()


def test_allow_float_ops_lists_every_float_op_in_every_subgraph(while_int8: tuple[Path, Any]) -> None:
    out, artifact = while_int8
    parsed = tfl.parse(out.read_bytes())
    body = parsed.subgraphs[2]
    computed = {tfl.op_type(parsed, op): tfl.tensor_type_name(body.tensors[op.outputs[0]].type)
                for op in body.operators}
    assert computed["FULLY_CONNECTED"] == computed["SQRT"] == computed["TANH"] == "INT8"  # the body was stamped
    listed = list(artifact.float_ops)
    assert any(op.startswith("WHILE (op 1") for op in listed)
    in_body = [op for op in listed if "subgraph 2 'while_body'" in op]
    assert [op.split(" ")[0] for op in in_body] == ["QUANTIZE", "DEQUANTIZE"]  # the loop-carried value stays float
    findings = check_model(out.read_bytes()).findings
    assert {(f.subgraph, f.op_type) for f in findings if f.rule_id == "float.qdq-inside" and f.subgraph} == \
        {(2, "QUANTIZE"), (2, "DEQUANTIZE")}
    ranges = {r.name for r in artifact.ranges.ranges}
    assert any("Sqrt" in name for name in ranges)  # body tensors have ranges in the sidecar


def test_per_layer_diagnostics_reach_the_body(while_model: Path, while_int8: tuple[Path, Any]) -> None:
    from edgeq.intake.load import load_float_model
    from edgeq.validate.diagnostics import per_layer

    x = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    rows = per_layer(load_float_model(while_model).flatbuffer, while_int8[0].read_bytes(), x)
    body = [r for r in rows if r.subgraph == 2]
    assert {r.op for r in body} >= {"FULLY_CONNECTED", "SQRT", "TANH"}
    assert all(r.local_sqnr_db > 30 and 10 < r.sqnr_db < r.local_sqnr_db for r in body)  # every iteration compared
    assert body[0].to_document()["subgraph"] == 2 and "subgraph" not in rows[0].to_document()


def test_a_loop_that_never_runs_is_refused_naming_its_subgraph(tmp_path: Path) -> None:
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def rare(x: Any) -> Any:
        return tf.while_loop(lambda h: tf.reduce_sum(h) > 1000.0, lambda h: [tf.sqrt(h) * 0.5], [x])[0] + 1.0

    model = tmp_path / "rare.tflite"
    model.write_bytes(_tflite(rare))
    np.save(tmp_path / "x.npy", np.random.default_rng(4).normal(size=(4, 4)).astype(np.float32))
    with pytest.raises(InputError, match=r"of subgraph 2 \(its loop or branch never ran\) was never computed"):
        edgeq.convert(model, tmp_path / "m.tflite", calib=tmp_path / "x.npy",
                      recipe=QuantRecipe(allow_float_ops=True))


def test_if_branches_are_measured(tmp_path: Path) -> None:
    from edgeq.tfimport import import_tensorflow

    tf = import_tensorflow()

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def branchy(x: Any) -> Any:
        return tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.tanh(x * 3.0), lambda: tf.sqrt(tf.abs(x)) - 1.0)

    data = _tflite(branchy)
    parsed = tfl.parse(data)
    if "IF" not in [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators]:
        pytest.skip("this TensorFlow lowered tf.cond instead of emitting IF")
    x = np.random.default_rng(5).normal(size=(10, 4)).astype(np.float32)
    positive = int(np.sum(x.sum(axis=1) > 0))
    stats = collect(data, _calibration(x))
    per_graph: dict[int, int] = {}
    for (g, _), tensor in stats.tensors.items():
        if g and stats.producers[(g, _)] != "ARGUMENT":
            per_graph[g] = max(per_graph.get(g, 0), tensor.count)
    assert sorted(per_graph.values()) == sorted([positive * 4, (10 - positive) * 4])


def test_version_1_stats_files_still_load(while_model: Path, tmp_path: Path) -> None:
    """Files written before subgraphs were keyed (version 1: main graph only, plain tensor indices)."""
    import json

    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    stats = collect(while_model.read_bytes(), _calibration(x))
    path = stats.save(tmp_path / "stats.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if not k.startswith("s")}
    meta = json.loads(str(arrays["meta"]))
    meta["version"] = 1
    meta["names"] = {k.split(":")[1]: v for k, v in meta["names"].items() if k.startswith("0:")}
    meta["producers"] = {k.split(":")[1]: v for k, v in meta["producers"].items() if k.startswith("0:")}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = ActivationStats.load(tmp_path / "v1.npz")
    assert set(loaded.tensors) == {k for k in stats.tensors if k[0] == 0}
    assert all(loaded.tensors[k].count == stats.tensors[k].count for k in loaded.tensors)
