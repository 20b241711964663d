"""The demo's artifacts stay byte-identical across refactors (issue 14).

``edgeq build`` runs the demo recipe (docs/examples/cnn_digits.yaml: the same calibration and evaluation
sets, methods, targets and gates) on the demo's own float model, committed in tests/data/demo so no zoo
training is needed. Every deterministic artifact is hashed and compared with digests recorded by the code
as it was before the refactor (``python tests/test_demo_bytes.py FILE`` records them): the INT8 model, its
sidecar, every method's model and sidecar, validation.json, stats.npz, both generated sets, report.json.

Two things are normalized first, because they are meant to change: the temporary folder the build ran in,
and the cache keys in folder names (they hash edgeq's own source, so any code change renames them).
Latency is measured, never byte-identical: report.json is compared without its ``latency`` section (the
recipe gates no latency). The digests hold for the pinned toolchain they were recorded with (see
RECORDED_WITH); on another one this test skips and says why, rather than failing on TensorFlow's bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "demo"
GOLDEN = DATA / "digests.json"
_CACHE_KEY = re.compile(rb"\b(calibration|evaluation|validate|bench)-[0-9a-f]{16}\b")


def _toolchain() -> dict[str, str]:
    from edgeq.versions import package_versions

    return package_versions(("tensorflow", "ai-edge-litert", "albumentations", "numpy"))


def _normalized(data: bytes, root: Path) -> bytes:
    data = data.replace(str(root).encode(), b"<tmp>")
    return _CACHE_KEY.sub(rb"\1-<key>", data)


def _without_latency(data: bytes) -> bytes:
    document = json.loads(data)
    document.pop("latency", None)
    document.pop("latency_summary", None)  # measured: ratios, load average, peak RSS
    document.pop("bench_environment", None)  # the machine the latency was measured on (CPU model, cores)
    return (json.dumps(document, indent=2) + "\n").encode()


def demo_digests(work: Path) -> dict[str, str]:
    """Build the demo recipe in ``work`` and return {normalized relative path: sha256 of normalized bytes}."""
    from edgeq.cli.main import main

    for name in ("cnn_digits.yaml", "cnn_digits_float32.tflite"):
        shutil.copyfile(DATA / name, work / name)
    out = work / "out"
    code = main(["build", str(work / "cnn_digits.yaml"), "-o", str(out)])
    if code != 0:
        raise AssertionError(f"edgeq build exited {code}")
    digests = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = _CACHE_KEY.sub(rb"\1-<key>", str(path.relative_to(out)).encode()).decode()
        if relative.startswith("cache/bench-"):
            continue  # measured latency
        data = path.read_bytes()
        if relative == "report.html":
            continue  # renders the measured latency; its bytes are checked from a fixed document elsewhere
        if relative == "report.json":
            data = _without_latency(data)
        if path.suffix in (".json", ".jsonl", ".html"):
            data = _normalized(data, work)
        digests[relative] = hashlib.sha256(data).hexdigest()
    return digests


def test_demo_artifacts_are_byte_identical_to_the_recorded_ones(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    golden = json.loads(GOLDEN.read_text())
    if golden["recorded_with"] != _toolchain():
        pytest.skip(f"digests were recorded with {golden['recorded_with']}, this is {_toolchain()}")
    monkeypatch.setenv("EDGEQ_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    got = demo_digests(work)
    assert sorted(got) == sorted(golden["digests"])
    changed = [name for name in got if got[name] != golden["digests"][name]]
    assert not changed, f"these demo artifacts changed bytes: {changed}"


if __name__ == "__main__":  # record: python tests/test_demo_bytes.py tests/data/demo/digests.json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = {"recorded_with": _toolchain(), "digests": demo_digests(Path(tmp))}
    Path(sys.argv[1]).write_text(json.dumps(result, indent=2) + "\n")
