"""``edgeq instrument``: extra min/max outputs per activation, the original outputs bit-identical, a sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.cli import main as cli
from edgeq.tflite import instrument as ins
from edgeq.tflite import metadata as md
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter, seeded_inputs

ROOT = Path(__file__).resolve().parent.parent
FLOAT = ROOT / "tests/data/demo/cnn_digits_float32.tflite"
INT8 = ROOT / "device_tests/data/cnn_digits_int8.tflite"
SAMPLES = 4


def _inputs(model: bytes, seed: int) -> list[np.ndarray]:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    detail = interpreter.get_input_details()[0]
    return seeded_inputs([(tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]))], seed)


def _outputs(model: bytes, kernels: str, x: list[np.ndarray]) -> list[np.ndarray]:
    interpreter, _ = make_interpreter(model, CpuKernels(kernels))
    interpreter.set_tensor(int(interpreter.get_input_details()[0]["index"]), x[0])
    interpreter.invoke()
    return [np.array(interpreter.get_tensor(int(d["index"]))) for d in interpreter.get_output_details()]


def _reference(model: bytes, x: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Every tensor of the plain model, kept by the slow obvious route (preserve_all_tensors, builtin kernels)."""
    interpreter, _ = make_interpreter(model, CpuKernels.CPU, preserve_all_tensors=True)
    interpreter.set_tensor(int(interpreter.get_input_details()[0]["index"]), x[0])
    interpreter.invoke()
    return {int(d["index"]): np.array(interpreter.get_tensor(int(d["index"])))
            for d in interpreter.get_tensor_details() if int(d["index"]) < len(tfl.parse(model).subgraphs[0].tensors)}


@pytest.fixture(scope="module", params=[FLOAT, INT8], ids=["float", "int8"])
def made(request: pytest.FixtureRequest) -> tuple[bytes, bytes, list[ins.ExtraOutput]]:
    plain = request.param.read_bytes()
    instrumented, extra = ins.instrument(plain, ins.activation_tensors(tfl.parse(plain)))
    return plain, instrumented, extra


@pytest.mark.parametrize("kernels", ["xnnpack", "cpu"])
def test_original_outputs_bit_identical_and_extras_are_min_max(made: Any, kernels: str) -> None:
    plain, instrumented, extra = made
    original = len(tfl.parse(plain).subgraphs[0].outputs)
    assert [e.output_index for e in extra] == list(range(original, original + len(extra)))
    for seed in range(SAMPLES):
        x = _inputs(plain, seed)
        want, got = _outputs(plain, kernels, x), _outputs(instrumented, kernels, x)
        assert len(got) == original + len(extra)
        for a, b in zip(want, got[:original], strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        reference = _reference(plain, x)
        for output in extra:
            value = got[output.output_index]
            expected = getattr(np, output.statistic)(reference[output.tensor_index])
            assert value.shape == () and value.dtype == np.dtype(output.dtype)
            if kernels == "cpu":  # the same kernels as the reference: exact
                assert value == expected, output.name
            elif output.dtype == "int8":  # XNNPACK's int8 kernels may round one step apart from the builtin ones
                assert abs(int(value) - int(expected)) <= 1, output.name
            else:
                np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5, err_msg=output.name)


def test_xnnpack_delegates_every_reduction(made: Any) -> None:
    """XNNPACK computes every min/max output: none falls back to the builtin kernels. (The INT8 demo's softmax is
    not delegated in the plain model either, so the reductions of its output form a second, small partition.)"""
    plain, instrumented, extra = made
    interpreter, _ = make_interpreter(instrumented, CpuKernels.XNNPACK)
    delegated = {int(i) for op in interpreter._get_ops_details() if op["op_name"] == "DELEGATE" for i in op["outputs"]}
    graph_outputs = [int(d["index"]) for d in interpreter.get_output_details()]
    original = len(tfl.parse(plain).subgraphs[0].outputs)
    assert {graph_outputs[e.output_index] for e in extra} <= delegated
    assert len(graph_outputs) == original + len(extra)


