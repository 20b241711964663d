"""Quantize one float .tflite with Google's ai-edge-quantizer (static int8 recipe); run in AEQ's own environment.

Usage: AEQ_PYTHON benchmarks/aeq_driver.py MODEL.tflite CALIB.npy OUT.tflite

CALIB.npy holds calibration samples already in the model's input units (float32, (N, ...) without the batch
axis). The driver imports only ai_edge_quantizer and numpy, never edgeq, so that it runs from a separate
virtual environment (docs/real_models.md says how it was made). Steps, all public API:
``quantizer.Quantizer(model_bytes)``, ``load_quantization_recipe(recipe.static_wi8_ai8())``,
``calibrate({signature: [{input: sample}, ...]})``, ``quantize(result)``, ``export_model(OUT)``.
A model without a signature gets none from AEQ's calibrator, so it is called with the signature key the
LiteRT interpreter reports (``None`` for the default signature when there is none). Prints one JSON line:
{"ok", "seconds" (calibrate + quantize + export), "bytes", "error" (first line), "versions"}.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path


def _versions() -> dict[str, str]:
    found = {}
    for name in ("ai-edge-quantizer", "ai-edge-litert", "numpy", "tensorflow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def quantize(model: Path, calib: Path, out: Path) -> dict[str, object]:
    import numpy as np
    from ai_edge_litert import interpreter as litert
    from ai_edge_quantizer import quantizer, recipe

    samples = np.load(calib)
    content = model.read_bytes()
    interpreter = litert.Interpreter(model_content=content)
    signatures = interpreter.get_signature_list()
    key = next(iter(signatures)) if signatures else None
    if key is not None:
        names = list(interpreter.get_signature_runner(key).get_input_details())
    else:
        names = [str(d["name"]) for d in interpreter.get_input_details()]
    if len(names) != 1:
        raise ValueError(f"the driver feeds single-input models only, this one has inputs {names}")
    started = time.perf_counter()
    qt = quantizer.Quantizer(content)
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    dataset = [{names[0]: sample[None].astype(np.float32)} for sample in samples]
    calibration = qt.calibrate({key: dataset})  # type: ignore[dict-item]
    result = qt.quantize(calibration, enable_progress_report=False)
    result.export_model(str(out), overwrite=True)
    return {"ok": True, "seconds": time.perf_counter() - started, "bytes": out.stat().st_size,
            "signature": key, "input": names[0]}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    model, calib, out = (Path(a) for a in argv)
    try:
        report = quantize(model, calib, out)
    except Exception as exc:  # every failure is a finding to report, not a crash of the benchmark
        traceback.print_exc()
        report = {"ok": False, "error": _first_line(exc)}
    report["versions"] = _versions()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
