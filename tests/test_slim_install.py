"""The slim install works on its own: a venv with only the wheel and ``[device-test]`` (no TensorFlow, no
scikit-learn) checks, benchmarks and evaluates a model and runs the shipped device suite, and every feature
that needs a bigger extra says which one (exit 2), never ``internal error: ModuleNotFoundError`` (exit 4).

One venv per interpreter, built from a wheel of this working tree; pip installs from the registry or its cache
(about 10 s warm). The interpreters are this one (3.11 here) and the newest other supported version found on
the machine (3.13, else 3.12, else 3.11; on PATH, under pyenv, or listed in ``EDGEQ_TEST_PYTHONS``), so the
device side is proven on two Python versions; without one that case is skipped and says so. The first tests
need no venv: the CLI's safety net for an optional import nobody checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.cli.main import main
from edgeq.extras import OPTIONAL, missing_dependency

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "device_tests" / "data" / "cnn_digits_int8.tflite"
DIGITS = ROOT / "device_tests" / "data" / "digits_test.npz"
REFERENCE = ROOT / "tests" / "data" / "demo" / "cnn_digits_float32.tflite"
#: What the slim venv must not be able to import.
HEAVY = ("tensorflow", "keras", "sklearn", "skimage", "cv2", "albumentations", "PIL", "matplotlib")
#: Top-level folders not copied to build the wheel: large, generated, or not part of the distribution.
NOT_SOURCES = {".venv", ".git", "out", "build", "dist", "edgeq.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis",
               "tests", "benchmarks"}


def _not_sources(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n in NOT_SOURCES)}


def test_an_unchecked_optional_import_is_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Resizing to --preprocess size= imports pillow with no require_extra in front: the CLI still names the extra."""
    monkeypatch.setitem(sys.modules, "PIL", None)
    code = main(["eval", str(MODEL), "--data", str(DIGITS), "--limit", "2",
                 "--preprocess", "size=16x16,mean=127.5,std=127.5"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "edgeq: error: this needs the 'PIL' package (pillow)" in err and "pip install 'edgeq[full]'" in err


def test_only_absent_registered_modules_become_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_dependency(ModuleNotFoundError("x", name="edgeq.nothing")) is None  # a bug: exit 4
    # skimage is installed here: a missing part of it is a broken install or a bug, and the extra would not help
    assert missing_dependency(ModuleNotFoundError("x", name="skimage.no_such_part")) is None
    monkeypatch.setitem(sys.modules, "skimage", None)  # as on the slim install
    error = missing_dependency(ModuleNotFoundError("x", name="skimage.data"))
    assert error is not None and "pip install 'edgeq[full]'" in str(error)
    assert {package.extra for package in OPTIONAL.values()} <= {"device", "device-test", "tflm", "full", "onnx", "ray"}


THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: The other Python versions edgeq supports (pyproject's requires-python), newest first.
OTHER_PYTHONS = tuple(v for v in ("3.13", "3.12", "3.11") if v != THIS_PYTHON)


def _runs(executable: str) -> str | None:
    """``major.minor`` of an interpreter that starts (a pyenv shim for a version not selected does not)."""
    try:
        found = subprocess.run([executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return found.stdout.strip() if found.returncode == 0 else None


def other_python() -> str | None:
    """The newest supported Python other than this one that runs here, or None."""
    listed = [p for p in os.environ.get("EDGEQ_TEST_PYTHONS", "").split(os.pathsep) if p]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for version in OTHER_PYTHONS:
        candidates = [*listed, shutil.which(f"python{version}") or "",
                      *sorted(str(p) for p in pyenv_root.glob(f"versions/{version}*/bin/python{version}"))]
        for candidate in candidates:
            if candidate and _runs(candidate) == version:
                return candidate
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this working tree, built once for both venvs (it is pure Python: one wheel fits every version)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)  # setuptools writes build/ next to its sources
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "wheel"), str(source)])
    (built,) = (work / "wheel").glob("edgeq-*-py3-none-any.whl")
    return built


@pytest.fixture(scope="module", params=["this", "other"])
def slim(request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv holding the wheel with [device-test] and nothing else."""
    python = sys.executable if request.param == "this" else other_python()
    if python is None:
        pytest.skip(f"no Python {' or '.join(OTHER_PYTHONS)} on this machine (set EDGEQ_TEST_PYTHONS to one); "
                    f"the slim install was proven on {THIS_PYTHON} only")
    work = tmp_path_factory.mktemp("slim")
    run([python, "-m", "venv", "--without-pip", str(work / "venv")])  # this pip installs into it: 6 s less
    bin_dir = work / "venv" / "bin"
    assert _runs(str(bin_dir / "python")) == _runs(python)
    run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q", f"{wheel}[device-test]"])
    return bin_dir


def run(argv: list[str], cwd: Path | None = None, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=cwd)
    if expect is not None:
        assert result.returncode == expect, f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def edgeq(slim: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    return run([str(slim / "edgeq"), *args], cwd=slim, expect=expect)


def test_slim_venv_has_no_heavy_package(slim: Path) -> None:
    code = ("import importlib.util as u, sys\n"
            f"print(' '.join(m for m in {HEAVY!r} if u.find_spec(m)))")
    assert run([str(slim / "python"), "-c", code], cwd=slim).stdout.strip() == ""


def test_slim_venv_checks_benchmarks_and_evaluates(slim: Path) -> None:
    installed = run([str(slim / "python"), "-c", "import edgeq_device_tests as s; print(s.__file__)"],
                    cwd=slim).stdout.strip()
    shipped = Path(installed).parent / "data"
    assert "site-packages" in installed and (shipped / "digits_test.npz").is_file()
    assert "PASS" in edgeq(slim, "check", str(MODEL)).stdout
    bench = edgeq(slim, "bench", str(MODEL), "--backend", "xnnpack", "--warmup-runs", "1", "--runs", "3",
                  "--min-seconds", "0").stdout
    assert "cnn_digits_int8.tflite" in bench and "xnnpack" in bench
    evaluated = edgeq(slim, "eval", str(MODEL), "--data", str(shipped / "digits_test.npz")).stdout
    assert "98.33%" in evaluated  # the committed CNN on the 360 shipped digits


@pytest.mark.parametrize(("args", "extra"), [
    (["eval", str(MODEL), "--data", "digits:test"], "full"),
    (["eval", str(MODEL), "--data", "lfw:test"], "full"),
    (["validate", str(REFERENCE), "--calib", str(DIGITS), "--eval", str(DIGITS), "-o", "val"], "full"),
    (["coverage", str(REFERENCE), "--calib", str(DIGITS), "--production", str(DIGITS), "-o", "cov"], "full"),
    (["datagen", "--source", str(DIGITS), "-o", "set"], "full"),
])
def test_slim_venv_names_the_extra(slim: Path, args: list[str], extra: str) -> None:
    err = edgeq(slim, *args, expect=2).stderr
    assert err.startswith("edgeq: error: ") and len(err.strip().splitlines()) == 1, err
    assert f"pip install 'edgeq[{extra}]'" in err


def test_slim_venv_runs_the_shipped_device_suite(slim: Path) -> None:
    """On the shipped CNN and its digits, with the shipped CI budget judged on the shipped recordings."""
    import json

    suite = Path(run([str(slim / "python"), "-c", "import edgeq_device_tests as s; print(s.__file__)"],
                     cwd=slim).stdout.strip()).parent
    result = edgeq(slim, "device-test", "--backend", "xnnpack", "--reference", str(REFERENCE),
                   "--budget", str(suite / "budget.ci.yaml"),
                   "--latency-from", str(suite / "data" / "recorded_bench_cnn_digits_int8_quiet.json"),
                   "-q", "--json", "-")
    document = json.loads(result.stdout)
    assert document["kind"] == "edgeq.device-test" and document["runtime"]["packages"]["tensorflow"] == "absent"
    assert document["counts"] == {"passed": 6, "failed": 0, "skipped": 0, "error": 0}, document["tests"]
    assert document["budget"]["verdict"] == "pass"
