"""ONNX intake through onnx2tf: ONNX models built here with onnx's helper API (seeded weights, no downloads)
convert to float32 flatbuffers with static NHWC inputs that compute what the ONNX model computes (a numpy
forward pass and onnxruntime are the references), and then to full-integer models; bad files and a missing
converter are one-line errors.

The conversion tests need the `onnx` extra (`pip install 'edgeq[onnx]'`, which `make` installs through
`.[dev]`) or a converter environment named by EDGEQ_ONNX2TF_PYTHON; without one they skip and say so."""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_converter import assert_full_integer

import edgeq
from edgeq.errors import ExitCode, InputError, MissingDependencyError
from edgeq.intake import onnx as onnx_intake
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

SIZE = 16
CLASSES = 5


def _onnx() -> Any:
    return pytest.importorskip("onnx", reason="the onnx package is not installed: pip install 'edgeq[onnx]'")


@pytest.fixture(scope="module")
def converter() -> str:
    try:
        return onnx_intake.converter_python()
    except MissingDependencyError as exc:
        pytest.skip(f"no ONNX converter here ({exc})")


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"W": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "B": rng.normal(0, 0.1, 8).astype(np.float32),
            "G": rng.normal(0, 0.3, (8, CLASSES)).astype(np.float32),
            "GB": rng.normal(0, 0.1, CLASSES).astype(np.float32)}


