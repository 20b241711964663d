"""The distribution lists every package, and the slim base install needs no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("edgeq", "datagen"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    assert (ROOT / "models" / "__init__.py").exists()
    found.add("edgeq_models")
    assert (ROOT / "device_tests" / "__init__.py").exists()
    found.add("edgeq_device_tests")
    assert listed == found


def test_base_dependencies_are_slim() -> None:
    base = " ".join(PYPROJECT["project"]["dependencies"])
    assert "tensorflow" not in base
    device = " ".join(PYPROJECT["project"]["optional-dependencies"]["device"])
    assert "ai-edge-litert" in device and "tensorflow" not in device


def test_every_dependency_is_bounded() -> None:
    deps = PYPROJECT["project"]["dependencies"] + [
        d for extra in PYPROJECT["project"]["optional-dependencies"].values() for d in extra
        if not d.startswith("edgeq[")
    ]
    for dep in deps:
        assert "<" in dep or "==" in dep, f"{dep} has no upper bound"


def test_cli_starts_without_tensorflow() -> None:
    """`edgeq --help` and `zoo list` must not pay for (or need) a TensorFlow import."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from edgeq.cli.main import main\n"
        "assert main(['zoo', 'list', '--json']) == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_checker_runs_without_tensorflow(tmp_path: Path) -> None:
    """`edgeq check` is for slim CI images and devices: TensorFlow must not be needed (or imported)."""
    model = ROOT / "tests" / "data" / "tiny_int8.tflite"
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from edgeq.cli.main import main\n"
        f"assert main(['check', {str(model)!r}, '--json']) == 0\n"
        f"assert main(['check', {str(model)!r}, '--target', 'tflm']) == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
