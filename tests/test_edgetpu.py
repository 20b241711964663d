"""Edge TPU: Coral's op table, the partition prediction on real INT8 models, and edgetpu_compiler logs.

The models are tiny Keras nets converted by the real edgeq converter. The compiler logs under
tests/data/edgetpu/ are real edgetpu_compiler output recorded from public repositories (each file
names its source). The compiler cannot be installed here, so the subprocess path is exercised with a
fake ``edgetpu_compiler`` script that replays a recorded log.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeq
from edgeq.artifacts import Severity
from edgeq.errors import BackendUnavailable, InputError
from edgeq.quant_recipe import QuantRecipe
from edgeq.spec import edgetpu_log
from edgeq.spec.edgetpu import edgetpu_findings, predict_partition
from edgeq.spec.edgetpu_log import CompilerReport, find_compiler, memory_bytes, parse_compiler_log, run_compiler
from edgeq.spec.edgetpu_ops import _CHECKS, EDGETPU_OPS
from edgeq.tflite import model as tfl

DATA = Path(__file__).parent / "data" / "edgetpu"
RECORDED = {name: DATA / f"recorded_{name}.log" for name in ("full_mapping", "partial_mapping",
                                                             "first_unsupported", "failed")}


def recorded(name: str) -> str:
    """The recorded compiler text, without our '#' attribution header."""
    lines = RECORDED[name].read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


# --- tiny real INT8 models -------------------------------------------------------------------------------------

def _supported_net(keras: Any) -> Any:
    """Only ops from Coral's table: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, MEAN, FULLY_CONNECTED, SOFTMAX."""
    inp = keras.Input((8, 8, 1), batch_size=1)
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(8, 1, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))


def _gelu_net(keras: Any) -> Any:
    """A GELU (absent from Coral's table) between supported convolutions."""
    inp = keras.Input((8, 8, 1), batch_size=1)
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.Conv2D(4, 3, activation="gelu")(h)
    h = keras.layers.Conv2D(4, 1, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))


