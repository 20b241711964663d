"""Progress (issue 17): the library reports and never prints; the CLI draws tqdm bars on a terminal and
timestamped, rate-limited lines elsewhere; --quiet silences both; zoo training reports its epochs.

Clocks are injected: nothing here sleeps or depends on how fast the machine is.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edgeq import progress
from edgeq.cli import progress as cli_progress

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[ *(\d+\.\d s|\d+ min \d\d s|\d+ h \d\d min)\] \S")


@pytest.fixture(autouse=True)
def _silent_afterwards() -> Iterator[None]:
    """A CLI run installs a process-wide reporter; the tests after this one get the library default back."""
    yield
    cli_progress.configure(quiet=False)
    progress.install(None)


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """A reporter that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def step(self, message: str) -> None:
        self.events.append(("step", message))

    def start(self, label: str, total: int | None) -> progress.Bar:
        events = self.events
        events.append(("start", label, total))

        class Bar:
            def update(self, done: int) -> None:
                events.append(("update", label, done))

            def close(self, done: int) -> None:
                events.append(("close", label, done))

        return Bar()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log(clock: Clock) -> tuple[cli_progress.LogReporter, io.StringIO]:
    out = io.StringIO()
    began = datetime(2026, 11, 29, 18, 0, 0, tzinfo=UTC)
    reporter = cli_progress.LogReporter(lambda: out, interval=10.0, delay=1.0, clock=clock,
                                        now=lambda: began + timedelta(seconds=clock.t - 500.0))
    return reporter, out


def _loop(reporter: progress.Reporter, clock: Clock, label: str, total: int, seconds_each: float,
          stop_at: int | None = None) -> None:
    with progress.reporting(reporter), progress.task(label, total) as counted:
        for _ in range(total if stop_at is None else stop_at):
            clock.t += seconds_each
            counted.advance()


# ----------------------------------------------------------------------------------- off a terminal


def test_a_step_is_one_line_with_a_utc_timestamp_and_the_elapsed_time() -> None:
    clock = Clock()
    reporter, out = _log(clock)
    clock.t += 2.5
    with progress.reporting(reporter):
        progress.step("method 2/5: mse")
    assert out.getvalue() == "2026-11-29T18:00:02Z [    2.5 s] method 2/5: mse\n"


def test_a_long_loop_gets_a_start_line_a_line_every_interval_and_an_end_line_never_one_per_item() -> None:
    clock = Clock()
    reporter, out = _log(clock)
    _loop(reporter, clock, "calibration statistics", 3600, 0.05)  # 180 s
    lines = out.getvalue().splitlines()
    assert all(STAMPED.match(line) for line in lines), lines
    assert lines[0].endswith("calibration statistics: started 1.0 s ago, 20/3600 (0 %), 20.0/s, ETA 2 min 59 s")
    assert lines[-1].endswith("calibration statistics: done 3600/3600 (100 %) in 3 min 00 s (20.0/s)")
    middle = lines[1:-1]
    assert 16 <= len(middle) <= 18  # one every 10 s of a 180 s loop
    assert all("ETA" in line and "/s" in line for line in middle)
    stamps = [datetime.strptime(line[:20], "%Y-%m-%dT%H:%M:%SZ") for line in lines[:-1]]
    assert all((b - a).total_seconds() >= 10 for a, b in itertools.pairwise(stamps[1:]))


def test_a_short_loop_prints_nothing_and_a_loop_that_stops_says_where() -> None:
    clock = Clock()
    reporter, out = _log(clock)
    _loop(reporter, clock, "evaluating", 360, 0.001)  # 0.36 s: under the delay
    assert out.getvalue() == ""
    _loop(reporter, clock, "evaluating", 360, 0.05, stop_at=350)
    assert out.getvalue().splitlines()[-1].endswith("evaluating: stopped at 350/360 (97 %) in 17.5 s (20.0/s)")


def test_a_loop_whose_only_item_is_slow_still_gets_its_end_line() -> None:
    clock = Clock()
    reporter, out = _log(clock)
    _loop(reporter, clock, "training", 1, 30.0)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("training: started 30.0 s ago, 1/1 (100 %), 30.0 s/it")
    assert lines[-1].endswith("training: done 1/1 (100 %) in 30.0 s (30.0 s/it)")


