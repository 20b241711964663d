"""Run onnx2tf on one ONNX model in a child process: ``python onnx_driver.py REQUEST.json``.

This file is run by path with whichever Python has onnx2tf (edgeq's own, or a separate converter environment),
so it imports nothing from edgeq: only the standard library, numpy, onnx, onnx2tf and, to check the result,
onnxruntime and a TFLite interpreter. It never touches the user's file (onnx2tf's simplifier rewrites its input
in place): it converts a copy with every input made static, then runs the ONNX model (onnxruntime) and the
float TFLite model on one seeded input and records how far apart each output is.

The request names ``onnx``, ``workdir``, ``batch_size`` and ``input_shape`` (ONNX layout, batch excluded, or
null). The answer is ``workdir/result.json``: ``status`` is ``ok``, ``missing`` (a module could not be
imported), ``refused`` (the file or its inputs are not convertible) or ``failed`` (onnx2tf gave up), with a
one-line ``message``; on ``ok`` it gives the flatbuffer's path, the inputs and outputs with their layouts.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

# Run by path, this folder (edgeq/intake, which holds edgeq's onnx.py) would come first on sys.path and
# shadow the real `onnx` package.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"  # onnx2tf downloads it when absent
FLOAT_TYPES = {1: "float32", 10: "float16"}  # onnx.TensorProto.FLOAT, FLOAT16


class Refused(Exception):
    """The model cannot be converted as asked (the user has something to fix)."""


def _channels_last(rank: int) -> list[int]:
    """onnx2tf's rule: 3D/4D/5D inputs go channels-first -> channels-last (NCW->NWC, NCHW->NHWC, ...)."""
    return [0, *range(2, rank), 1] if rank in (3, 4, 5) else list(range(rank))


def _dims(value_info: object) -> list[int | str | None]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    dims: list[int | str | None] = []
    for dim in shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return dims


def _static_shapes(model: object, batch_size: int, input_shape: list[int] | None) -> dict[str, list[int]]:
    """Each graph input's static shape: the batch fixed to ``batch_size``, other dims from ``input_shape``."""
    graph = model.graph  # type: ignore[attr-defined]
    constants = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if not inputs:
        raise Refused("the ONNX graph has no inputs")
    if input_shape is not None and len(inputs) != 1:
        raise Refused("--input-shape applies to single-input models only")
    shapes: dict[str, list[int]] = {}
    for value_info in inputs:
        tensor_type = value_info.type.tensor_type
        if not value_info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            raise Refused(f"input '{value_info.name}' has no declared shape")
        dims = _dims(value_info)
        if not dims:
            raise Refused(f"input '{value_info.name}' is a scalar; edgeq needs a batch dimension")
        shown = "x".join(str(d) if isinstance(d, int) else "?" for d in dims)
        first = dims[0]
        if isinstance(first, int) and first != batch_size:
            raise Refused(f"input '{value_info.name}' has a fixed batch of {first} ({shown}); edgeq converts "
                          f"batch {batch_size}: export the model with a batch of {batch_size} or a dynamic one")
        rest = dims[1:]
        if input_shape is not None:
            if len(input_shape) != len(rest):
                raise Refused(f"--input-shape {'x'.join(map(str, input_shape))} has rank {len(input_shape)}; input "
                              f"'{value_info.name}' ({shown}) has rank {len(rest)} without the batch "
                              "(give it in the ONNX layout, e.g. 3x224x224)")
            for axis, (have, want) in enumerate(zip(rest, input_shape, strict=True), start=1):
                if isinstance(have, int) and have != want:
                    raise Refused(f"--input-shape {'x'.join(map(str, input_shape))} disagrees with input "
                                  f"'{value_info.name}' ({shown}) at axis {axis}: give it in the ONNX layout")
            rest = list(input_shape)
        elif any(not isinstance(d, int) for d in rest):
            raise Refused(f"input '{value_info.name}' has a dynamic shape {shown}; give a static one with "
                          "--input-shape in the ONNX layout (batch excluded), e.g. 3x224x224")
        shapes[value_info.name] = [batch_size, *(int(d) for d in rest)]  # type: ignore[arg-type]
    return shapes


