"""The Android harness: benchmark_model output parsing, adb device states, and the adb command sequence.

tests/data/android/ holds real benchmark_model output recorded from public GitHub issues (each file's
first line names its source). No device or adb is needed here: the subprocess path runs against a FAKE
``adb`` (a shell script written by the test) that logs every argv it gets and replays a recorded log
for the benchmark_model call.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.errors import BackendUnavailable, ExitCode, InputError, UsageError
from edgeq.harness.adb import AdbDevice, availability, find_adb, parse_adb_devices, serial_from_backend
from edgeq.harness.android import AndroidBenchmark, benchmark_command, run_benchmark
from edgeq.harness.android_log import DelegateReport, parse_benchmark_output

DATA = Path(__file__).parent / "data" / "android"
TINY_MODEL = Path(__file__).parent / "data" / "tiny_int8.tflite"
SERIAL = "0a1b2c3d"
DIR = "/data/local/tmp/edgeq"
READY = ("List of devices attached\n"
         f"{SERIAL}               device usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3\n")


def recorded(name: str) -> str:
    """A recorded log without the '# ' attribution header at its top (the body may have '#threads' lines)."""
    lines = (DATA / f"recorded_{name}.txt").read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def test_every_recorded_file_names_its_source_first() -> None:
    files = sorted(DATA.glob("recorded_*.txt"))
    assert len(files) == 6
    for path in files:
        assert path.read_text().startswith("# Source: https://github.com/"), path.name


# --- recorded real outputs ----------------------------------------------------------------------------------------

def test_recorded_android_gpu_run_fully_delegated() -> None:
    out = parse_benchmark_output(recorded("gpu_tf43541"))
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.avg_us) == (870557, 130565, 122373, 119375)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (50, 113737, 124776, 1948)  # not the warm-up line
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (None, None, None)
    assert out.delegates == (DelegateReport("GPU", applied=True, fully=True),)
    assert out.delegate("gpu") == (True, True)
    assert out.delegate("nnapi") == (None, None)
    assert out.error_lines == ()


def test_recorded_android_cpu_run_with_the_older_memory_line() -> None:
    out = parse_benchmark_output(recorded("cpu_tf42507"))
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.avg_us) == (855, 49060, 34825.1, 33209.4)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (50, 32641, 34005, 450)
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (0, 12.8672, None)
    assert out.delegates == ()
    assert (out.p5_us, out.median_us, out.p95_us) == (None, None, None)


def test_recorded_xnnpack_partial_delegation() -> None:
    out = parse_benchmark_output(recorded("xnnpack_partial_xnnpack999"))
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.avg_us) == (49438, 65683, 54366.2, 55744.2)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (50, 52522, 113361, 9900)
    assert out.delegates == (DelegateReport("XNNPACK", applied=True, fully=False, kernels=1),)
    assert out.delegate("xnnpack") == (True, False)


def test_recorded_info_prefixed_log_with_memory_delta() -> None:
    out = parse_benchmark_output(recorded("info_prefix_tf61946"))
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.avg_us) == (530, 124020, 117225, 116066)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (50, 111222, 121324, 1906)
    assert (out.memory_init_mb, out.memory_overall_mb) == (3.75, 12.1914)
    assert out.delegates == ()


def test_recorded_logcat_nnapi_partial_delegation() -> None:
    out = parse_benchmark_output(recorded("nnapi_logcat_tf56301"))
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.avg_us) == (126059, 32942, 12581.9, 12167.6)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (75, 11787, 13649, 325)
    assert out.delegates == (DelegateReport("NNAPI", applied=True, fully=False, kernels=44),)
    assert out.delegate("nnapi") == (True, False)
    assert out.memory_overall_mb is None


def test_recorded_failure_has_no_timings() -> None:
    with pytest.raises(InputError, match=r"no 'Inference timings in us' line: Failed to apply XNNPACK delegate\.$"):
        parse_benchmark_output(recorded("failure_xnnpack3060"))


# --- parser edge cases (synthetic lines in the formats of benchmark_model.cc and stats_calculator.h) ---------------

SYNTHETIC = """INFO: Though NNAPI delegate is explicitly applied, the model graph will not be executed by the delegate.
INFO: count=1 curr=670083 p5=670083 median=670083 p95=670083

INFO: count=50 first=591245 curr=917186 min=502355 max=2270688 avg=699438 std=325425 p5=502674 median=576856 p95=1373207