# ------------------------------------------------------------------------------------ on a terminal


def _terminal(text: str) -> list[str]:
    """What a terminal ends up showing: each line as its last carriage-return segment."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]


def test_the_terminal_bar_has_rate_and_eta_and_closes_at_total_when_the_last_update_is_short() -> None:
    screen = FakeTerminal()
    reporter = cli_progress.TerminalReporter(lambda: screen, delay=0)
    with progress.reporting(reporter), progress.task("evaluating", 360) as counted:
        for _ in range(7):
            counted.advance(50)  # 350: the old bar stopped here
        counted.advance(10)
    print("top-1 98.1 %", file=screen)
    shown = _terminal(screen.getvalue())
    assert shown[0].startswith("evaluating: 100%") and "360/360" in shown[0] and "it/s]" in shown[0]
    assert shown[1:] == ["top-1 98.1 %", ""]  # the next line starts on its own line
    assert re.search(r"\d+/360 \[\d\d:\d\d<\d\d:\d\d", screen.getvalue())  # elapsed<ETA while it ran


def test_a_loop_shorter_than_the_delay_draws_no_bar() -> None:
    screen = FakeTerminal()
    with progress.reporting(cli_progress.TerminalReporter(lambda: screen, delay=60)):
        with progress.task("evaluating", 360) as counted:
            counted.advance(360)
        progress.step("method 1/2: minmax")
    assert screen.getvalue() == "method 1/2: minmax\n"


def test_a_step_while_a_bar_is_open_gets_its_own_line() -> None:
    screen = FakeTerminal()
    reporter = cli_progress.TerminalReporter(lambda: screen, delay=0)
    with progress.reporting(reporter), progress.task("validating", 4) as counted:
        counted.advance()
        progress.step("method 2/4: mse")
        counted.advance(3)
    shown = _terminal(screen.getvalue())
    assert "method 2/4: mse" in shown
    assert shown[-2].startswith("validating: 100%") and shown[-1] == ""


def test_an_aborted_loop_ends_its_bar_line_before_the_error() -> None:
    screen = FakeTerminal()
    reporter = cli_progress.TerminalReporter(lambda: screen, delay=0)
    with pytest.raises(ValueError), progress.reporting(reporter), progress.task("rendering", 10) as counted:
        counted.advance(3)
        raise ValueError("disk full")
    print("edgeq: error: disk full", file=screen)
    shown = _terminal(screen.getvalue())
    assert "3/10" in shown[0] and shown[1] == "edgeq: error: disk full"


# ------------------------------------------------------------------------------------------ library


def test_the_library_default_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    from edgeq.harness.accuracy import predict
    from edgeq.harness.backends import open_session, parse_backend

    session = open_session(TINY.read_bytes(), parse_backend("cpu"))
    shape = (6, *session.inputs[0].shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    progress.install(None)
    capfd.readouterr()
    scores = predict(session, x)
    assert capfd.readouterr() == ("", "")
    recorder = Recorder()
    with progress.reporting(recorder):
        assert np.array_equal(predict(session, x), scores)
    assert recorder.events[0] == ("start", "evaluating", 6) and recorder.events[-1] == ("close", "evaluating", 6)


def test_older_progress_callbacks_still_get_done_and_total() -> None:
    calls: list[tuple[int, int]] = []
    with progress.task("calibrating", 3, callback=lambda done, total: calls.append((done, total))) as counted:
        counted.advance()
        counted.update(3)
    assert calls == [(1, 3), (3, 3)]


# ------------------------------------------------------------------------------------- CLI, --quiet


def _bench(quiet: bool) -> list[str]:
    from edgeq.cli.main import main

    argv = ["bench", str(TINY), "--backend", "cpu", "--threads", "1", "--runs", "5", "--min-seconds", "0",
            "--warmup-seconds", "0", *(["--quiet"] if quiet else [])]
    assert main(argv) == 0
    return argv


def test_quiet_silences_progress_but_not_results(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_PROGRESS", "auto")  # tests/conftest.py sets off for the rest of the suite
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(cli_progress, "DELAY_S", 0.0)  # show the short loops of a 5-run bench
    _bench(quiet=False)
    shown = capsys.readouterr()
    lines = [line for line in shown.err.splitlines() if STAMPED.match(line)]
    assert any("warming up: done 1/1" in line for line in lines), shown.err
    assert any("benchmarking: done" in line for line in lines), shown.err
    _bench(quiet=True)
    hushed = capsys.readouterr()
    assert not any(STAMPED.match(line) for line in hushed.err.splitlines()), hushed.err
    assert "tiny_int8.tflite" in hushed.out and hushed.out.count("\n") >= 3  # the results table stays


def test_configure_picks_the_reporter_and_info_obeys_quiet(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_PROGRESS", "auto")
    cli_progress.configure(quiet=True)
    cli_progress.info("calibration set: 64 samples")
    progress.step("method 1/5: auto")
    assert capsys.readouterr() == ("", "")
    cli_progress.configure(quiet=False)
    assert isinstance(progress.current(), cli_progress.LogReporter)  # pytest's stderr is not a terminal
    cli_progress.info("calibration set: 64 samples")
    assert capsys.readouterr().err == "calibration set: 64 samples\n"
    monkeypatch.setenv("CI", "true")
    assert isinstance(cli_progress.reporter_for(FakeTerminal()), cli_progress.LogReporter)
    monkeypatch.delenv("CI")
    assert isinstance(cli_progress.reporter_for(FakeTerminal()), cli_progress.TerminalReporter)
    monkeypatch.setenv("EDGEQ_PROGRESS", "log")
    assert isinstance(cli_progress.reporter_for(FakeTerminal()), cli_progress.LogReporter)
    monkeypatch.setenv("EDGEQ_PROGRESS", "off")
    assert isinstance(cli_progress.reporter_for(FakeTerminal()), progress.NullReporter)


def test_a_bad_edgeq_progress_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.cli.main import main

    monkeypatch.setenv("EDGEQ_PROGRESS", "fancy")
    assert main(["check", str(TINY)]) == 2
    err = capsys.readouterr().err
    assert err == "edgeq: error: EDGEQ_PROGRESS must be one of auto, bar, log, off, got 'fancy'\n"


# ---------------------------------------------------------------------------------------- zoo training


def test_epoch_lines_carry_loss_accuracy_and_time() -> None:
    pytest.importorskip("keras")
    from edgeq_models.progress import EpochProgress

    clock, recorder = Clock(), Recorder()
    with progress.reporting(recorder), progress.task("training", 2) as counted:
        callback = EpochProgress(2, counted, clock=clock)
        for epoch, (loss, acc, seconds) in enumerate([(1.25, 0.5, 2.0), (0.41234, 0.8712, 12.4)]):
            callback.on_epoch_begin(epoch)
            clock.t += seconds
            callback.on_epoch_end(epoch, {"loss": loss, "accuracy": acc})
    steps = [e[1] for e in recorder.events if e[0] == "step"]
    assert steps == ["epoch 1/2 loss 1.2500 acc 0.500 2.0 s", "epoch 2/2 loss 0.4123 acc 0.871 12 s"]
    assert recorder.events[-1] == ("close", "training", 2)


def test_zoo_training_reports_every_epoch() -> None:
    keras = pytest.importorskip("keras")
    from datagen.bundled import LabelledImages
    from edgeq.artifacts import Preprocessing
    from edgeq_models.train import train_classifier

    rng = np.random.default_rng(0)
    images = LabelledImages("tiny", rng.integers(0, 255, (8, 4, 4, 1), dtype=np.uint8),
                            np.arange(8, dtype=np.int64) % 2, ("a", "b"))
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2,
                                                                                                  activation="softmax")])
    recorder = Recorder()
    with progress.reporting(recorder):
        train_classifier(model, images, images, images, Preprocessing(std=(255.0,)), epochs=3, batch_size=4,
                         learning_rate=1e-2, seed=0, train_limit=None)
    steps = [e[1] for e in recorder.events if e[0] == "step"]
    assert [s.split(" loss ")[0] for s in steps] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(re.fullmatch(r"epoch \d/3 loss \d+\.\d{4} acc \d\.\d{3} \d+\.\d s", s) for s in steps), steps
    assert ("start", "training", 3) in recorder.events and ("close", "training", 3) in recorder.events
