"""--executor local|processes|ray: every data-parallel verb gives bit-identical results on every executor and
worker count, because the work is cut into contiguous shards and their results merge exactly (docs/executors.md).

One local Ray (2 CPUs) serves the whole file; the CLI runs in this process and uses it. Each verb is compared
with the plain one-pass code (local, which is what edgeq did before executors existed).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeq.cli import main as cli
from edgeq.errors import InputError, MissingDependencyError, UsageError
from edgeq.execute import Job, open_executor, parse_executor, shards
from edgeq.execute.base import no_state

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tests" / "data" / "demo" / "cnn_digits_float32.tflite"
PP = "mean=127.5,std=127.5"
# (executor, --workers): local first, the reference every other one is compared with
EXECUTORS = [("local", None), ("processes", 1), ("processes", 2), ("ray", 1), ("ray", 2)]
SHARDED = EXECUTORS[1:]
ids = [f"{name}{workers or ''}" for name, workers in EXECUTORS]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # its job functions, for Ray's workers
    try:
        yield
    finally:
        ray.shutdown()


def _options(name: str, workers: int | None) -> list[str]:
    return ["--executor", name] + (["--workers", str(workers)] if workers else [])


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- sharding and the executor spec ------------------------------------------------------------------------------

@given(n=st.integers(0, 600), workers=st.integers(1, 20), per_worker=st.integers(1, 8))
def test_shards_cover_every_sample_once_in_order(n: int, workers: int, per_worker: int) -> None:
    parts = shards(n, workers, per_worker)
    assert [i for r in parts for i in r] == list(range(n))  # each index once, in order
    assert all(len(r) > 0 and r.step == 1 for r in parts)  # contiguous, never empty
    assert len(parts) == min(n, workers * per_worker)
    if parts:
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize(("text", "workers", "expected"), [
    (None, None, ("local", None, None)),
    ("processes", 3, ("processes", None, 3)),
    ("ray", None, ("ray", None, None)),
    ("ray:auto", 2, ("ray", "auto", 2)),
    ("ray:10.0.0.5:6379", None, ("ray", "10.0.0.5:6379", None)),
    ("ray:ray://head:10001", None, ("ray", "ray://head:10001", None)),
])
def test_executor_specs(text: str | None, workers: int | None, expected: tuple[Any, ...]) -> None:
    spec = parse_executor(text, workers)
    assert (spec.name, spec.address, spec.workers) == expected


@pytest.mark.parametrize(("text", "workers", "message"), [
    ("threads", None, "unknown executor"), ("processes:host", None, "takes no address"), ("ray:", None, "no address"),
    ("local", 2, "--workers needs"), ("processes", 0, "--workers must be"), ("processes", True, "--workers must be"),
    ("ray:ray://", None, "names no host"),  # Ray's client would wait 30 s for it
])
def test_bad_executor_specs_are_usage_errors(text: str, workers: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_executor(text, workers)


def test_bad_executor_on_the_command_line_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["calibrate", str(DEMO), "--calib", "digits:test", "-o", str(tmp_path / "s.npz")]
    assert cli.main([*args, "--executor", "dask"]) == 2
    assert cli.main([*args, "--executor", "processes", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown executor 'dask'" in err and "--workers" in err and "Traceback" not in err
    assert not (tmp_path / "s.npz").exists()


def _square(state: int, item: int) -> int:
    return state * item * item


def _fail_on_three(_state: None, item: int) -> int:
    if item == 3:
        raise InputError("item 3 is bad")
    return item


def _die_on_three(_state: None, item: int) -> int:
    if item == 3:
        os._exit(1)
    return item


@pytest.mark.parametrize(("name", "workers"), EXECUTORS, ids=ids)
def test_results_come_back_in_item_order_with_per_worker_state(name: str, workers: int | None) -> None:
    with open_executor(parse_executor(name, workers)) as executor:
        assert list(executor.imap(Job(no_state, _square, 2), list(range(17)))) == [2 * i * i for i in range(17)]
        # a second job on the same executor gets its own state
        assert list(executor.imap(Job(no_state, _square, 3), [1, 2])) == [3, 12]


@pytest.mark.parametrize(("name", "workers"), SHARDED, ids=ids[1:])
def test_an_error_in_a_worker_is_raised_as_itself(name: str, workers: int) -> None:
    with open_executor(parse_executor(name, workers)) as executor, pytest.raises(InputError, match=r"^item 3 is bad$"):
        list(executor.imap(Job(no_state, _fail_on_three), list(range(8))))


@pytest.mark.parametrize(("name", "workers"), [("processes", 2), ("ray", 2)], ids=["processes2", "ray2"])
def test_a_worker_that_dies_is_one_clear_error(name: str, workers: int) -> None:
    with open_executor(parse_executor(name, workers)) as executor, pytest.raises(InputError, match="worker"):
        list(executor.imap(Job(no_state, _die_on_three), list(range(8))))


def test_a_ray_worker_with_other_package_versions_is_refused() -> None:
    from edgeq.execute.rayactors import WORKER_PACKAGES, _check_versions
    from edgeq.versions import package_versions

    here = package_versions(WORKER_PACKAGES)
    _check_versions([here, dict(here)])
    with pytest.raises(InputError, match=r"a Ray worker has numpy 0\.0\.1, this machine .*bit-identical"):
        _check_versions([here, {**here, "numpy": "0.0.1"}])


# --- calibrate ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calib_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small set from datagen, so the statistics also name their outlier samples (manifest ids, conditions)."""
    out = tmp_path_factory.mktemp("calib") / "set"
    assert cli.main(["datagen", "--source", "digits:train", "--conditions", "original,noise,fog", "--n", "30",
                     "--preprocess", PP, "-o", str(out), "--quiet"]) == 0
    return out


