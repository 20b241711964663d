"""The machine a measurement ran on: recorded with every result so numbers can be compared honestly."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pin_cpus(cpus: list[int]) -> None:
    """Restrict this process (and the runtime's threads) to ``cpus``."""
    os.sched_setaffinity(0, set(cpus))


#: Packages whose versions decide a latency figure (the runtime's kernels, the array library feeding it).
VERSIONED = ("edgeq", "ai-edge-litert", "numpy")


def loadavg() -> str:
    """1/5/15-minute load averages: how busy the machine already was when the measurement started."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unreadable"


def capture(threads: int | None = None) -> dict[str, str]:
    """CPU model, cores, governor and frequency where readable, affinity, load, Python, OS and versions."""
    from edgeq.versions import package_versions

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    env = {
        "cpu_model": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "affinity": ",".join(map(str, affinity)),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": loadavg(),
        **{f"{name}_version": v for name, v in package_versions(VERSIONED).items()},
    }
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    env["governor"] = governor or "unreadable"
    env["cpu0_khz"] = freq or "unreadable"
    if threads is not None:
        env["threads"] = str(threads)
    return env