def _rank5_net(keras: Any) -> Any:
    """A 5-D [1, 2, 3, 6, 4] activation: four dimensions larger than 1."""
    inp = keras.Input((8, 8, 1), batch_size=1)
    a = keras.layers.Reshape((2, 3, 6, 4))(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    b = keras.layers.Reshape((2, 3, 6, 4))(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    h = keras.layers.Reshape((12, 6, 4))(keras.layers.Concatenate(axis=1)([a, b]))
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each net converted once: int8 I/O, plus float I/O and a plain float flatbuffer of the supported net."""
    import keras

    from edgeq.intake.load import keras_to_float_tflite

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("edgetpu-models")
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32))
    built = {"supported": _supported_net(keras), "gelu": _gelu_net(keras), "rank5": _rank5_net(keras)}
    paths = {}
    for name, net in built.items():
        net.save(root / f"{name}.keras")
        paths[name] = root / f"{name}.tflite"
        edgeq.convert(root / f"{name}.keras", paths[name], calib=calib, limit=16)
    paths["supported_float_io"] = root / "supported_float_io.tflite"
    edgeq.convert(root / "supported.keras", paths["supported_float_io"], calib=calib, limit=16,
                  recipe=QuantRecipe(io="float32"))
    paths["float"] = root / "float.tflite"
    paths["float"].write_bytes(keras_to_float_tflite(built["supported"]))
    return paths


def load(path: Path) -> Any:
    return tfl.parse(path.read_bytes())


def kinds(model: Any) -> list[str]:
    return [tfl.op_type(model, op) for op in model.subgraphs[0].operators]


def errors_and_warnings(model: Any) -> list[Any]:
    return [f for f in edgetpu_findings(model) if f.severity is not Severity.INFO]


# --- the table ---------------------------------------------------------------------------------------------------

def test_table_is_coral_list_in_tflite_names() -> None:
    coral_names = {op.coral_name for op in EDGETPU_OPS.values()}
    assert len(coral_names) == 40  # the 40 rows of Coral's "Supported operations" table
    for name, op in EDGETPU_OPS.items():
        tfl.builtin_code(name)  # a real TFLite BuiltinOperator
        assert set(op.checks) <= set(_CHECKS), name
    assert {"RSQRT", "SQUARED_DIFFERENCE", "TRANSPOSE", "STRIDED_SLICE", "QUANTIZE"} <= set(EDGETPU_OPS)
    assert not {"GELU", "BATCH_MATMUL", "LEAKY_RELU", "HARD_SWISH", "DEQUANTIZE", "GATHER"} & set(EDGETPU_OPS)


def test_table_agrees_with_recorded_compiler_logs() -> None:
    """Ops a real compiler mapped are in the table; ops it called 'Operation not supported' are not."""
    statuses = [row for name in RECORDED for row in parse_compiler_log(recorded(name)).per_op]
    mapped = {op for op, _, status in statuses if status == edgetpu_log.MAPPED}
    unsupported = {op for op, _, status in statuses if status == "Operation not supported"}
    assert mapped and unsupported == {"LEAKY_RELU"}
    assert mapped <= set(EDGETPU_OPS)
    assert not unsupported & set(EDGETPU_OPS)


# --- partition prediction on real models ----------------------------------------------------------------------

@pytest.mark.slow
def test_fully_supported_net_maps_every_op(models: dict[str, Path]) -> None:
    model = load(models["supported"])
    assert kinds(model) == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED",
                            "SOFTMAX"]
    prediction = predict_partition(model)
    assert prediction.first_unsupported is None
    assert (prediction.tpu_ops, prediction.cpu_ops) == (7, 0)
    assert all(p.on_tpu and p.reason == "supported" for p in prediction.placements)
    assert [p.index for p in prediction.placements] == list(range(7))
    assert errors_and_warnings(model) == []


@pytest.mark.slow
def test_float_io_boundary_conversions_run_on_cpu_without_splitting(models: dict[str, Path]) -> None:
    model = load(models["supported_float_io"])
    prediction = predict_partition(model)
    ops = kinds(model)
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    assert prediction.first_unsupported is None
    assert not prediction.placements[0].on_tpu and not prediction.placements[-1].on_tpu
    assert "float input boundary" in prediction.placements[0].reason
    assert "float output boundary" in prediction.placements[-1].reason
    assert all(p.on_tpu for p in prediction.placements[1:-1])
    assert (prediction.tpu_ops, prediction.cpu_ops) == (len(ops) - 2, 2)
    findings = edgetpu_findings(model)
    assert [f.rule_id for f in findings] == ["edgetpu.float-boundary"] * 2
    assert {f.severity for f in findings} == {Severity.INFO}


@pytest.mark.slow
def test_unsupported_op_sends_it_and_every_later_op_to_cpu(models: dict[str, Path]) -> None:
    model = load(models["gelu"])
    ops = kinds(model)
    gelu = ops.index("GELU")
    assert gelu == 2 and "CONV_2D" in ops[gelu + 1:]  # a supported op after the unsupported one
    prediction = predict_partition(model)
    assert prediction.first_unsupported == gelu
    assert [p.on_tpu for p in prediction.placements] == [True] * gelu + [False] * (len(ops) - gelu)
    assert prediction.placements[gelu].rule_id == "edgetpu.unsupported-op"
    assert "not in Coral's supported-op table" in prediction.placements[gelu].reason
    for placement in prediction.placements[gelu + 1:]:
        assert placement.reason == "after first unsupported op 2 (GELU)"
    assert (prediction.tpu_ops, prediction.cpu_ops) == (2, len(ops) - 2)

    findings = errors_and_warnings(model)
    assert [(f.rule_id, f.severity, f.op_index, f.op_type) for f in findings] == [
        ("edgetpu.unsupported-op", Severity.ERROR, 2, "GELU"),
        ("edgetpu.cpu-fallback", Severity.WARNING, 2, "GELU"),
    ]
    assert "op 2 (GELU)" in findings[0].message and "every op after it" in findings[0].message
    later = len(ops) - gelu - 1
    assert f"{later} later op(s) run on the CPU, {later} of them otherwise supported" in findings[1].message


@pytest.mark.slow
def test_unquantized_model_runs_entirely_on_cpu(models: dict[str, Path]) -> None:
    model = load(models["float"])
    prediction = predict_partition(model)
    assert prediction.placements and prediction.tpu_ops == 0
    assert prediction.cpu_ops == len(model.subgraphs[0].operators)
    assert prediction.first_unsupported == 0
    assert all("not quantized" in p.reason for p in prediction.placements)
    findings = edgetpu_findings(model)
    assert [(f.rule_id, f.severity) for f in findings] == [("edgetpu.not-quantized", Severity.ERROR)]


@pytest.mark.slow
def test_dynamic_shape_signature_ends_the_tpu_segment(models: dict[str, Path]) -> None:
    model = load(models["supported"])
    graph = model.subgraphs[0]
    pooled = graph.tensors[graph.operators[2].outputs[0]]  # MAX_POOL_2D output, read by op 3
    pooled.shapeSignature = np.array([-1, *pooled.shape[1:]], dtype=np.int32)
    model = tfl.parse(tfl.serialize(model))
    prediction = predict_partition(model)
    assert prediction.first_unsupported == 2
    assert [p.on_tpu for p in prediction.placements] == [True, True] + [False] * 5
    assert prediction.placements[2].rule_id == "edgetpu.dynamic-shape"
    assert prediction.placements[3].reason.startswith("after first unsupported op 2 (MAX_POOL_2D)")
    dynamic = [f for f in edgetpu_findings(model) if f.rule_id == "edgetpu.dynamic-shape"]
    assert len(dynamic) == 1  # the tensor is named once, though two ops touch it
    assert dynamic[0].severity is Severity.ERROR and dynamic[0].op_index == 2
    assert dynamic[0].tensor == tfl.tensor_name(pooled) and dynamic[0].actual.startswith("[-1")


@pytest.mark.slow
def test_more_than_three_non_unit_dims_is_unsupported(models: dict[str, Path]) -> None:
    model = load(models["rank5"])
    prediction = predict_partition(model)
    first = prediction.first_unsupported
    assert first is not None and prediction.placements[first].op_type == "RESHAPE"
    assert prediction.placements[first].rule_id == "edgetpu.rank"
    assert all(p.on_tpu for p in prediction.placements[:first])
    later = prediction.placements[first + 1:]
    assert any(p.op_type == "CONV_2D" for p in later) and not any(p.on_tpu for p in later)
    errors = [f for f in edgetpu_findings(model) if f.severity is Severity.ERROR]
    assert [(f.rule_id, f.op_index) for f in errors] == [("edgetpu.rank", first)]
    assert errors[0].actual == "[1, 2, 3, 6, 4]"


def _fuse_relu_into_pool(model: Any) -> None:
    model.subgraphs[0].operators[2].builtinOptions.fusedActivationFunction = 1


def _dilate_conv_in_y(model: Any) -> None:
    model.subgraphs[0].operators[0].builtinOptions.dilationHFactor = 2


def _mean_over_batch(model: Any) -> None:
    graph = model.subgraphs[0]
    axes = graph.tensors[graph.operators[4].inputs[1]]
    model.buffers[axes.buffer].data = np.frombuffer(np.array([0, 1], dtype="<i4").tobytes(), dtype=np.uint8)


def _runtime_axes(model: Any) -> None:
    graph = model.subgraphs[0]
    graph.tensors[graph.operators[4].inputs[1]].buffer = 0  # buffer 0 is the empty sentinel


def _int16_activation(model: Any) -> None:
    graph = model.subgraphs[0]
    graph.tensors[graph.operators[0].outputs[0]].type = tfl.tensor_type("INT16")


@pytest.mark.slow
@pytest.mark.parametrize(("edit", "op_index", "rule_id", "words"), [
    (_fuse_relu_into_pool, 2, "edgetpu.limitation", "fused RELU activation"),
    (_dilate_conv_in_y, 0, "edgetpu.limitation", "dilation differs in y (2) and x (1)"),
    (_mean_over_batch, 4, "edgetpu.limitation", "reduces over the batch dimension"),
    (_runtime_axes, 4, "edgetpu.non-constant-parameter", "must be compile-time constants"),
    (_int16_activation, 0, "edgetpu.not-8bit", "is int16, not 8-bit"),
])
def test_documented_limitations_are_checked(models: dict[str, Path], edit: Callable[[Any], None], op_index: int,
                                            rule_id: str, words: str) -> None:
    model = load(models["supported"])
    edit(model)
    model = tfl.parse(tfl.serialize(model))
    prediction = predict_partition(model)
    assert prediction.first_unsupported == op_index
    assert prediction.placements[op_index].rule_id == rule_id
    assert words in prediction.placements[op_index].reason
    assert all(p.on_tpu for p in prediction.placements[:op_index])
    assert not any(p.on_tpu for p in prediction.placements[op_index:])
    first_error = next(f for f in edgetpu_findings(model) if f.severity is Severity.ERROR)
    assert (first_error.rule_id, first_error.op_index) == (rule_id, op_index)


def test_model_without_subgraphs_is_an_input_error() -> None:
    model = tfl.schema().ModelT()
    model.subgraphs = []
    with pytest.raises(InputError, match="no subgraphs"):
        predict_partition(model)


# --- recorded compiler logs -------------------------------------------------------------------------------------

def test_memory_units_are_binary() -> None:
    assert memory_bytes("0.00", "B") == 0
    assert memory_bytes("3.00", "KiB") == 3072
    assert memory_bytes("3.38", "MiB") == round(3.38 * 1024 * 1024)


def test_parse_full_mapping_operation_log() -> None:
    report = parse_compiler_log(recorded("full_mapping"))
    assert report.compiled and report.error is None
    assert report.compiler_version == "16.0.384591198"
    assert report.per_op == (("CONV_2D", 35, "Mapped to Edge TPU"), ("SOFTMAX", 1, "Mapped to Edge TPU"),
                             ("ADD", 10, "Mapped to Edge TPU"), ("FULLY_CONNECTED", 1, "Mapped to Edge TPU"),
                             ("AVERAGE_POOL_2D", 1, "Mapped to Edge TPU"),
                             ("DEPTHWISE_CONV_2D", 17, "Mapped to Edge TPU"))
    assert (report.ops_on_tpu, report.ops_on_cpu) == (65, 0)
    assert report.output_model == "test/model/compiled/mobilenet_v2_1.0_224_inat_bird_quant_edgetpu.tflite"
    assert report.subgraphs is None and report.on_chip_bytes is None  # the operation log has no summary


def test_parse_partial_mapping_stdout() -> None:
    report = parse_compiler_log(recorded("partial_mapping"))
    assert report.compiled and report.compile_ms == 3173
    assert (report.ops_on_tpu, report.ops_on_cpu, report.total_ops, report.subgraphs) == (289, 5, 294, 2)
    assert report.on_chip_bytes == round(6.08 * 1024**2) == 6375342
    assert report.on_chip_remaining_bytes == 0
    assert report.off_chip_bytes == round(1.70 * 1024**2) == 1782579
    assert report.output_model == "yolov5s-int8-224_edgetpu.tflite"
    assert len(report.per_op) == 17
    assert report.per_op[1] == ("CONCATENATION", 1, "Operation is otherwise supported, but not mapped due to "
                                                    "some unspecified limitation")
    assert report.per_op[-1] == ("CONV_2D", 62, "Mapped to Edge TPU")
    assert sum(count for _, count, _ in report.per_op) == 294
    assert sum(count for _, count, status in report.per_op if status == edgetpu_log.MAPPED) == 289


def test_parse_first_unsupported_stdout() -> None:
    report = parse_compiler_log(recorded("first_unsupported"))
    assert report.compiled and report.compiler_version == "15.0.340273435" and report.compile_ms == 577
    assert (report.ops_on_tpu, report.ops_on_cpu, report.total_ops, report.subgraphs) == (2, 34, 36, 1)
    assert (report.on_chip_bytes, report.off_chip_bytes) == (3072, 0)
    assert report.on_chip_remaining_bytes == round(7.67 * 1024**2)
    assert report.output_model == "/home/yolo/yolov3-tiny_int8_edgetpu.tflite"
    assert ("LEAKY_RELU", 11, "Operation not supported") in report.per_op
    assert ("RESIZE_NEAREST_NEIGHBOR", 1, "Operation version not supported") in report.per_op
    after_split = sum(c for _, c, s in report.per_op if s == "More than one subgraph is not supported")
    assert after_split == 6 + 1 + 12 + 1


def test_parse_failed_compilation() -> None:
    report = parse_compiler_log(recorded("failed"))
    assert not report.compiled
    assert report.per_op == () and report.ops_on_tpu is None and report.output_model is None
    assert "unresolved custom op: Atan" in report.error


def test_parse_tolerates_unrelated_text() -> None:
    report = parse_compiler_log("hello\n\nnothing to see\n")
    assert report == CompilerReport(compiled=False, ops_on_tpu=None, ops_on_cpu=None, subgraphs=None,
                                    on_chip_bytes=None, off_chip_bytes=None, per_op=(), output_model=None,
                                    raw_log="hello\n\nnothing to see\n")


# --- running the compiler ------------------------------------------------------------------------------------------

@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Put a FAKE ``edgetpu_compiler`` (a script written by the test) first on PATH."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def install(script: str) -> Path:
        path = bin_dir / "edgetpu_compiler"
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    return install


def _replay_script(log: str, args_file: Path, status: int = 0) -> str:
    """A fake compiler that records its arguments and prints a recorded log (header stripped)."""
    return (f"#!{sys.executable}\n"
            "# FAKE edgetpu_compiler for tests: replays a recorded real compiler log.\n"
            "import sys\n"
            f"open({str(args_file)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
            f"lines = open({str(RECORDED[log])!r}).read().splitlines(keepends=True)\n"
            "sys.stdout.write(''.join(line for line in lines if not line.startswith('#')))\n"
            f"sys.exit({status})\n")


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A valid (empty) TFLite flatbuffer: all run_compiler itself reads of a model."""
    model = tfl.schema().ModelT()
    model.version, model.subgraphs, model.buffers = 3, [], [tfl.schema().BufferT()]
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tfl.serialize(model))
    return path


def test_no_compiler_on_path_is_backend_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    tiny_model: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert find_compiler() is None
    with pytest.raises(BackendUnavailable, match=r"edgetpu_compiler is not on PATH.*apt"):
        run_compiler(tiny_model, tmp_path / "out")


def test_run_compiler_parses_what_the_compiler_prints(fake_bin: Callable[[str], Path], tmp_path: Path,
                                                      tiny_model: Path) -> None:
    args_file = tmp_path / "args.txt"
    fake = fake_bin(_replay_script("partial_mapping", args_file))
    assert find_compiler() == str(fake)
    report = run_compiler(tiny_model, tmp_path / "out")
    assert report == parse_compiler_log(recorded("partial_mapping"))
    assert (report.ops_on_tpu, report.ops_on_cpu, report.subgraphs) == (289, 5, 2)
    assert args_file.read_text().splitlines() == ["-s", "-o", str(tmp_path / "out"), str(tiny_model)]
    assert (tmp_path / "out").is_dir()


def test_run_compiler_reports_a_rejected_model(fake_bin: Callable[[str], Path], tmp_path: Path,
                                               tiny_model: Path) -> None:
    fake_bin(_replay_script("failed", tmp_path / "args.txt", status=1))
    report = run_compiler(tiny_model, tmp_path / "out")
    assert not report.compiled
    assert "unresolved custom op: Atan" in report.error


def test_run_compiler_stops_a_hung_compiler(fake_bin: Callable[[str], Path], tmp_path: Path,
                                            tiny_model: Path) -> None:
    pid_file = tmp_path / "pid"
    fake_bin(f"#!/bin/sh\n# FAKE edgetpu_compiler for tests: hangs.\necho $$ > {pid_file}\necho starting\n"
             "exec sleep 30\n")
    with pytest.raises(BackendUnavailable, match=r"did not finish within 0\.5 s.*'starting'"):
        run_compiler(tiny_model, tmp_path / "out", timeout_s=0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_run_compiler_that_cannot_start(fake_bin: Callable[[str], Path], tmp_path: Path, tiny_model: Path) -> None:
    fake_bin("#!/nonexistent/interpreter\n")
    with pytest.raises(BackendUnavailable, match="cannot run"):
        run_compiler(tiny_model, tmp_path / "out")


def test_run_compiler_refuses_bad_inputs(fake_bin: Callable[[str], Path], tmp_path: Path) -> None:
    fake_bin(_replay_script("full_mapping", tmp_path / "args.txt"))
    with pytest.raises(InputError, match="no such model file"):
        run_compiler(tmp_path / "missing.tflite", tmp_path / "out")
    not_a_model = tmp_path / "notes.tflite"
    not_a_model.write_text("not a flatbuffer")
    with pytest.raises(InputError, match="not a TFLite flatbuffer"):
        run_compiler(not_a_model, tmp_path / "out")
    assert not (tmp_path / "args.txt").exists()  # refused before the compiler ran