def _calibration(calib_set: Path) -> tuple[bytes, Any]:
    from edgeq.converter.api import _calibration_data, _float_model

    model = _float_model(DEMO, None)
    return model.flatbuffer, _calibration_data(model, calib_set, None, None)


@pytest.mark.parametrize(("name", "workers"), SHARDED, ids=ids[1:])
def test_sharded_statistics_equal_one_pass(calib_set: Path, tmp_path: Path, name: str, workers: int) -> None:
    from edgeq.calib.collect import collect
    from edgeq.calib.parallel import collect_sharded

    model, data = _calibration(calib_set)
    whole = collect(model, data)
    assert whole.sample_info  # the comparison covers the sample descriptions too
    numbers = [1000 + 3 * i for i in range(len(data))]  # a caller's own numbering is kept as well
    with open_executor(parse_executor(name, workers)) as executor:
        sharded = collect_sharded(model, data, executor)
        renumbered = collect_sharded(model, data, executor, sample_indices=numbers)
    whole.save(tmp_path / "one.npz")
    sharded.save(tmp_path / "sharded.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "sharded.npz").read_bytes()
    collect(model, data, sample_indices=numbers).save(tmp_path / "one_n.npz")
    renumbered.save(tmp_path / "sharded_n.npz")
    assert (tmp_path / "one_n.npz").read_bytes() == (tmp_path / "sharded_n.npz").read_bytes()


def test_a_non_finite_sample_is_named_by_its_place_in_the_set(calib_set: Path) -> None:
    from edgeq.calib.data import CalibrationSet
    from edgeq.calib.parallel import collect_sharded

    model, data = _calibration(calib_set)
    x = np.random.default_rng(0).standard_normal((30, *data.arrays[0].shape[1:])).astype(np.float32)
    x[17].flat[0] = np.nan
    bad = CalibrationSet(source="noise.npy", arrays=(x,), preprocessing=None)
    with open_executor(parse_executor("processes", 2)) as executor, pytest.raises(InputError, match="sample 17 "):
        collect_sharded(model, bad, executor)


@pytest.mark.parametrize(("name", "workers"), EXECUTORS, ids=ids)
def test_calibrate_cli_writes_the_same_bytes(calib_set: Path, tmp_path_factory: pytest.TempPathFactory,
                                             name: str, workers: int | None) -> None:
    folder = tmp_path_factory.getbasetemp() / "calibrate-cli"
    folder.mkdir(exist_ok=True)
    out = folder / f"{name}{workers or ''}.npz"
    assert cli.main(["calibrate", str(DEMO), "--calib", "digits:test", "--limit", "40", "--preprocess", PP,
                     "-o", str(out), "--quiet", *_options(name, workers)]) == 0
    assert out.read_bytes() == (folder / "local.npz").read_bytes()  # local ran first (parametrize order)


def test_a_model_with_state_is_not_sharded() -> None:
    """An RNN with a variable state tensor: each invocation depends on the ones before, so shards run by separate
    interpreters (in any order) would change the statistics and scores. Refused, naming why; local runs it."""
    from tflite_builders import GraphBuilder

    from edgeq.calib.collect import collect
    from edgeq.calib.data import CalibrationSet
    from edgeq.calib.parallel import collect_sharded
    from edgeq.harness.backends import parse_backend
    from edgeq.harness.parallel import predict_on
    from edgeq.tflite import model as tfl

    schema = tfl.schema()
    b = GraphBuilder()
    x = b.tensor("x", [1, 4], "FLOAT32")
    w = b.tensor("w", [3, 4], "FLOAT32", np.full((3, 4), 0.5, np.float32))
    r = b.tensor("r", [3, 3], "FLOAT32", np.eye(3, dtype=np.float32))
    bias = b.tensor("bias", [3], "FLOAT32", np.zeros(3, np.float32))
    state = b.tensor("state", [1, 3], "FLOAT32")
    b.graph.tensors[state].isVariable = True
    y = b.tensor("y", [1, 3], "FLOAT32")
    b.op("RNN", [x, w, r, bias, state], [y], schema.RNNOptionsT())
    model = b.build([x], [y])
    data = CalibrationSet(source="t", arrays=(np.arange(32, dtype=np.float32).reshape(8, 4) / 32,),
                          preprocessing=None)
    assert collect(model, data).samples == 8
    with open_executor(parse_executor("processes", 2)) as executor:
        with pytest.raises(UsageError, match=r"keeps state .*'state' is a variable.*--executor local"):
            collect_sharded(model, data, executor)
        with pytest.raises(UsageError, match="keeps state"):
            predict_on(executor, model, parse_backend("cpu"), 1, data.arrays[0])


# --- eval and validate's evaluation pass ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "workers"), EXECUTORS, ids=ids)
def test_eval_scores_are_the_same(tmp_path_factory: pytest.TempPathFactory, name: str, workers: int | None) -> None:
    folder = tmp_path_factory.getbasetemp() / "eval-cli"
    folder.mkdir(exist_ok=True)
    out = folder / f"{name}{workers or ''}.json"
    assert cli.main(["eval", str(DEMO), "--data", "digits:test", "--limit", "45", "--preprocess", PP,
                     "--backend", "xnnpack", "--reference", str(DEMO), "--json", str(out), "--quiet",
                     *_options(name, workers)]) == 0

    def result(path: Path) -> dict[str, Any]:
        document = json.loads(path.read_text())
        return {k: document[k] for k in ("n", "top1", "top5", "agreement", "per_condition", "fidelity")}

    assert result(out) == result(folder / "local.json")


def test_eval_json_on_stdout_stays_clean_with_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", str(DEMO), "--data", "digits:test", "--limit", "12", "--preprocess", PP,
                     "--json", "-", "--executor", "ray"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12


def test_a_one_device_backend_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", str(DEMO), "--data", "digits:test", "--backend", "edgetpu",
                     "--executor", "processes"]) == 2
    assert "one device" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "workers"), SHARDED, ids=ids[1:])
