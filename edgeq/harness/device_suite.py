"""Run the installed device suite (``edgeq_device_tests``) with pytest and keep what each test concluded.

The suite is what a board runs after ``pip install 'edgeq[device-test]'``; ``edgeq device-test`` calls
:func:`run_suite` and reports the :class:`SuiteRun` (per-test outcomes and the budget verdict) as JSON.
pytest is imported here only, so the rest of the harness never needs it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import InputError
from edgeq.extras import require_extra

SUITE_PACKAGE = "edgeq_device_tests"
#: The suite's options whose values the run records (registered by the suite's conftest.py).
RECORDED_OPTIONS = ("model", "backend", "eval_set", "reference", "budget", "latency_from", "preprocess")
#: Tests named ``test_<check>_budget`` judge the budget; the rest check the model runs correctly.
BUDGET_SUFFIX = "_budget"


@dataclass(frozen=True)
class TestOutcome:
    """One test case: which check on which backend, and what it concluded (a failure's or skip's reason)."""

    __test__ = False  # not a pytest test class, though its name starts with Test

    id: str
    test: str
    backend: str | None
    outcome: str  # passed | failed | skipped | error
    message: str | None
    duration_s: float
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def budget_check(self) -> str | None:
        """``latency`` for test_latency_budget, ...; None for a test that judges no budget."""
        name = self.test.removeprefix("test_")
        return name.removesuffix(BUDGET_SUFFIX) if name.endswith(BUDGET_SUFFIX) else None


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    pytest_exit: int
    options: dict[str, Any]
    tests: tuple[TestOutcome, ...]

    def counts(self) -> dict[str, int]:
        found = {name: 0 for name in ("passed", "failed", "skipped", "error")}
        for test in self.tests:
            found[test.outcome] += 1
        return found

    def budget_verdict(self) -> str:
        """``fail`` when a budget check failed, ``pass`` when at least one ran and none failed, else ``not judged``
        (no --budget given: the checks only measure; or every check it limits was skipped here)."""
        if not self.options.get("budget"):
            return "not judged"
        judged = [t for t in self.tests if t.budget_check is not None and t.outcome != "skipped"]
        if any(t.outcome != "passed" for t in judged):
            return "fail"
        return "pass" if judged else "not judged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "pytest_exit": self.pytest_exit,
            "options": self.options,
            "counts": self.counts(),
            "budget": {
                "verdict": self.budget_verdict(),
                "checks": [{"check": t.budget_check, "backend": t.backend, "outcome": t.outcome,
                            "message": t.message} for t in self.tests if t.budget_check is not None],
            },
            "tests": [asdict(t) for t in self.tests],
        }


def suite_folder() -> Path:
    """Where the installed suite lives (the source tree's device_tests/ in an editable install)."""
    spec = importlib.util.find_spec(SUITE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the device suite ({SUITE_PACKAGE}) is not installed with this edgeq; reinstall edgeq")
    return Path(next(iter(spec.submodule_search_locations)))


def run_suite(arguments: Sequence[str]) -> SuiteRun:
    """pytest on the installed suite with ``arguments`` (the suite's options and pytest's); its own output goes
    to the terminal as usual. No ini file applies (a project's pytest settings around the install must not change
    the suite) and no cache is written into the install. The suite's conftest.py is loaded as a plugin before
    pytest parses the arguments, and no other conftest.py is loaded: otherwise pytest reads the value of
    ``--reference tests/m.tflite`` as a path before it knows the suite's options, and loads tests/conftest.py."""
    require_extra("pytest", "edgeq device-test")
    import pytest

    folder = suite_folder()
    collector = _Collector()
    status = pytest.main([str(folder), "-c", os.devnull, "--rootdir", str(folder), "--noconftest",
                          "-p", f"{SUITE_PACKAGE}.conftest", "-p", "no:cacheprovider", *arguments], plugins=[collector])
    return SuiteRun(suite=str(folder), pytest_exit=int(status), options=collector.options,
                    tests=tuple(collector.outcomes))


class _Collector:
    """A pytest plugin recording each test's outcome (setup and teardown errors included) and the options used."""

    def __init__(self) -> None:
        self.outcomes: list[TestOutcome] = []
        self.options: dict[str, Any] = {}
        self._recorded: set[str] = set()

    def pytest_configure(self, config: Any) -> None:
        self.options = {name: config.getoption(name, default=None) for name in RECORDED_OPTIONS}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.nodeid in self._recorded:
            return  # a test's outcome is its first non-passing phase, else its call
        failed_outside_call = report.failed and report.when != "call"
        if report.when == "call" or report.skipped or failed_outside_call:
            self._recorded.add(report.nodeid)
            self.outcomes.append(_outcome(report, "error" if failed_outside_call else report.outcome))


def _outcome(report: Any, outcome: str) -> TestOutcome:
    name = report.nodeid.rpartition("::")[2]
    test, _, param = name.partition("[")
    return TestOutcome(id=report.nodeid, test=test, backend=param.rstrip("]") or None, outcome=outcome,
                       message=_message(report), duration_s=round(float(report.duration), 6),
                       properties={str(k): v for k, v in report.user_properties})


def _message(report: Any) -> str | None:
    """A skip's reason or a failure's one-line cause."""
    if report.passed:
        return None
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    first = text.strip().splitlines()[0] if text.strip() else ""  # not pytest's assertion rewriting below it
    return " ".join(first.split())[:500]
