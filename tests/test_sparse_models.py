"""Sparse and float16 weights: densified and folded before ranges are stamped, or refused by name; an artifact
that would not run or still holds a float type is never published."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tflite_builders import GraphBuilder, encode_sparse, sparse_float16_conv_model

import edgeq
from edgeq.cli import main as cli
from edgeq.converter.api import sidecar_path
from edgeq.converter.quantize import float_ops
from edgeq.errors import ExitCode, InputError
from edgeq.intake import rewrite
from edgeq.tflite import model as tfl
from edgeq.tflite import probe as probe_module
from edgeq.tflite.runtime import CpuKernels, make_interpreter


@pytest.fixture(scope="module")
def sparse_conv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("sparse")
    model, weights = sparse_float16_conv_model()
    (folder / "sparse_conv.tflite").write_bytes(model)
    np.save(folder / "calib.npy", np.random.default_rng(1).uniform(-1, 1, (24, 12, 12, 3)).astype(np.float32))
    return folder / "sparse_conv.tflite", folder / "calib.npy", weights


def _run(model: bytes | Path, x: np.ndarray) -> np.ndarray:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if detail["dtype"] == np.int8:
        scale, zero = detail["quantization"]
        x = np.clip(np.rint(x / scale) + zero, -128, 127).astype(np.int8)
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y


def test_sparse_float16_conv_converts_full_integer_and_runs(sparse_conv: tuple[Path, Path, np.ndarray],
                                                            tmp_path: Path) -> None:
    model, calib, weights = sparse_conv
    out = tmp_path / "m.tflite"
    artifact = edgeq.convert(model, out, calib=calib)
    assert artifact.rewrites == {"densify_sparse_weights": 1, "fold_float16_dequantize": 2}
    assert artifact.float_ops == ()
    quantized = out.read_bytes()
    parsed = tfl.parse(quantized)
    kinds = [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators]
    assert kinds == ["CONV_2D"]  # DENSIFY and both DEQUANTIZE are gone; RELU is fused
    types = {tfl.tensor_type_name(t.type) for t in parsed.subgraphs[0].tensors}
    assert types <= {"INT8", "INT32"}
    conv = parsed.subgraphs[0].operators[0]
    w = parsed.subgraphs[0].tensors[conv.inputs[1]]
    dequantized = np.frombuffer(bytes(parsed.buffers[w.buffer].data), np.int8).reshape(weights.shape) * \
        np.asarray(w.quantization.scale)[:, None, None, None]
    assert np.count_nonzero(dequantized) == np.count_nonzero(weights)  # the sparsity pattern survived densify
    np.testing.assert_allclose(dequantized, weights.astype(np.float32), atol=np.abs(weights).max() / 127)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 12, 12, 3)).astype(np.float32)
    reference, approx = _run(model, x), _run(out, x)
    assert np.abs(reference - approx).max() < 0.05 * np.abs(reference).max()


def test_a_float16_tensor_left_behind_is_a_float_op(sparse_conv: tuple[Path, Path, np.ndarray], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The bug of issue 12: without densify the quantizer keeps DENSIFY and its float16 weights, and the
    FLOAT32-only float-op search saw nothing. Now any float type counts, and nothing is written."""
    model, calib, _ = sparse_conv
    monkeypatch.setattr(rewrite, "REWRITES", tuple(r for r in rewrite.REWRITES if r[0] != "densify_sparse_weights"))
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(model), "--calib", str(calib), "-o", str(out)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "cannot quantize" in err and "DENSIFY" in err and "FLOAT16 tensor" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not sidecar_path(out).exists()


