"""``edgeq datagen``: a condition-stratified calibration set from real images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.output import emit_json, print_table, tables_wanted
from edgeq.errors import UsageError


def _size(text: str) -> tuple[int, int]:
    from datagen.limits import check_size, quote

    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {quote(text)}; use HxW such as 96x96") from None
    try:
        return check_size((height, width), "size", ValueError)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _preprocessing(spec: str | None) -> Any:
    """``--preprocess``: a preprocessing file must be a bounded UTF-8 JSON file before it is parsed."""
    from edgeq.calib.data import parse_preprocessing
    from edgeq.configfile import parse_json, read_config_text

    if spec is not None and spec.strip().lower() != "none":
        path = Path(spec)
        if path.suffix.lower() == ".json" or path.is_file():
            parse_json(read_config_text(path, "preprocessing file"), f"preprocessing file {path}")
    return parse_preprocessing(spec)


def register(verbs: Any) -> None:
    datagen = options.verb_parser(
        verbs, "datagen", help="generate a condition-stratified calibration set from real images",
        description="Sample N images from a source, render each under one named condition (original, "
                    "low_light, high_contrast, noise, blur, jpeg, fog, overexposed, or your own) and write "
                    "images, labels, a manifest that reproduces every sample, and a preview contact sheet.",
        handler=run_datagen)
    datagen.add_argument("--source", required=True,
                         help="an image folder (class subfolders become labels), a .npy/.npz of images, or "
                              "digits:train|val|test, lfw[:split], photos")
    datagen.add_argument("--conditions", default="original,low_light,high_contrast,noise,blur,jpeg,fog,overexposed",
                         help="comma-separated conditions, optionally weighted: noise:2,original (default: all "
                              "eight built-ins, equal quotas)")
    datagen.add_argument("--custom-conditions", metavar="FILE", help="YAML/JSON file adding conditions")
    datagen.add_argument("--severity", type=int, default=3, help="condition severity 1..5 (default 3)")
    datagen.add_argument("--n", type=int, default=256, help="samples in total (default 256, at most 200000)")
    datagen.add_argument("--seed", type=int, default=0)
    datagen.add_argument("--size", type=_size, metavar="HxW",
                         help="resize every image to HxW (each side 1..8192, at most 16.8 megapixels)")
    datagen.add_argument("--gray", action="store_true", help="write single-channel images (default RGB)")
    options.add_preprocess_option(datagen, default=None, purpose="preprocessing that travels with the set (what "
                                                                 "convert/eval/coverage apply)")
    datagen.add_argument("--workers", type=int,
                         help="workers, 1..64 (results do not depend on it): worker processes without --executor "
                              "(default 1: this process), else the executor's (default: every core)")
    options.add_executor_options(datagen, workers=False)
    datagen.add_argument("--strict", action="store_true", help="fail on an undecodable image instead of skipping it")
    options.add_force_option(datagen, "replace the output folder if it is a calibration set edgeq wrote (never a "
                                      "folder with other files, the current or home folder, or a source)")
    options.add_output_option(datagen, "output folder (created; written atomically)")
    options.add_machine_output_options(datagen, "the set's folder, files, fingerprint and counts")


def run_datagen(args: argparse.Namespace) -> int:
    from datagen.conditions import SEVERITIES
    from datagen.generate import DatagenConfig, Terminated, generate, parse_conditions

    if args.severity not in SEVERITIES:
        raise UsageError(f"--severity must be one of {', '.join(map(str, SEVERITIES))}, got {args.severity}")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    from datagen.limits import MAX_WORKERS
    from edgeq.execute import open_executor

    if args.workers is not None and args.workers > MAX_WORKERS:
        raise UsageError(f"--workers must be an integer in 1..{MAX_WORKERS}, got {args.workers}")
    # Without --executor, --workers N > 1 means N worker processes, as before executors existed.
    spec = options.executor_spec(args, default="processes" if (args.workers or 1) > 1 else "local")
    config = DatagenConfig(
        source=args.source, conditions=parse_conditions(args.conditions), n=args.n, severity=args.severity,
        seed=args.seed, size=args.size, channels=1 if args.gray else 3,
        preprocessing=_preprocessing(args.preprocess), strict=args.strict,
        custom_conditions=args.custom_conditions)
    try:
        with open_executor(spec) as executor:
            result = generate(config, args.output, force=args.force, executor=executor)
    except Terminated as stop:
        print(f"edgeq: terminated by signal {stop.signum}; workers stopped, nothing written", file=sys.stderr)
        return 128 + stop.signum
    if tables_wanted(args):
        print_table(["condition", "samples"], [[c, n] for c, n in result.counts.items()])
    print(f"\n{len(result.samples)} samples -> {result.path} (manifest.jsonl, datagen.json, preview.png)")
    if result.rejects:
        print(f"skipped {len(result.rejects)} undecodable image(s); listed under 'rejects' in datagen.json")
    emit_json(args.json, "edgeq.datagen", {
        "path": str(result.path), "samples": len(result.samples), "fingerprint": result.fingerprint,
        "counts": result.counts, "rejects": result.rejects,
        "files": {name: str(result.path / name) for name in ("manifest.jsonl", "datagen.json", "preview.png")}})
    return 0