def _load(path: Path) -> tuple[object, bool]:
    """The model with its weights in memory, and whether they came from external data files (a model over
    2 GB, or a torch.onnx dynamo export, keeps them in ``*.onnx.data`` beside it)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
        external = any(uses_external_data(t) for t in model.graph.initializer)
        if external:
            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # protobuf's DecodeError, a missing external-data file, ...
        raise Refused(f"not a readable ONNX model ({_exception_line(exc)})") from None
    if not model.graph.node:
        raise Refused("not an ONNX model with a graph (no nodes)")
    return model, external


def _make_static(model: object, shapes: dict[str, list[int]]) -> None:
    for value_info in model.graph.input:  # type: ignore[attr-defined]
        if value_info.name in shapes:
            for dim, size in zip(value_info.type.tensor_type.shape.dim, shapes[value_info.name], strict=True):
                dim.Clear()
                dim.dim_value = size


def _save_copy(model: object, copy: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save(model, str(copy), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=copy.name + ".data")
    else:
        onnx.save(model, str(copy))


def _interpreter(tflite: Path) -> object:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    return interpreter


def _strip(name: str) -> str:
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _match_inputs(onnx_shapes: dict[str, list[int]], details: list[dict]) -> dict[str, dict]:
    """ONNX input name -> the TFLite input it became (by name, then by the channels-last shape)."""
    matched: dict[str, dict] = {}
    free = list(details)
    for name, shape in onnx_shapes.items():
        clean = name.replace(":", "_").lstrip("/")
        by_name = [d for d in free if _strip(d["name"]) in (name, clean)]
        expected = [shape[i] for i in _channels_last(len(shape))]
        by_shape = [d for d in free if list(d["shape"]) in (expected, shape)]
        pick = by_name[0] if by_name else (by_shape[0] if len(by_shape) == 1 or len(onnx_shapes) == 1 else None)
        if pick is None:
            raise RuntimeError(f"cannot tell which TFLite input ONNX input '{name}' became")
        matched[name] = pick
        free.remove(pick)
    return matched


def _perms(onnx_shape: list[int], tflite_shape: list[int]) -> list[list[int]]:
    """The axes orders (channels-last first, then unchanged) that turn an ONNX-layout array into one shaped like
    ``tflite_shape``: ``np.transpose(onnx_array, perm)``."""
    if len(onnx_shape) != len(tflite_shape):
        return []
    candidates = [_channels_last(len(onnx_shape)), list(range(len(onnx_shape)))]
    found = [p for p in candidates if list(tflite_shape) == [onnx_shape[i] for i in p]]
    return [p for i, p in enumerate(found) if p not in found[:i]]


def _perm(onnx_shape: list[int], tflite_shape: list[int]) -> list[int] | None:
    """The layout onnx2tf gave an input (its rule, channels-last, when the shape allows it); None: neither."""
    found = _perms(onnx_shape, tflite_shape)
    return found[0] if found else None


def _verify(copy: Path, tflite: Path, shapes: dict[str, list[int]], result: dict) -> None:
    """Record the TFLite inputs and outputs and their layouts; then feed one seeded input to onnxruntime and to
    the TFLite model, match each ONNX output to a TFLite output and record how far apart they are
    (``max_rel_error``: max |difference| / max |ONNX output|). ``unverified`` says why a check could not run;
    ``run_error`` that the TFLite model does not run here."""
    import numpy as np

    try:
        interpreter = _interpreter(tflite)
    except Exception as exc:  # Flex (Select TF) ops, unresolved custom ops, ...
        result["run_error"] = _exception_line(exc)
        return
    in_details = interpreter.get_input_details()  # type: ignore[attr-defined]
    out_details = interpreter.get_output_details()  # type: ignore[attr-defined]
    matched = _match_inputs(shapes, in_details)
    result["inputs"] = []
    for name, shape in shapes.items():
        detail = matched[name]
        perm = _perm(shape, list(detail["shape"]))
        result["inputs"].append({"name": name, "onnx_shape": shape, "tflite_name": detail["name"],
                                 "tflite_shape": [int(d) for d in detail["shape"]], "perm": perm})
    result["outputs"] = [{"tflite_name": d["name"], "tflite_shape": [int(x) for x in d["shape"]]}
                         for d in out_details]
    try:
        import onnxruntime as ort
    except ImportError:
        result["unverified"] = "onnxruntime is not installed in the converter's environment"
        return
    rng = np.random.default_rng(0)
    feeds = {}
    for entry in result["inputs"]:
        if entry["perm"] is None:
            result["unverified"] = f"input '{entry['name']}' has no simple layout mapping"
            return
        array = rng.uniform(0.0, 1.0, entry["onnx_shape"]).astype(np.float32)
        feeds[entry["name"]] = array
        detail = matched[entry["name"]]
        interpreter.set_tensor(detail["index"], np.transpose(array, entry["perm"]).astype(detail["dtype"]))
    try:
        interpreter.invoke()  # type: ignore[attr-defined]
    except Exception as exc:
        result["run_error"] = _exception_line(exc)
        return
    got = [interpreter.get_tensor(d["index"]) for d in out_details]  # type: ignore[attr-defined]
    try:
        session = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
        expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    except Exception as exc:
        result["unverified"] = f"onnxruntime cannot run the model: {_exception_line(exc)}"
        return
    taken: set[int] = set()
    for onnx_name, ref in expected.items():
        ref = np.asarray(ref, dtype=np.float64)
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        best: tuple[float, int, list[int]] | None = None
        for index, value in enumerate(got):
            if index in taken:
                continue
            for perm in _perms(list(ref.shape), list(value.shape)):
                back = np.transpose(np.asarray(value, dtype=np.float64), np.argsort(perm))
                error = float(np.max(np.abs(back - ref))) / max(scale, 1e-12) if ref.size else 0.0
                if best is None or error < best[0]:
                    best = (error, index, perm)
        if best is None:
            result["unverified"] = f"no TFLite output has the shape of ONNX output '{onnx_name}' {list(ref.shape)}"
            return
        error, index, perm = best
        taken.add(index)
        result["outputs"][index].update(onnx_name=onnx_name, onnx_shape=list(ref.shape), perm=perm,
                                        max_rel_error=error)
    result["unverified"] = None


def _convert(request: dict, result: dict) -> None:
    import numpy as np

    source = Path(request["onnx"])
    workdir = Path(request["workdir"])
    model, external = _load(source)
    shapes = _static_shapes(model, int(request["batch_size"]), request.get("input_shape"))
    for value_info in model.graph.input:  # type: ignore[attr-defined]
        if value_info.name in shapes and value_info.type.tensor_type.elem_type not in FLOAT_TYPES:
            raise Refused(f"input '{value_info.name}' is not float (ONNX type "
                          f"{value_info.type.tensor_type.elem_type}); edgeq quantizes float-input models")
    _make_static(model, shapes)
    copy = workdir / "model.onnx"
    _save_copy(model, copy, external)
    del model
    # onnx2tf tests its graph on 20 images it downloads unless this file is in the working directory.
    np.save(workdir / SAMPLE_FILE, np.random.default_rng(0).uniform(0, 1, (20, 128, 128, 3)).astype(np.float32))
    os.chdir(workdir)

    import onnx2tf

    result["onnx2tf_version"] = getattr(onnx2tf, "__version__", "unknown")
    out = workdir / "out"
    try:
        onnx2tf.convert(input_onnx_file_path=str(copy), output_folder_path=str(out), non_verbose=True,
                        overwrite_input_shape=[f"{name}:{','.join(map(str, s))}" for name, s in shapes.items()])
    except SystemExit as exc:  # onnx2tf reports some refusals by logging and calling sys.exit(1)
        result.update(status="failed", message=f"onnx2tf stopped (exit {exc.code}); see its log")
        return
    except Exception as exc:
        result.update(status="failed", message=_exception_line(exc))
        return
    tflites = sorted(out.glob("*_float32.tflite"))
    if not tflites:
        result.update(status="failed", message="onnx2tf wrote no *_float32.tflite")
        return
    result["tflite"] = str(tflites[0])
    _verify(copy, tflites[0], shapes, result)
    result["status"] = "ok"


def _exception_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Exception encountered when calling layer") and len(lines) > 1:
        lines = lines[1:]  # Keras wraps the real error in this header
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text())
    result: dict = {"status": "failed", "message": "the converter stopped before it finished"}
    answer = Path(request["workdir"]) / "result.json"
    try:
        _convert(request, result)
    except Refused as exc:
        result.update(status="refused", message=str(exc))
    except ImportError as exc:
        result.update(status="missing", message=f"cannot import {exc.name or 'a module'}: {exc}",
                      module=exc.name)
    except Exception as exc:
        result.update(status="failed", message=_exception_line(exc))
        traceback.print_exc()
    answer.write_text(json.dumps(result))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
