"""``edgeq instrument``: the same model with per-inference min/max of its activations as extra outputs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.output import emit_json, info


def sidecar_path(output: str | Path) -> Path:
    """The sidecar beside the instrumented model: ``M_instrumented.json`` for ``M_instrumented.tflite``."""
    return Path(output).with_suffix(".json")


def register(verbs: Any) -> None:
    parser = options.verb_parser(
        verbs, "instrument", help="add per-inference min/max of activations as extra model outputs",
        description="Writes the model with a builtin REDUCE_MIN and REDUCE_MAX per activation tensor (float32, or "
                    "int8 in its own quantized domain) appended as extra outputs after the original ones, and a "
                    "sidecar OUTPUT.json mapping each extra output to its tensor. The original outputs are checked "
                    "bit-identical on XNNPACK and the builtin kernels before anything is written (docs/instrument.md).",
        handler=run_instrument)
    options.add_model_argument(parser, "the .tflite model to instrument (float or full-integer INT8)")
    options.add_output_option(parser, "the instrumented .tflite to write (its sidecar: the same name with .json)")
    parser.add_argument("--tensors", metavar="NAME[,NAME]", help="instrument only these activation tensors")
    parser.add_argument("--match", metavar="REGEX", help="instrument only the activation tensors whose name matches")
    options.add_force_option(parser, "replace an existing output and sidecar")
    options.add_machine_output_options(parser, "the sidecar's content")


def run_instrument(args: argparse.Namespace) -> int:
    from edgeq.errors import UsageError
    from edgeq.files import write_bytes_atomic, write_text_atomic
    from edgeq.tflite import instrument as ins
    from edgeq.tflite import model as tfl
    from edgeq.versions import package_versions

    output, sidecar = Path(args.output), sidecar_path(args.output)
    if output.suffix.lower() != ".tflite":
        raise UsageError(f"output {args.output}: the instrumented model's name ends in .tflite")
    if not args.force:
        for path in (output, sidecar):
            if path.exists():
                raise UsageError(f"{path} exists; pass --force to replace it")
    else:
        _check_edgeq_made(output, sidecar)
    data = tfl.read_bytes(args.model)
    names = [n.strip() for n in (args.tensors or "").split(",") if n.strip()]
    tensors = ins.select(ins.activation_tensors(tfl.parse(data, args.model)), names, args.match)
    instrumented, extra = ins.instrument(data, tensors)
    ins.verify(data, instrumented, extra)
    original = len(tfl.parse(data).subgraphs[0].outputs)
    record = ins.InstrumentSidecar(
        path=str(output), sha256=tfl.sha256(instrumented), source=str(args.model), source_sha256=tfl.sha256(data),
        original_outputs=original, outputs=tuple(extra),
        tool_versions=package_versions(("edgeq", "ai-edge-litert", "numpy")))
    import json

    write_bytes_atomic(output, instrumented)
    write_text_atomic(sidecar, json.dumps(record.to_dict(), indent=2) + "\n")
    info(f"{output}: {len(tensors)} tensors instrumented, outputs {original}..{original + len(extra) - 1} added "
         f"({len(data) / 1024:.1f} -> {len(instrumented) / 1024:.1f} KiB); sidecar {sidecar}")
    emit_json(args.json, "edgeq.instrument", {"model": str(output), "sidecar_path": str(sidecar),
                                               "sidecar": record.to_dict()})
    return 0


def _check_edgeq_made(output: Path, sidecar: Path) -> None:
    """--force replaces only what ``edgeq instrument`` wrote: an existing pair whose sidecar is an instrument
    sidecar recording the existing model's sha256. Anything else there is the user's and is refused (exit 2)."""
    import json

    from edgeq.errors import UsageError
    from edgeq.tflite import instrument as ins
    from edgeq.tflite import model as tfl

    if not output.exists() and not sidecar.exists():
        return
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        record = None
    ours = isinstance(record, dict) and record.get("kind") == ins.InstrumentSidecar.kind and (
        not output.exists() or (output.is_file() and record.get("sha256") == tfl.sha256(output.read_bytes())))
    if not ours:
        raise UsageError(f"{output} (or {sidecar.name}) was not written by edgeq instrument; --force replaces only "
                         f"an instrumented model and its sidecar, never another file: choose another -o")