def test_validate_evaluation_pass_is_the_same(tmp_path: Path, name: str, workers: int) -> None:
    """What validate runs each model through (FP32 and every method's INT8 model): every output, every sample."""
    from edgeq.converter.api import convert
    from edgeq.harness.accuracy import predict_outputs
    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.harness.evaldata import load_eval_set
    from edgeq.harness.parallel import predict_outputs_on
    from edgeq.validate.protocol import _outputs, _plan

    data = load_eval_set("digits:test", limit=37)
    x = data.model_inputs(parse_preprocess())
    int8 = tmp_path / "int8.tflite"
    convert(str(DEMO), int8, calib="digits:test", preprocessing=parse_preprocess(), limit=20)
    cpu = parse_backend("cpu")
    with open_executor(parse_executor(name, workers)) as executor:
        for model in (DEMO.read_bytes(), int8.read_bytes()):
            one = predict_outputs(open_session(model, cpu), x)
            sharded = predict_outputs_on(executor, model, cpu, 1, x)
            assert list(one) == list(sharded)
            for key in one:
                assert one[key].dtype == sharded[key].dtype and one[key].tobytes() == sharded[key].tobytes()
        from edgeq.intake.load import load_float_model

        plan, fp32 = _plan(load_float_model(DEMO), x, data, (), executor)
        assert _outputs(int8.read_bytes(), x, plan, executor).keys() == fp32.keys()


