"""edgeq's latency numbers against the vendor's own tool (`litert-benchmark`), interleaved in one run.

Usage: python benchmarks/harness_vs_litert.py [--rounds 5] [--runs 100] [--threads 1,2]
For each model and thread count, alternately: edgeq's in-process measurement (xnnpack backend, the
same protocol `edgeq bench` uses) and a `litert-benchmark` subprocess (its CPU accelerator, which is
XNNPACK), `--rounds` times each. Reports both medians and their ratio (target 1.00 +- 0.05), plus
edgeq's per-invoke overhead measured on a 3-op model where the compute is negligible.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def litert_median_ms(model: Path, threads: int, runs: int, out: Path) -> float:
    tool = Path(sys.executable).with_name("litert-benchmark")
    subprocess.run([str(tool), "--model", str(model), "--num_runs", str(runs), "--warmup_runs", "10",
                    "--num_threads", str(threads), "--result_json", str(out)], capture_output=True, check=True)
    return float(json.loads(out.read_text())["latency"]["median_ms"])


def edgeq_median_ms(model: Path, threads: int, runs: int) -> float:
    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.harness.latency import LatencyConfig, open_timed, run_interleaved

    m = open_timed("edgeq", lambda: open_session(model.read_bytes(), parse_backend("xnnpack"), threads))
    run_interleaved([m], LatencyConfig(warmup_runs=10, warmup_seconds=0.0, runs=runs, min_seconds=0.0))
    return m.stats().p50_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    from mobilenet_models import mobilenet_v2_224

    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        float_path, int8_path = mobilenet_v2_224(folder)
        print("| model | threads | edgeq median ms | litert-benchmark median ms | edgeq / litert |")
        print("|---|---:|---:|---:|---:|")
        worst = 0.0
        for model in (float_path, int8_path):
            for t in threads:
                ours, theirs = [], []
                for _ in range(args.rounds):
                    ours.append(edgeq_median_ms(model, t, args.runs))
                    theirs.append(litert_median_ms(model, t, args.runs, folder / "r.json"))
                ratio = statistics.median(ours) / statistics.median(theirs)
                worst = max(worst, abs(ratio - 1))
                print(f"| {model.name} | {t} | {statistics.median(ours):.3f} | {statistics.median(theirs):.3f} | "
                      f"{ratio:.3f} |", flush=True)
        tiny = ROOT / "tests" / "data" / "tiny_int8.tflite"
        overhead = statistics.median(edgeq_median_ms(tiny, 1, 2000) for _ in range(3))
        print(f"\nper-invoke cost of edgeq's measurement loop on a 3-op model (upper bound of its overhead): "
              f"{overhead * 1000:.1f} us")
    print(f"largest deviation from 1.00: {worst:.3f} (target <= 0.05)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
