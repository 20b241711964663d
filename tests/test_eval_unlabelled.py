"""``edgeq eval`` on unlabelled data (issue 15): fidelity of every output to an FP32 reference, per condition.

The INT8 model is the committed device-suite model (the zoo CNN converted by edgeq); its FP32 source is the
demo's float model. The figures are checked against a slow reference computed here from both models' raw
outputs (dequantized by hand), not against the code under test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
INT8 = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"
FP32 = ROOT / "tests" / "data" / "demo" / "cnn_digits_float32.tflite"


def _run(model: Path, x: np.ndarray, kernels: str) -> np.ndarray:
    """Each sample through LiteRT, quantizing and dequantizing by the model's own parameters."""
    from edgeq.tflite.runtime import CpuKernels, make_interpreter

    interpreter, _ = make_interpreter(model, CpuKernels(kernels))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale) + zero, -128, 127).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float64)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        results.append(y[0])
    return np.stack(results)


def _sqnr(reference: np.ndarray, approx: np.ndarray) -> float:
    signal = sum(float(v) ** 2 for v in reference.ravel())
    noise = sum((float(a) - float(b)) ** 2 for a, b in zip(reference.ravel(), approx.ravel(), strict=True))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datagen.bundled import load_digits

    folder = tmp_path_factory.mktemp("unlabelled")
    np.savez(folder / "digits.npz", images=load_digits("test").images[:30])
    return folder / "digits.npz"


def test_unlabelled_data_without_a_reference_is_refused_in_one_line(unlabelled: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(INT8), "--data", str(unlabelled)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no labels" in err and "--reference" in err


def test_fidelity_to_the_reference_matches_a_slow_reference(unlabelled: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(INT8), "--data", str(unlabelled), "--reference", str(FP32), "--backend", "ref",
                 "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert "top1" not in document and document["n"] == 30
    (entry,) = document["fidelity"].values()
    x = ((np.load(unlabelled)["images"].astype(np.float32) - 127.5) / 127.5).astype(np.float32)
    fp32, int8 = _run(FP32, x, "cpu"), _run(INT8, x, "ref")  # eval runs its reference on cpu
    figures = entry["all"]
    assert figures["n"] == 30
    assert figures["sqnr_db"] == pytest.approx(_sqnr(fp32, int8), abs=1e-6)
    assert figures["max_abs_error"] == pytest.approx(float(np.abs(fp32 - int8).max()), rel=1e-6)
    assert figures["mean_abs_error"] == pytest.approx(float(np.abs(fp32 - int8).mean()), rel=1e-6)
    assert 15 < figures["sqnr_db"] < 60  # an INT8 model of this CNN: neither exact nor broken


def test_the_reference_itself_is_exact(unlabelled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(FP32), "--data", str(unlabelled), "--reference", str(FP32), "--backend", "cpu",
                 "--preprocess", "mean=127.5,std=127.5", "--json", "-"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["fidelity"].values()
    assert entry["all"]["exact"] and entry["all"]["sqnr_db"] is None and entry["all"]["max_abs_error"] == 0


def test_a_datagen_set_without_labels_gives_per_condition_fidelity(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "photos_set"
    assert main(["datagen", "--source", "photos", "--conditions", "original,low_light", "--n", "8",
                 "--size", "32x32", "--preprocess", "mean=127.5,std=127.5", "-o", str(data)]) == 0
    capsys.readouterr()
    assert main(["eval", str(INT8), "--data", str(data), "--reference", str(FP32), "--json", "-"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["fidelity"].values()
    assert set(entry["per_condition"]) == {"original", "low_light"}
    assert sum(c["n"] for c in entry["per_condition"].values()) == entry["all"]["n"] == 8


def test_the_table_names_each_output_and_condition(tmp_path: Path, unlabelled: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(INT8), "--data", str(unlabelled), "--reference", str(FP32), "--limit", "5",
                 "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "fidelity to cnn_digits_float32.tflite" in out and "SQNR dB" in out
    assert json.loads((tmp_path / "eval.json").read_text())["fidelity"]


def _device_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "device_tests"),
                           "--model", str(INT8), "--backend", "ref", "-k", "fidelity or accuracy", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_device_suite_judges_fidelity_on_unlabelled_data(unlabelled: Path, tmp_path: Path) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text("min_output_sqnr_db: 15\n")  # measured 23.3 dB on these 30 digits
    passed = _device_suite("--eval-set", str(unlabelled), "--reference", str(FP32), "--budget", str(budget))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed, 1 skipped" in passed.stdout  # fidelity judged; top-1 skipped: no labels
    budget.write_text("min_output_sqnr_db: {StatefulPartitionedCall_1:0: 40}\n")
    failed = _device_suite("--eval-set", str(unlabelled), "--reference", str(FP32), "--budget", str(budget))
    assert failed.returncode == 1 and "StatefulPartitionedCall_1:0: 23.3 dB < 40 dB on 30 samples" in failed.stdout


def test_device_suite_refuses_top1_budget_on_unlabelled_data(unlabelled: Path, tmp_path: Path) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text("min_top1: 0.9\n")
    run = _device_suite("--eval-set", str(unlabelled), "--budget", str(budget))
    assert run.returncode == 1 and "min_top1 needs labels" in run.stdout


def test_unlabelled_eval_runs_without_the_full_install(unlabelled: Path) -> None:
    """The slim ``edgeq[device]`` install has no TensorFlow, Keras, scikit-learn or scikit-image: eval on an
    unlabelled .npz with a reference must not import any of them."""
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('tensorflow', 'keras', 'sklearn', 'skimage'):\n"
        "        raise ImportError('blocked ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from edgeq.cli.main import main\n"
        f"sys.exit(main(['eval', {str(INT8)!r}, '--data', {str(unlabelled)!r}, '--reference', {str(FP32)!r}]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "fidelity to cnn_digits_float32.tflite" in run.stdout


def test_outputs_are_paired_by_name_then_by_position() -> None:
    """Two same-shaped outputs listed in another order by the reference are compared name to name; a model whose
    names differ is paired by position; another count or shape is refused rather than compared."""
    from edgeq.errors import InputError
    from edgeq.harness.accuracy import pair_outputs

    a, b = np.zeros((2, 3)), np.ones((2, 3))
    assert [(n, float(y.sum()), float(r.sum())) for n, y, r in pair_outputs({"x": a, "y": b}, {"y": b, "x": a})] \
        == [("x", 0.0, 0.0), ("y", 6.0, 6.0)]
    assert [n for n, _, r in pair_outputs({"p": a, "q": b}, {"x": a, "y": b}) if r is b] == ["q"]
    with pytest.raises(InputError, match="1 output"):
        pair_outputs({"x": a}, {"x": a, "y": b})
    with pytest.raises(InputError, match="shaped"):
        pair_outputs({"x": np.zeros((2, 4))}, {"x": a})