def parse_preprocess() -> Any:
    from edgeq.calib.data import parse_preprocessing

    return parse_preprocessing(PP)


# --- datagen ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "workers"), EXECUTORS, ids=ids)
def test_datagen_sets_are_byte_identical(tmp_path_factory: pytest.TempPathFactory, name: str,
                                         workers: int | None) -> None:
    folder = tmp_path_factory.getbasetemp() / "datagen-cli"
    folder.mkdir(exist_ok=True)
    out = folder / f"{name}{workers or ''}"
    assert cli.main(["datagen", "--source", "digits:test", "--conditions", "original,noise,blur,fog", "--n", "24",
                     "--seed", "3", "-o", str(out), "--quiet", *_options(name, workers)]) == 0
    assert _hashes(out) == _hashes(folder / "local")


# --- production logs ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeq.production.writer import append_record

    folder = tmp_path_factory.mktemp("logs")
    rng = np.random.default_rng(5)
    for f in range(7):
        path = folder / f"app-{f}.jsonl"
        for i in range(6):
            lo = float(rng.normal())
            append_record(path, model_sha256=("ab" if f % 3 else "cd") * 32, time=1000.0 + 37 * f + i,
                          tensors={"conv": (lo, lo + float(rng.random())), f"t{f % 2}": (-1.0, float(f))},
                          count=1 + i % 3, device=f"d{f % 2}", app_version="1.0")
        with path.open("a") as stream:  # refused lines: their counts, reasons and first examples must merge too
            stream.write("not json\n" if f % 2 else '{"version": 1}\n')
    (folder / "notes.txt").write_text("not a log")  # listed as ignored
    return folder


@pytest.mark.parametrize(("name", "workers"), SHARDED, ids=ids[1:])
def test_a_sharded_log_read_equals_one_read(logs: Path, name: str, workers: int) -> None:
    from edgeq.calib.parallel import read_log_sharded
    from edgeq.production.merge import read_log

    kwargs = {"window_seconds": 60.0, "max_examples": 3}
    stats, report = read_log([logs], **kwargs)
    assert report.bad_total == 7 and len(report.examples) == 3 and report.ignored_files
    with open_executor(parse_executor(name, workers)) as executor:
        sharded, sharded_report = read_log_sharded([logs], executor, **kwargs)
    assert sharded.to_dict() == stats.to_dict() and sharded == stats
    assert sharded_report.to_dict() == report.to_dict()
    assert list(sharded_report.bad) == list(report.bad)