def test_a_verified_artifact_only(sparse_conv: tuple[Path, Path, np.ndarray], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A quantized model that fails the spec check, or that the runtime cannot run, is not published: exit 1,
    the first finding named."""
    model, calib, _ = sparse_conv
    from edgeq.converter import api

    real_quantize = api.quantize

    def doubled_bias_scale(*args: object, **kwargs: object) -> bytes:
        parsed = tfl.parse(real_quantize(*args, **kwargs))  # type: ignore[arg-type]
        graph = parsed.subgraphs[0]
        bias = graph.tensors[graph.operators[0].inputs[2]]
        bias.quantization.scale = np.asarray(bias.quantization.scale) * 2
        return tfl.serialize(parsed)

    out = tmp_path / "m.tflite"
    monkeypatch.setattr(api, "quantize", doubled_bias_scale)
    assert cli.main(["convert", str(model), "--calib", str(calib), "-o", str(out)]) == ExitCode.GATE_FAILED
    err = capsys.readouterr().err
    assert "fails the INT8 spec check" in err and "bias.scale (op 0 CONV_2D" in err
    assert not out.exists() and not sidecar_path(out).exists()

    monkeypatch.setattr(api, "quantize", real_quantize)
    real_command = probe_module.probe_command

    def crash_on_int8(path: Path, kernels: str) -> list[str]:  # the input model is probed too, and must pass
        if path == model:
            return real_command(path, kernels)
        return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]

    monkeypatch.setattr(probe_module, "probe_command", crash_on_int8)
    assert cli.main(["convert", str(model), "--calib", str(calib), "-o", str(out)]) == ExitCode.GATE_FAILED
    err = capsys.readouterr().err
    assert "does not run in LiteRT" in err and "SIGSEGV" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not sidecar_path(out).exists()


def test_size_summary_says_larger_and_why(sparse_conv: tuple[Path, Path, np.ndarray], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, calib, _ = sparse_conv
    model = tmp_path / "very_sparse.tflite"
    model.write_bytes(sparse_float16_conv_model(channels=64, density=0.05)[0])
    out = tmp_path / "m.tflite"
    assert cli.main(["convert", str(model), "--calib", str(calib), "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    sidecar = json.loads(sidecar_path(out).read_text())
    size_line = next(line for line in summary.splitlines() if line.startswith("size"))
    assert sidecar["int8_bytes"] > sidecar["float_bytes"]  # 95 % zeros left out in float16, all stored in int8
    assert "larger" in size_line and "smaller" not in size_line
    assert "sparse weights were densified" in size_line
    assert "float ops left       none" in summary


def test_size_change_words() -> None:
    from edgeq.spec.size import size_change, size_reasons

    assert size_change(4000, 1000) == "4.00x smaller"
    assert size_change(660, 701) == "1.06x larger"
    assert size_change(10, 10) == "the same size"
    assert size_reasons({"fold_float16_dequantize": 3}, 4000, 1000) == []  # 4x smaller: nothing to explain
    assert size_reasons({"fold_float16_dequantize": 3}, 2000, 1000) == [rewrite_reason("fold_float16_dequantize")]


def rewrite_reason(name: str) -> str:
    from edgeq.spec.size import SIZE_REASONS

    return SIZE_REASONS[name]


def _sparse_fc_model(block_map: list[int]) -> bytes:
    """input (1, 4) -> FULLY_CONNECTED whose float32 weights are a sparse constant read directly by the op."""
    weights = np.zeros((4, 4), np.float32)
    weights[0, :2], weights[3, 2:] = 1.0, -2.0
    sparsity, stored = encode_sparse(weights, [0, 1, 2, 3], [0, 1], [2, 2], [0, 1, 0, 0])
    sparsity.blockMap = np.asarray(block_map, np.int32)
    builder = GraphBuilder()
    x = builder.tensor("input", [1, 4], "FLOAT32")
    w = builder.tensor("fc/weights", [4, 4], "FLOAT32", stored, sparsity)
    y = builder.tensor("fc/output", [1, 4], "FLOAT32")
    builder.op("FULLY_CONNECTED", [x, w, -1], [y], tfl.schema().FullyConnectedOptionsT())
    return builder.build([x], [y])


def test_sparse_constants_read_directly_are_densified_or_refused_by_name() -> None:
    parsed = tfl.parse(_sparse_fc_model([0, 1]))
    assert rewrite.densify_sparse_weights(parsed) == 1
    w = parsed.subgraphs[0].tensors[1]
    assert w.sparsity is None
    np.testing.assert_array_equal(np.frombuffer(bytes(parsed.buffers[w.buffer].data), np.float32).reshape(4, 4)[0],
                                  [1, 1, 0, 0])
    parsed = tfl.parse(_sparse_fc_model([1, 0]))
    with pytest.raises(InputError, match=r"cannot densify sparse tensor 'fc/weights' \(op 0\): .*not ascending"):
        rewrite.densify_sparse_weights(parsed)


def test_float_ops_count_every_float_type() -> None:
    """A FLOAT16 (or FLOAT64, BFLOAT16...) operand is a float op just as FLOAT32 is."""
    builder = GraphBuilder()
    x = builder.tensor("x", [2], "INT8")
    h = builder.tensor("half", [2], "FLOAT16")
    y = builder.tensor("y", [2], "INT8")
    builder.op("DEQUANTIZE", [x], [h])
    builder.op("QUANTIZE", [h], [y])
    found = float_ops(builder.build([x], [y]))
    assert [(op.op_type, op.tensor_type) for op in found] == [("DEQUANTIZE", "FLOAT16"), ("QUANTIZE", "FLOAT16")]


def test_float32_io_boundary_is_not_a_float_op(sparse_conv: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """With --io float32 the QUANTIZE/DEQUANTIZE at the model's own inputs/outputs are the requested boundary
    (a recipe built in code may name the I/O type as a plain string)."""
    from edgeq.quant_recipe import QuantRecipe

    model, calib, _ = sparse_conv
    artifact = edgeq.convert(model, tmp_path / "m.tflite", calib=calib,
                             recipe=QuantRecipe(io="float32"))  # type: ignore[arg-type]
    assert artifact.float_ops == ()
    parsed = tfl.parse((tmp_path / "m.tflite").read_bytes())
    assert [tfl.op_type(parsed, op) for op in parsed.subgraphs[0].operators] == ["QUANTIZE", "CONV_2D", "DEQUANTIZE"]