def test_int8_extras_carry_the_tensor_quantization(made: Any) -> None:
    _, instrumented, extra = made
    graph = tfl.parse(instrumented).subgraphs[0]
    for output in extra:
        source, added = graph.tensors[output.tensor_index], graph.tensors[int(graph.outputs[output.output_index])]
        if output.dtype == "int8":
            assert output.scale == pytest.approx(float(source.quantization.scale[0]))
            assert list(added.quantization.scale) == list(source.quantization.scale)
            assert list(added.quantization.zeroPoint) == list(source.quantization.zeroPoint)
        else:
            assert output.scale is None and output.zero_point is None


def test_an_int8_model_with_float_io_is_instrumented_on_both() -> None:
    """Float input/output around int8 internals: every activation of either type, in tensor order."""
    model = tfl.parse(INT8.read_bytes())
    model.subgraphs[0].tensors[0].type = tfl.tensor_type("FLOAT32")
    model.subgraphs[0].tensors[0].quantization = None
    found = ins.activation_tensors(model)
    assert found[0].index == 0 and found[0].dtype == "float32" and found[0].scale is None
    assert [t.dtype for t in found[1:]] == ["int8"] * 9
    assert [t.index for t in found] == sorted(t.index for t in found)


def test_signature_and_metadata_list_the_new_outputs(made: Any) -> None:
    plain, instrumented, extra = made
    (signature,) = tfl.signatures(tfl.parse(instrumented))
    (before,) = tfl.signatures(tfl.parse(plain))
    graph_outputs = [int(i) for i in tfl.parse(instrumented).subgraphs[0].outputs]
    assert {k: v for k, v in signature.outputs.items() if k in before.outputs} == before.outputs
    assert {e.name: graph_outputs[e.output_index] for e in extra}.items() <= signature.outputs.items()
    runner = make_interpreter(instrumented, CpuKernels.CPU)[0].get_signature_runner()
    x = _inputs(plain, 0)[0]
    results = runner(**{next(iter(before.inputs)): x})
    assert set(results) == set(signature.outputs)
    assert results["output_0"].tobytes() == _outputs(plain, "cpu", [x])[0].tobytes()
    metadata = md.read_metadata(instrumented)
    if md.read_metadata(plain) is not None:  # the INT8 model carries TFLite Metadata
        listed = metadata["subgraph_metadata"][0]["output_tensor_metadata"]
        assert len(listed) == len(graph_outputs)
        assert [t["name"] for t in listed[-len(extra):]] == [e.name for e in extra]
        assert metadata["subgraph_metadata"][0]["input_tensor_metadata"] == \
            md.read_metadata(plain)["subgraph_metadata"][0]["input_tensor_metadata"]
    else:
        assert metadata is None


def test_verb_writes_model_and_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m_instrumented.tflite"
    assert cli.main(["instrument", str(INT8), "-o", str(out), "--json", str(tmp_path / "doc.json")]) == 0
    sidecar = ins.InstrumentSidecar.from_dict(json.loads((tmp_path / "m_instrumented.json").read_text()))
    assert ins.InstrumentSidecar.from_dict(sidecar.to_dict()) == sidecar
    assert sidecar.sha256 == tfl.sha256(out.read_bytes()) and sidecar.source_sha256 == tfl.sha256(INT8.read_bytes())
    assert sidecar.original_outputs == 1 and len(sidecar.outputs) == 20
    assert all(o.dtype == "int8" and o.scale and o.zero_point is not None for o in sidecar.outputs)
    document = json.loads((tmp_path / "doc.json").read_text())
    assert document["kind"] == "edgeq.instrument" and document["sidecar"] == sidecar.to_dict()
    assert "10 tensors instrumented" in capsys.readouterr().out