# --- coverage: images and production logs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coverage_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo instrumented, and its logs over 24 test digits on collect()'s kernels: 3 files, 2 devices, 2 days."""
    from edgeq.calib.collect import collection_kernels, model_inputs
    from edgeq.calib.log_coverage import load_sidecar
    from edgeq.converter.api import _calibration_data, _float_model
    from edgeq.production.writer import append_record
    from edgeq.tflite.runtime import make_interpreter

    root = tmp_path_factory.mktemp("coverage")
    instrumented = root / "demo_instrumented.tflite"
    assert cli.main(["instrument", str(DEMO), "-o", str(instrumented), "--quiet"]) == 0
    sidecar = load_sidecar(instrumented.with_suffix(".json"))
    data = _calibration_data(_float_model(DEMO, None), "digits:test", parse_preprocess(), 24)
    interpreter, _ = make_interpreter(instrumented.read_bytes(), collection_kernels(DEMO.read_bytes()))
    outputs = interpreter.get_output_details()
    (root / "logs").mkdir()
    for i, batch in data.samples(model_inputs(interpreter)):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch[0])
        interpreter.invoke()
        values: dict[str, list[float]] = {}
        for out in sidecar.outputs:
            values.setdefault(out.tensor, [0.0, 0.0])[out.statistic == "max"] = float(
                interpreter.get_tensor(outputs[out.output_index]["index"]).item())
        append_record(root / "logs" / f"app-{i % 3}.jsonl", model_sha256=sidecar.sha256, time=86400.0 * (i % 2) + i,
                      tensors={k: (lo, hi) for k, (lo, hi) in values.items()}, device=f"d{i % 2}")
    return instrumented.with_suffix(".json"), root / "logs"


@pytest.mark.parametrize(("name", "workers"), [EXECUTORS[0], EXECUTORS[2], EXECUTORS[4]], ids=[ids[0], ids[2], ids[4]])
def test_coverage_from_images_and_logs_is_the_same(calib_set: Path, coverage_logs: tuple[Path, Path],
                                                   tmp_path_factory: pytest.TempPathFactory, name: str,
                                                   workers: int | None) -> None:
    folder = tmp_path_factory.getbasetemp() / "coverage-cli"
    folder.mkdir(exist_ok=True)
    sidecar, logs = coverage_logs
    common = [str(DEMO), "--calib", str(calib_set), "--preprocess", PP, "--quiet", *_options(name, workers)]
    for kind, production in (("images", ["--production", "digits:test", "--candidates", str(calib_set)]),
                             ("logs", ["--production-log", str(logs), "--instrumented", str(sidecar)])):
        out = folder / f"{kind}-{name}{workers or ''}.json"
        assert cli.main(["coverage", *common, *production, "--json", str(out)]) in (0, 1)
        document = json.loads(out.read_text())
        if kind == "logs":
            assert document["production_log"]["records"] == 24 and len(document["production_log"]["windows"]) == 2
        assert document == json.loads((folder / f"{kind}-local.json").read_text())  # local ran first


# --- Ray absent ---------------------------------------------------------------------------------------------------

def test_without_ray_the_ray_executor_exits_2_naming_the_extra(tmp_path: Path) -> None:
    """In a process where ``ray`` cannot be imported, before any work (the model path does not even exist)."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # import ray fails here\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from edgeq.cli.main import main; sys.exit(main(sys.argv[1:]))"
    for verb in (["calibrate", str(tmp_path / "missing.tflite"), "--calib", "digits:test", "-o",
                  str(tmp_path / "s.npz")],
                 ["eval", str(tmp_path / "missing.tflite"), "--data", "digits:test"]):
        done = subprocess.run([sys.executable, "-c", code, *verb, "--executor", "ray:auto"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "edgeq[ray]" in lines[0] and "missing.tflite" not in lines[0], done.stderr
        assert done.stdout == ""


def test_ray_absent_is_detected_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.execute.registry import check_available

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"edgeq\[ray\]"):
        check_available(parse_executor("ray"))
    check_available(parse_executor("processes"))


def test_an_unreachable_ray_address_is_one_line_exit_2(tmp_path: Path) -> None:
    """Refused at once (ray.init itself would retry for minutes), without touching the Ray of this module."""
    from edgeq.execute.rayactors import unreachable

    with socket.socket() as server:  # a port nothing listens on: bound, never listening
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert unreachable(f"127.0.0.1:{port}") and unreachable(f"ray://127.0.0.1:{port}")
        done = subprocess.run([sys.executable, "-m", "edgeq.cli.main", "calibrate", str(DEMO), "--calib", "digits:test",
                               "-o", str(tmp_path / "s.npz"), "--executor", f"ray:127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgeq: error: cannot connect to Ray at 127.0.0.1:{port}: ")
    assert unreachable("auto") is None and not (tmp_path / "s.npz").exists()