INFO: Inference timings in us: Init: 102320, First inference: 670083, Warmup (avg): 670083, Inference (avg): 699438
INFO: Memory footprint delta from the start of the tool (MB): init=98.0977 overall=99.2031
INFO: Overall peak memory footprint (MB) via periodic monitoring: 101.5
INFO: Memory status at the end of exeution:
INFO: Timings (microseconds): count=50 first=1 curr=1 min=1 max=1 avg=1 std=0
"""


def test_percentiles_peak_memory_and_a_declined_delegate() -> None:
    out = parse_benchmark_output(SYNTHETIC)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (50, 502355, 2270688, 325425)  # not the profiler's
    assert (out.p5_us, out.median_us, out.p95_us) == (502674, 576856, 1373207)
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (98.0977, 99.2031, 101.5)
    assert out.delegate("nnapi") == (False, False)


def test_all_same_runs_scientific_notation_and_nan() -> None:
    text = ("count=3 curr=2.5e+07(all same)\n"
            "Inference timings in us: Init: 1.2e+06, First inference: 3, Warmup (avg): -nan, "
            "Inference (avg): 2.5e+07\n")
    out = parse_benchmark_output(text)
    assert (out.init_us, out.warmup_avg_us, out.avg_us) == (1.2e6, None, 2.5e7)
    assert (out.count, out.min_us, out.max_us, out.std_us) == (3, 2.5e7, 2.5e7, 0.0)


def test_output_without_timings_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="no 'Inference timings in us' line: no output"):
        parse_benchmark_output("")
    with pytest.raises(InputError, match=r"pre-2\.0"):
        parse_benchmark_output("Average inference timings in us: Warmup: 76605.9, Init: 9933, no stats: 66767.6\n")
    with pytest.raises(InputError, match=r"line: count=50 min=1"):
        parse_benchmark_output("STARTING!\ncount=50 min=1\n")


# --- adb devices --------------------------------------------------------------------------------------------------

def test_parse_adb_devices() -> None:
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\n"
            "0a1b2c3d               device usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3\n"
            "emulator-5554          offline transport_id:1\n"
            "R58M41                 unauthorized usb:1-2 transport_id:4\n"
            "192.168.1.7:5555       device product:x model:y device:z transport_id:5\n"
            "ZY22                   no permissions (user in plugdev group; are your udev rules wrong?); "
            "see [http://developer.android.com/tools/device.html] usb:1-3 transport_id:6\n\n")
    devices = parse_adb_devices(text)
    assert [(d.serial, d.state) for d in devices] == [
        ("0a1b2c3d", "device"), ("emulator-5554", "offline"), ("R58M41", "unauthorized"),
        ("192.168.1.7:5555", "device"),
        ("ZY22", "no permissions (user in plugdev group; are your udev rules wrong?); "
                 "see [http://developer.android.com/tools/device.html]")]
    assert devices[0] == AdbDevice("0a1b2c3d", "device", {"usb": "1-1", "product": "panther", "model": "Pixel_7",
                                                          "device": "panther", "transport_id": "3"})
    assert parse_adb_devices("List of devices attached\n\n") == []


# --- the fake adb -------------------------------------------------------------------------------------------------

FAKE_ADB = r"""#!/bin/bash
# FAKE adb for tests: logs its argv (fields joined by \x1f) and plays a scripted device.
( IFS=$'\x1f'; printf '%s\n' "$*" ) >> "$FAKE_ADB_LOG"
if [ "$1" = "devices" ]; then printf '%s' "$FAKE_ADB_DEVICES"; exit 0; fi
if [ "$1" = "-s" ]; then shift 2; fi
case "$1" in
  push)
    if [ -n "$FAKE_ADB_PUSH_FAIL" ]; then
      echo "adb: error: failed to copy '$2' to '$3': remote couldn't create file: Permission denied" >&2; exit 1
    fi
    echo "$2: 1 file pushed, 0 skipped. 12.3 MB/s (4276352 bytes in 0.331s)"; exit 0;;
  shell)
    shift
    case "$*" in
      *"benchmark_model --graph="*)
        if [ -n "$FAKE_ADB_HANG" ]; then echo $$ > "$FAKE_ADB_PID"; echo STARTING!; exec sleep 30; fi
        cat "$FAKE_ADB_OUTPUT"; exit "${FAKE_ADB_RC:-0}";;
    esac;;