def _save(graph: Any, path: Path, opset: int = 13) -> Path:
    onnx = _onnx()
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv 3x3 (pad 1) + Relu + GlobalAveragePool + Flatten + Gemm on a 1x3x16x16 NCHW image."""
    onnx = _onnx()
    helper = onnx.helper
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "G", "GB"], ["y"])]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, CLASSES])],
        initializer=[onnx.numpy_helper.from_array(a, n) for n, a in _weights().items()])
    return _save(graph, tmp_path_factory.mktemp("onnx") / "classifier.onnx")


def _reference(x_nchw: np.ndarray) -> np.ndarray:
    """The classifier's forward pass the slow, obvious way (float64, loops over the 3x3 kernel)."""
    w = _weights()
    x = np.pad(x_nchw.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((x_nchw.shape[0], 8, SIZE, SIZE))
    for dy in range(3):
        for dx in range(3):
            patch = x[:, :, dy:dy + SIZE, dx:dx + SIZE]  # (N, 3, H, W)
            conv += np.einsum("nchw,oc->nohw", patch, w["W"][:, :, dy, dx].astype(np.float64))
    conv += w["B"].astype(np.float64)[None, :, None, None]
    pooled = np.maximum(conv, 0).mean(axis=(2, 3))
    return pooled @ w["G"].astype(np.float64) + w["GB"].astype(np.float64)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More of what exports contain, with a dynamic batch and image size (N x 3 x H x W): BatchNormalization,
    Clip (ReLU6), a depthwise Conv, HardSwish, a residual Add, MaxPool, Sigmoid, Resize, Concat, AveragePool,
    Gemm + Softmax, and a second, 4D (segmentation-like) output."""
    onnx = _onnx()
    helper = onnx.helper
    rng = np.random.default_rng(1)
    inits: dict[str, np.ndarray] = {}

    def param(name: str, shape: tuple[int, ...], scale: float = 0.3) -> str:
        inits[name] = rng.normal(0, scale, shape).astype(np.float32)
        return name

    nodes = [
        helper.make_node("Conv", ["image", param("w1", (8, 3, 3, 3)), param("b1", (8,), 0.1)], ["c1"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", param("g", (8,)), param("be", (8,)), param("mu", (8,)), "var"],
                         ["bn"], epsilon=1e-5),
        helper.make_node("Clip", ["bn", "zero", "six"], ["r6"]),
        helper.make_node("Conv", ["r6", param("dw", (8, 1, 3, 3)), param("db", (8,), 0.1)], ["d"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("HardSwish", ["d"], ["hs"]),
        helper.make_node("Add", ["hs", "r6"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["mp", param("w2", (4, 8, 1, 1)), param("b2", (4,), 0.1)], ["c2"],
                         kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["sg"]),
        helper.make_node("Resize", ["sg", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["up", "res"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["ap"], ["fl"], axis=1),
        helper.make_node("Gemm", ["fl", param("fw", (12 * 4 * 4, 6), 0.1), param("fb", (6,), 0.1)], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
        helper.make_node("Conv", ["cat", param("w3", (2, 12, 1, 1)), param("b3", (2,), 0.1)], ["seg"],
                         kernel_shape=[1, 1]),
    ]
    inits["var"] = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    inits["zero"] = np.array(0, np.float32)
    inits["six"] = np.array(6, np.float32)
    inits["scales"] = np.array([1, 1, 2, 2], np.float32)
    float_type = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("image", float_type, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("prob", float_type, ["N", 6]),
         helper.make_tensor_value_info("seg", float_type, ["N", 2, "H", "W"])],
        initializer=[onnx.numpy_helper.from_array(a, n) for n, a in inits.items()])
    return _save(graph, tmp_path_factory.mktemp("onnx") / "wide.onnx", opset=17)


def _run(flatbuffer: bytes, x: np.ndarray) -> list[np.ndarray]:
    interpreter, _ = make_interpreter(flatbuffer, CpuKernels.CPU)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _input_signature(flatbuffer: bytes) -> tuple[list[int], int]:
    graph = tfl.parse(flatbuffer).subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return [int(d) for d in signature], int(tensor.type)


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-4) -> None:
    scale = float(np.max(np.abs(want)))
    assert got.shape == want.shape
    assert float(np.max(np.abs(got.astype(np.float64) - want))) <= rel * scale, (got, want)


@pytest.mark.slow
def test_classifier_converts_to_float_nhwc_and_matches_the_numpy_reference(classifier: Path, converter: str) -> None:
    before = hashlib.sha256(classifier.read_bytes()).hexdigest()
    flatbuffer = onnx_intake.onnx_to_float_tflite(classifier, None, 1)
    assert hashlib.sha256(classifier.read_bytes()).hexdigest() == before  # onnx2tf's simplifier got a copy
    assert _input_signature(flatbuffer) == ([1, SIZE, SIZE, 3], tfl.tensor_type("FLOAT32"))  # static, float32, NHWC
    conversion = onnx_intake.convert_onnx(classifier)  # the same conversion, from the cache
    assert conversion.flatbuffer == flatbuffer
    (image,) = conversion.inputs
    assert (image.onnx_name, image.onnx_shape, image.tflite_shape, image.perm) == (
        "x", (1, 3, SIZE, SIZE), (1, SIZE, SIZE, 3), (0, 2, 3, 1))
    assert image.layout == "NHWC (from NCHW)"
    assert conversion.converter.startswith("onnx2tf ")
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
        (got,) = _run(flatbuffer, np.transpose(x, image.perm))
        _close(got, _reference(x))


@pytest.mark.slow
def test_wide_model_with_dynamic_dims_matches_onnxruntime(wide: Path, converter: str) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'edgeq[onnx]'")
    conversion = onnx_intake.convert_onnx(wide, input_shape=(3, SIZE, SIZE), batch_size=1)
    assert _input_signature(conversion.flatbuffer) == ([1, SIZE, SIZE, 3], tfl.tensor_type("FLOAT32"))
    assert conversion.unverified is None and conversion.max_rel_error is not None
    assert conversion.max_rel_error < 1e-4  # the converter's own check against onnxruntime
    ops = {tfl.op_type(tfl.parse(conversion.flatbuffer), op) for op in
           tfl.parse(conversion.flatbuffer).subgraphs[0].operators}
    assert not any(op.startswith("CUSTOM") for op in ops), ops
    by_name = {o.onnx_name: o for o in conversion.outputs}
    assert by_name["seg"].tflite_shape == (1, SIZE, SIZE, 2) and by_name["seg"].layout == "NHWC (from NCHW)"
    assert by_name["prob"].tflite_shape == (1, 6) and by_name["prob"].layout == "unchanged"
    session = ort.InferenceSession(str(wide), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).uniform(-1, 2, (1, 3, SIZE, SIZE)).astype(np.float32)
    want = dict(zip(("prob", "seg"), session.run(["prob", "seg"], {"image": x}), strict=True))
    got = _run(conversion.flatbuffer, np.transpose(x, conversion.inputs[0].perm))
    for tflite_output, layout in zip(got, conversion.outputs, strict=True):
        back = np.transpose(tflite_output, np.argsort(layout.perm))  # back to the ONNX layout
        _close(back, want[layout.onnx_name])


@pytest.mark.slow
def test_edgeq_convert_takes_an_onnx_model_to_full_integer(classifier: Path, converter: str, tmp_path: Path) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(0, 1, (16, SIZE, SIZE, 3)).astype(np.float32))  # NHWC
    out = tmp_path / "classifier_int8.tflite"
    artifact = edgeq.convert(classifier, out, calib=calib)
    assert artifact.source == str(classifier) and artifact.calibration_samples == 16
    assert_full_integer(out.read_bytes())
    nchw = tmp_path / "nchw.npy"  # what a PyTorch pipeline holds: it must be transposed to NHWC first
    np.save(nchw, np.random.default_rng(0).normal(0, 1, (16, 3, SIZE, SIZE)).astype(np.float32))
    with pytest.raises(InputError, match=r"shaped \(3, 16, 16\).*expects \(16, 16, 3\)"):
        edgeq.convert(classifier, tmp_path / "nchw_int8.tflite", calib=nchw)


def _one_line(error: pytest.ExceptionInfo[Exception]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def test_a_corrupted_onnx_file_is_a_one_line_input_error(classifier: Path, converter: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(classifier.read_bytes()[:200])
    with pytest.raises(InputError) as error:
        onnx_intake.onnx_to_float_tflite(broken, None)
    assert error.value.exit_code == ExitCode.BAD_INPUT
    assert _one_line(error).startswith(f"{broken}: not a readable ONNX model")


def test_dynamic_dims_need_an_input_shape_in_the_onnx_layout(wide: Path, converter: str) -> None:
    with pytest.raises(InputError) as error:
        onnx_intake.onnx_to_float_tflite(wide, None)
    assert "dynamic shape ?x3x?x?" in _one_line(error) and "--input-shape" in str(error.value)
    with pytest.raises(InputError) as error:  # NHWC is not the ONNX model's layout
        onnx_intake.onnx_to_float_tflite(wide, (SIZE, SIZE, 3))
    assert "disagrees with input 'image'" in _one_line(error)


def test_a_missing_converter_names_the_setup_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08")
    monkeypatch.delenv(onnx_intake.CONVERTER_ENV, raising=False)
    monkeypatch.setattr(onnx_intake, "_onnx2tf_installed", lambda: False)
    with pytest.raises(MissingDependencyError) as error:
        onnx_intake.onnx_to_float_tflite(model, None)
    assert error.value.exit_code == ExitCode.BAD_INPUT
    assert "pip install 'edgeq[onnx]'" in _one_line(error)
    monkeypatch.setenv(onnx_intake.CONVERTER_ENV, str(tmp_path / "no-such-python"))
    with pytest.raises(MissingDependencyError) as error:
        onnx_intake.onnx_to_float_tflite(model, None)
    assert f"{onnx_intake.CONVERTER_ENV}=" in _one_line(error) and "pip install 'edgeq[onnx]'" in str(error.value)


def test_a_converter_environment_without_onnx_names_the_module(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """A converter Python that cannot import onnx (a broken or half-made environment): the driver says which
    module is missing and edgeq turns it into the set-up command."""
    shadow = tmp_path / "shadow" / "onnx"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'onnx'\", name='onnx')\n")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08")
    monkeypatch.setenv(onnx_intake.CONVERTER_ENV, sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    with pytest.raises(MissingDependencyError) as error:
        onnx_intake.onnx_to_float_tflite(model, None)
    assert "cannot import onnx" in _one_line(error) and "pip install 'edgeq[onnx]'" in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_pytorch_export_converts_to_full_integer(exporter: str, converter: str, tmp_path: Path) -> None:
    """docs/onnx.md's PyTorch route: torch.onnx.export, then edgeq. Runs where torch is installed (it is not part
    of `make`: the registry's x86_64 torch is a multi-GB CUDA build)."""
    torch = pytest.importorskip("torch", reason="torch is not installed (docs/onnx.md: the PyTorch route)")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="torch.onnx's default (dynamo) exporter needs onnxscript")
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardswish(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES)).eval()
    example = torch.randn(1, 3, 32, 32)
    path = tmp_path / "net.onnx"
    options: dict[str, Any] = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False, "opset_version": 17}
    with warnings.catch_warnings():  # torch's own deprecations (the TorchScript exporter is one)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=["logits"], **options)
    conversion = onnx_intake.convert_onnx(path)
    assert conversion.inputs[0].tflite_shape == (1, 32, 32, 3)
    x = np.random.default_rng(5).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy().astype(np.float64)
    (got,) = _run(conversion.flatbuffer, np.transpose(x, (0, 2, 3, 1)))
    _close(got, want)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(0, 1, (16, 32, 32, 3)).astype(np.float32))
    edgeq.convert(path, tmp_path / "net_int8.tflite", calib=calib)
    assert_full_integer((tmp_path / "net_int8.tflite").read_bytes())