def test_subset_by_name_and_by_pattern(tmp_path: Path) -> None:
    names = [t.name for t in ins.activation_tensors(tfl.parse(FLOAT.read_bytes()))]
    out = tmp_path / "a.tflite"
    assert cli.main(["instrument", str(FLOAT), "-o", str(out), "--tensors", f"{names[0]},{names[-1]}",
                     "--quiet"]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert [(o["tensor"], o["statistic"]) for o in sidecar["outputs"]] == [
        (names[0], "min"), (names[0], "max"), (names[-1], "min"), (names[-1], "max")]
    chosen = ins.select(ins.activation_tensors(tfl.parse(FLOAT.read_bytes())), pattern="MaxPool")
    assert [t.name for t in chosen] == [n for n in names if "MaxPool" in n] and len(chosen) == 2


@pytest.mark.parametrize("argv, message", [
    (["instrument", str(FLOAT.parent / "cnn_digits.yaml")], "is not a TFLite flatbuffer"),
    (["instrument", str(FLOAT), "--tensors", "nope"], "no activation tensor named 'nope'"),
    (["instrument", str(FLOAT), "--match", "^nothing$"], "matches no activation tensor"),
    (["instrument", str(FLOAT), "--match", "("], "is not a regular expression"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "-o", str(tmp_path / "o.tflite")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_output_never_replaces_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(FLOAT.read_bytes())
    assert cli.main(["instrument", str(model), "-o", str(model), "--force"]) == 2
    assert "edgeq never writes over its inputs" in capsys.readouterr().err
    assert model.read_bytes() == FLOAT.read_bytes()
    out = tmp_path / "o.tflite"
    out.write_bytes(b"keep")
    assert cli.main(["instrument", str(model), "-o", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_force_replaces_only_an_instrumented_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--force replaces what edgeq instrument wrote (its sidecar records the model's sha256), never a user's file
    that happens to sit at -o, nor a pair whose model was changed since."""
    out = tmp_path / "m.tflite"
    out.write_bytes(b"the user's own file")
    assert cli.main(["instrument", str(FLOAT), "-o", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeq: error: ") and len(err.splitlines()) == 1, err
    assert out.read_bytes() == b"the user's own file" and not out.with_suffix(".json").exists()
    out.unlink()
    assert cli.main(["instrument", str(FLOAT), "-o", str(out)]) == 0
    assert cli.main(["instrument", str(FLOAT), "-o", str(out), "--force"]) == 0  # edgeq's own pair: replaced
    out.write_bytes(out.read_bytes() + b"edited")  # no longer the model the sidecar describes
    edited = out.read_bytes()
    assert cli.main(["instrument", str(FLOAT), "-o", str(out), "--force"]) == 2
    assert out.read_bytes() == edited


def test_a_changed_original_output_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Verification before publishing: an instrumented model whose own output differs is not written."""
    real = ins.instrument

    def broken(data: bytes, tensors: Any) -> tuple[bytes, list[ins.ExtraOutput]]:
        out, extra = real(data, tensors)
        model = tfl.parse(out)
        graph = model.subgraphs[0]
        graph.outputs = np.asarray([int(graph.outputs[1]), *graph.outputs[1:]], dtype=np.int32)
        return tfl.serialize(model), extra

    monkeypatch.setattr(ins, "instrument", broken)
    assert cli.main(["instrument", str(FLOAT), "-o", str(tmp_path / "o.tflite")]) == 2
    assert "changed original output 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_tensors_computed_from_constants_alone_are_not_instrumented() -> None:
    """The shipped MediaPipe detector dequantizes its float16 weights at run time: those tensors are the same at
    every inference (nothing to log), and reducing them cost more than the network (x1.72 on XNNPACK)."""
    parsed = tfl.parse((ROOT / "tests/data/mediapipe/face_detection_short_range.tflite").read_bytes())
    constant = set(tfl.constant_derived(parsed))
    producers = tfl.producers(parsed)
    assert constant and {producers[(0, i)] for i in constant} <= {"DEQUANTIZE", "DENSIFY"}
    instrumented = {t.index for t in ins.activation_tensors(parsed)}
    assert instrumented and not instrumented & constant
    assert len(instrumented) + len(constant) == len(
        [i for i in tfl.computed_tensors(parsed.subgraphs[0])
         if tfl.tensor_type_name(int(parsed.subgraphs[0].tensors[i].type)) == "FLOAT32"])