esac
exit 0
"""


class FakeAdb:
    """Configures the fake through its environment and reads back the argv it logged."""

    def __init__(self, path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path, self.tmp, self.monkeypatch = path, tmp, monkeypatch
        self.log = tmp / "adb-calls.log"
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log))
        monkeypatch.setenv("FAKE_ADB_PID", str(tmp / "fake-adb.pid"))
        self.devices(READY)
        self.replay("gpu_tf43541")

    def devices(self, text: str) -> None:
        self.monkeypatch.setenv("FAKE_ADB_DEVICES", text)

    def replay(self, name: str, rc: int = 0) -> None:
        body = self.tmp / f"{name}.out"
        body.write_text(recorded(name))
        self.monkeypatch.setenv("FAKE_ADB_OUTPUT", str(body))
        self.monkeypatch.setenv("FAKE_ADB_RC", str(rc))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split("\x1f") for line in self.log.read_text().splitlines()]


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    path = bin_dir / "adb"
    path.write_text(FAKE_ADB)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("EDGEQ_ADB", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return FakeAdb(path, tmp_path, monkeypatch)


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    """Stands in for the benchmark_model binary: all the harness reads of it locally is the ELF magic."""
    path = tmp_path / "benchmark_model"
    path.write_bytes(b"\x7fELF" + bytes(60))
    return path


def expected_calls(run: list[str], cleanup: tuple[list[str], ...] = (["shell", "rm", "-rf", DIR],)) -> list[list[str]]:
    on = ["-s", SERIAL]
    return [["devices", "-l"],
            [*on, "shell", "mkdir", "-p", DIR],
            [*on, "push", str(TINY_MODEL), f"{DIR}/model.tflite"],
            [*on, "push", "BINARY", f"{DIR}/benchmark_model"],
            [*on, "shell", "chmod", "+x", f"{DIR}/benchmark_model"],
            [*on, "shell", *run],
            *([*on, *step] for step in cleanup)]


def with_binary(calls: list[list[str]], binary: Path) -> list[list[str]]:
    return [[str(binary) if arg == "BINARY" else arg for arg in call] for call in calls]


# --- availability -------------------------------------------------------------------------------------------------

def test_adb_missing_entirely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("EDGEQ_ADB", raising=False)
    assert find_adb() is None
    status = availability(SERIAL)
    assert not status.available
    assert "adb is not on PATH" in status.reason and "apt-get install adb" in status.reason
    with pytest.raises(BackendUnavailable, match="apt-get install adb") as error:
        run_benchmark(TINY_MODEL, SERIAL, binary, "cpu", threads=1)
    assert error.value.exit_code == ExitCode.BACKEND_UNAVAILABLE


def test_edgeq_adb_overrides_path(fake_adb: FakeAdb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # the fake is no longer on PATH ...
    monkeypatch.setenv("EDGEQ_ADB", str(fake_adb.path))  # ... but named explicitly
    assert find_adb() == str(fake_adb.path)
    assert availability(SERIAL).available
    monkeypatch.setenv("EDGEQ_ADB", str(tmp_path / "nope"))
    assert find_adb() is None
    assert "EDGEQ_ADB=" in availability(SERIAL).reason


def test_available_device(fake_adb: FakeAdb) -> None:
    ok, reason = availability(SERIAL)  # a pair, as the backends module unpacks it
    assert (ok, reason) == (True, f"device {SERIAL} is ready (Pixel_7)")
    assert availability(None) == (True, f"device {SERIAL} is ready (Pixel_7)")  # the only device, none named
    assert fake_adb.calls() == [["devices", "-l"], ["devices", "-l"]]


def test_device_not_listed(fake_adb: FakeAdb, binary: Path) -> None:
    fake_adb.devices("List of devices attached\nemulator-5554\tdevice\n")
    status = availability(SERIAL)
    assert not status.available
    assert status.reason == f"device {SERIAL} is not attached (adb devices lists: emulator-5554 (device))"
    fake_adb.devices("List of devices attached\n\n")
    assert availability(SERIAL).reason == f"device {SERIAL} is not attached (adb devices lists: none)"
    assert "no Android device is attached" in availability(None).reason
    with pytest.raises(BackendUnavailable, match=f"device {SERIAL} is not attached"):
        run_benchmark(TINY_MODEL, SERIAL, binary, "cpu", threads=1)
    assert fake_adb.calls()[-1] == ["devices", "-l"]  # nothing was pushed


def test_unauthorized_and_offline_devices(fake_adb: FakeAdb, binary: Path) -> None:
    fake_adb.devices(f"List of devices attached\n{SERIAL}\tunauthorized usb:1-1 transport_id:2\n")
    status = availability(SERIAL)
    assert not status.available and "unauthorized" in status.reason and "Allow USB debugging" in status.reason
    with pytest.raises(BackendUnavailable, match=f"device {SERIAL} is unauthorized"):
        run_benchmark(TINY_MODEL, SERIAL, binary, "xnnpack", threads=1)
    fake_adb.devices(f"List of devices attached\n{SERIAL}\toffline\n")
    assert "offline" in availability(SERIAL).reason and "adb reconnect" in availability(SERIAL).reason
    assert "unauthorized" not in str(fake_adb.calls())


def test_several_devices_need_a_serial(fake_adb: FakeAdb) -> None:
    fake_adb.devices(READY + "emulator-5554\tdevice\n")
    status = availability(None)
    assert not status.available and "2 devices are attached" in status.reason and "android:SERIAL" in status.reason
    assert availability("emulator-5554").available


def test_serial_from_backend() -> None:
    assert serial_from_backend("android:0a1b2c3d") == "0a1b2c3d"
    assert serial_from_backend("android") is None
    with pytest.raises(UsageError):
        serial_from_backend("android:")
    with pytest.raises(UsageError):
        serial_from_backend("edgetpu")


# --- run_benchmark ------------------------------------------------------------------------------------------------

CASES = {  # accelerator: (threads, recorded log to replay, use_xnnpack, use_gpu, use_nnapi, delegate_applied, fully)
    "cpu": (1, "cpu_tf42507", "false", "false", "false", None, None),
    "xnnpack": (4, "xnnpack_partial_xnnpack999", "true", "false", "false", True, False),
    "gpu": (2, "gpu_tf43541", "false", "true", "false", True, True),
    "nnapi": (1, "nnapi_logcat_tf56301", "false", "false", "true", True, False),
}


@pytest.mark.parametrize("accelerator", list(CASES))
def test_run_benchmark_command_sequence_and_result(fake_adb: FakeAdb, binary: Path, accelerator: str) -> None:
    threads, log, xnnpack, gpu, nnapi, applied, fully = CASES[accelerator]
    fake_adb.replay(log)
    result = run_benchmark(TINY_MODEL, SERIAL, binary, accelerator, threads=threads)  # type: ignore[arg-type]
    run = [f"{DIR}/benchmark_model", f"--graph={DIR}/model.tflite", f"--num_threads={threads}", "--num_runs=50",
           "--warmup_runs=1", f"--use_xnnpack={xnnpack}", f"--use_gpu={gpu}", f"--use_nnapi={nnapi}",
           "--enable_op_profiling=false"]
    assert fake_adb.calls() == with_binary(expected_calls(run), binary)
    assert result.commands == tuple((str(fake_adb.path), *call) for call in fake_adb.calls())
    expected = parse_benchmark_output(recorded(log))
    assert (result.serial, result.accelerator, result.threads) == (SERIAL, accelerator, threads)
    assert (result.avg_us, result.count, result.std_us) == (expected.avg_us, expected.count, expected.std_us)
    assert (result.delegate_applied, result.fully_delegated) == (applied, fully)
    assert result.raw_output == recorded(log)
    assert result.warnings == ()


def test_run_benchmark_taskset_min_secs_and_peak_memory(fake_adb: FakeAdb, binary: Path) -> None:
    fake_adb.replay("xnnpack_partial_xnnpack999")
    run_benchmark(TINY_MODEL, SERIAL, binary, "xnnpack", threads=1, runs=200, warmup_runs=5, min_seconds=2.5,
                  taskset="f0", report_peak_memory=True, remote_dir="/data/local/tmp/edgeq-ci")
    assert fake_adb.calls()[1] == ["-s", SERIAL, "shell", "mkdir", "-p", "/data/local/tmp/edgeq-ci"]
    assert fake_adb.calls()[5] == [
        "-s", SERIAL, "shell", "taskset", "f0", "/data/local/tmp/edgeq-ci/benchmark_model",
        "--graph=/data/local/tmp/edgeq-ci/model.tflite", "--num_threads=1", "--num_runs=200", "--warmup_runs=5",
        "--min_secs=2.5", "--use_xnnpack=true", "--use_gpu=false", "--use_nnapi=false", "--enable_op_profiling=false",
        "--report_peak_memory_footprint=true"]
    assert fake_adb.calls()[-1] == ["-s", SERIAL, "shell", "rm", "-rf", "/data/local/tmp/edgeq-ci"]


def test_failed_push_names_the_step_and_cleans_up(fake_adb: FakeAdb, binary: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ADB_PUSH_FAIL", "1")
    with pytest.raises(BackendUnavailable) as error:
        run_benchmark(TINY_MODEL, SERIAL, binary, "gpu", threads=1)
    assert str(error.value) == (f"push model on {SERIAL} failed (exit 1): adb: error: failed to copy "
                                f"'{TINY_MODEL}' to '{DIR}/model.tflite': remote couldn't create file: "
                                "Permission denied")
    assert [call[2] for call in fake_adb.calls()[1:]] == ["shell", "push", "shell"]
    assert fake_adb.calls()[-1] == ["-s", SERIAL, "shell", "rm", "-rf", DIR]


@pytest.mark.parametrize("rc", [1, 0])  # 0: an old adb or device that drops the remote exit status
def test_benchmark_model_failure(fake_adb: FakeAdb, binary: Path, rc: int) -> None:
    fake_adb.replay("failure_xnnpack3060", rc=rc)
    with pytest.raises(BackendUnavailable) as error:
        run_benchmark(TINY_MODEL, SERIAL, binary, "xnnpack", threads=1)
    message = str(error.value)
    assert message.startswith(f"benchmark_model run on {SERIAL}")
    assert message.endswith("Failed to apply XNNPACK delegate.")
    assert f"(exit {rc})" in message and "\n" not in message
    assert fake_adb.calls()[-1] == ["-s", SERIAL, "shell", "rm", "-rf", DIR]


def test_hung_benchmark_is_killed_at_the_timeout(fake_adb: FakeAdb, binary: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ADB_HANG", "1")
    with pytest.raises(BackendUnavailable) as error:
        run_benchmark(TINY_MODEL, SERIAL, binary, "cpu", threads=1, timeout_s=1)
    assert str(error.value) == (f"benchmark_model run on {SERIAL} did not finish within 1 s; adb was killed "
                                "(last output: STARTING!)")
    pid = int((tmp_path / "fake-adb.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung (fake) adb is gone, not left sleeping
    assert fake_adb.calls()[-2:] == [["-s", SERIAL, "shell", "pkill", "-f", f"{DIR}/benchmark_model"],
                                     ["-s", SERIAL, "shell", "rm", "-rf", DIR]]


def test_bad_arguments_are_refused_before_adb_runs(fake_adb: FakeAdb, binary: Path, tmp_path: Path) -> None:
    apk = tmp_path / "benchmark_model.apk"
    apk.write_bytes(b"PK\x03\x04" + bytes(60))
    not_a_model = tmp_path / "model.tflite"
    not_a_model.write_bytes(bytes(64))
    bad: list[tuple[dict, type[Exception], str]] = [
        ({"accelerator": "hexagon"}, UsageError, "unknown Android accelerator"),
        ({"threads": 0}, UsageError, "threads"),
        ({"taskset": "big"}, UsageError, "taskset"),
        ({"taskset": "0"}, UsageError, "taskset"),
        ({"remote_dir": "/"}, UsageError, "remote dir"),
        ({"remote_dir": "/data/local/../tmp"}, UsageError, "remote dir"),
        ({"remote_dir": "/data/local/tmp/a b"}, UsageError, "remote dir"),
        ({"binary": apk}, InputError, "not an executable .ELF."),
        ({"binary": tmp_path / "missing"}, InputError, "no such benchmark_model"),
        ({"model": not_a_model}, InputError, "not a TFLite flatbuffer"),
        ({"serial": "two words"}, UsageError, "serial"),
    ]
    for override, error, match in bad:
        args = {"model": TINY_MODEL, "serial": SERIAL, "binary": binary, "accelerator": "cpu", "threads": 1,
                **override}
        with pytest.raises(error, match=match):
            run_benchmark(**args)
    assert fake_adb.calls() == []


def test_no_serial_means_the_only_device(fake_adb: FakeAdb, binary: Path) -> None:
    result = run_benchmark(TINY_MODEL, None, binary, "gpu", threads=1)
    assert result.serial == SERIAL
    assert fake_adb.calls()[1] == ["-s", SERIAL, "shell", "mkdir", "-p", DIR]
    fake_adb.devices(READY + "emulator-5554\tdevice\n")
    with pytest.raises(BackendUnavailable, match="2 devices are attached"):
        run_benchmark(TINY_MODEL, None, binary, "gpu", threads=1)


def test_result_round_trips_through_json(fake_adb: FakeAdb, binary: Path) -> None:
    result = run_benchmark(TINY_MODEL, SERIAL, binary, "gpu", threads=2)
    data = result.to_dict()
    assert data["kind"] == "android_benchmark" and data["avg_us"] == 119375
    assert AndroidBenchmark.from_dict(data) == result


def test_benchmark_command_is_exactly_one_delegate() -> None:
    for accelerator in ("cpu", "xnnpack", "gpu", "nnapi"):
        command = benchmark_command(DIR, accelerator, 1)  # type: ignore[arg-type]
        on = [flag for flag in command if flag.startswith("--use_") and flag.endswith("=true")]
        assert on == ([] if accelerator == "cpu" else [f"--use_{accelerator}=true"])


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, edgeq.harness.android; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

