"""Regenerate the committed device-suite model and its recorded bench results (run from the repo root).

    .venv/bin/python device_tests/data/make_recorded.py            # model + quiet recording
    .venv/bin/python device_tests/data/make_recorded.py --busy     # + a recording under two busy loops

The model is the zoo CNN (full recipe, trained deterministically here) converted by edgeq with the
auto estimator on 256 real digits. The recordings are real ``edgeq bench --json`` outputs of that model
on this machine: ``make test`` judges the latency budget on them instead of on the CI machine's clock.
The busy one was measured while two processes kept both cores busy, so it holds the periodic stalls a
shared machine produces; tests/test_latency_budget.py uses it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = HERE / "cnn_digits_int8.tflite"
QUIET = HERE / "recorded_bench_cnn_digits_int8_quiet.json"
BUSY = HERE.parent.parent / "tests" / "data" / "latency" / "recorded_bench_cnn_digits_int8_busy.json"


def _spin() -> None:
    while True:
        pass


def _bench(out: Path) -> None:
    from edgeq.cli import main as cli

    code = cli.main(["bench", str(MODEL), "--backend", "ref,cpu,xnnpack", "--runs", "200", "--min-seconds", "0",
                     "--json", str(out)])
    if code != 0:
        raise SystemExit(f"bench exited {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", action="store_true", help="also record under two busy loops")
    parser.add_argument("--keep-model", action="store_true", help="bench the committed model as it is")
    parser.add_argument("--skip-quiet", action="store_true", help="keep the committed quiet recording")
    args = parser.parse_args()
    if not args.keep_model:
        import edgeq
        from edgeq_models import ZOO, build

        with tempfile.TemporaryDirectory() as tmp:
            built = build("cnn", cache=Path(tmp) / "zoo")
            staged = Path(tmp) / MODEL.name
            edgeq.convert(built.path, staged, calib="digits:train", limit=256, preprocessing=ZOO["cnn"].preprocessing)
            shutil.copyfile(staged, MODEL)
    if not args.skip_quiet:
        _bench(QUIET)
    if args.busy:
        BUSY.parent.mkdir(parents=True, exist_ok=True)
        loops = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
        for loop in loops:
            loop.start()
        try:
            _bench(BUSY)
        finally:
            for loop in loops:
                loop.terminate()


if __name__ == "__main__":
    main()
