"""``edgeq bench``: latency of one or more models on one or more backends, interleaved, with ratios."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from edgeq.cli import options
from edgeq.cli.argtypes import integer, integer_list, number
from edgeq.cli.output import info as info_line
from edgeq.cli.output import print_table
from edgeq.errors import BackendUnavailable, GateFailed, UsageError


def register(verbs: Any) -> None:
    bench = options.verb_parser(
        verbs, "bench", help="measure latency on CPU, XNNPACK, reference kernels, Edge TPU, TFLM or Android",
        description="Warm-up by count and time, measured runs by count and minimum time (as benchmark_model "
                    "does), init and first inference reported apart; several models/backends/thread counts "
                    "interleaved and compared as ratios. Exit 3 when no requested backend can run here.",
        handler=run_bench)
    bench.add_argument("models", nargs="+", metavar="MODEL", help=".tflite model(s)")
    options.add_runtime_options(bench, several=True)
    bench.add_argument("--runs", type=integer(1, 10_000_000), default=50, help="measured runs, at least (50)")
    bench.add_argument("--min-seconds", type=number(0, 3600), default=1.0,
                       help="measured time per configuration, at least")
    bench.add_argument("--max-seconds", type=number(0, 86_400, strict_low=True), default=150.0,
                       help="stop measuring after this long")
    bench.add_argument("--warmup-runs", type=integer(0, 1_000_000), default=1)
    bench.add_argument("--warmup-seconds", type=number(0, 3600), default=0.5)
    bench.add_argument("--cpus", type=integer_list(0, 4095), help="pin this process to these CPU ids (affinity)")
    bench.add_argument("--require-full-delegation", action="store_true",
                       help="exit 1 when XNNPACK (or the Edge TPU) did not take the whole graph")
    bench.add_argument("--accelerator", default="cpu", choices=["cpu", "xnnpack", "gpu", "nnapi"],
                       help="android backend: which delegate benchmark_model applies")
    bench.add_argument("--android-binary", metavar="PATH", help="android backend: the benchmark_model binary")
    options.add_preprocess_option(
        bench, purpose="how image inputs are generated: random 0-255 pixels through this preprocessing, then quantized",
        default="each model's own TFLite Metadata or sidecar, else random values over the input type's range")
    bench.add_argument("--taskset", metavar="MASK", help="android backend: CPU mask for taskset (e.g. f0 = big cores)")
    options.add_machine_output_options(bench, "all results with their raw samples")


def run_bench(args: argparse.Namespace) -> int:
    from edgeq.harness import environment
    from edgeq.harness.backends import availability, parse_backend

    models = [Path(m) for m in args.models]
    for model in models:
        if not model.is_file():
            from edgeq.errors import InputError

            raise InputError(f"no such model file: {model}")
    if args.cpus:
        usable = sorted(os.sched_getaffinity(0))
        unknown = sorted(set(args.cpus) - set(usable))
        if unknown:
            raise UsageError(f"--cpus: no CPU {', '.join(map(str, unknown))} here (this process may use "
                             f"{', '.join(map(str, usable))})")
        environment.pin_cpus(args.cpus)
    backends, skipped = [], []
    for name in dict.fromkeys(b.strip() for b in args.backend.split(",") if b.strip()):
        backend = parse_backend(name)
        status = availability(backend)
        if status.available:
            backends.append(backend)
        else:
            skipped.append({"backend": str(backend), "reason": status.reason})
            print(f"edgeq: warning: backend {backend} unavailable: {status.reason}", file=sys.stderr)
    if not backends:
        raise BackendUnavailable(f"no requested backend can run here ({skipped[0]['reason']})" if len(skipped) == 1
                                 else "none of the requested backends can run here")
    local = [b for b in backends if not b.remote]
    document: dict[str, Any] = {"environment": environment.capture(), "skipped": skipped, "results": [],
                                "ratios": [], "warnings": []}
    if local:
        _bench_local(models, local, args, document)
    for backend in (b for b in backends if b.kind == "android"):
        _bench_android(models, backend, args, document)
    from edgeq.harness.latency import PEAK_RSS_SOURCE, peak_rss_mib

    document["peak_rss_mib"] = round(peak_rss_mib(), 1)
    document["peak_rss_source"] = PEAK_RSS_SOURCE
    document["warnings"] = list(dict.fromkeys(document["warnings"]))  # each distinct warning once per run
    from edgeq.cli.output import emit_json, tables_wanted

    if tables_wanted(args):
        _print(document)
    emit_json(args.json, "edgeq.bench", document)
    failures = [w for w in document["warnings"] if w.startswith("not fully delegated")]
    if args.require_full_delegation and failures:
        raise GateFailed(failures[0])
    return 0


def _bench_local(models: list[Path], backends: list[Any], args: argparse.Namespace,
                 document: dict[str, Any]) -> None:
    from edgeq.harness import environment
    from edgeq.harness.backends import open_session
    from edgeq.harness.latency import LatencyConfig, classify, open_timed, ratio_of, run_interleaved
    from edgeq.tflite import model as tfl

    config = LatencyConfig(warmup_runs=args.warmup_runs, warmup_seconds=args.warmup_seconds, runs=args.runs,
                           min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    from edgeq.tflite.probe import probe

    data = {m: m.read_bytes() for m in models}
    for model in models:
        tfl.parse(data[model], str(model))
        probe(model, "cpu", what=str(model))  # a runtime crash on an untrusted model is that model's error
    feeds = _input_feeds(models, data, args, document)
    measurements, keys = [], []
    for model in models:
        for backend in backends:
            for threads in args.threads:
                label = f"{model.name} {backend} t{threads}"
                opener = lambda m=model, b=backend, t=threads: _FedSession(open_session(data[m], b, t),  # noqa: E731
                                                                          feeds[m])
                measurements.append(open_timed(label, opener))
                keys.append((model, backend, threads))
    run_interleaved(measurements, config)
    for m in measurements:
        getattr(m.session, "close", lambda: None)()  # CompiledModel: release it with its teardown log captured
    by_key = dict(zip(keys, measurements, strict=True))
    for (model, backend, threads), m in by_key.items():
        runtime_name, _, runtime_version = m.session.runtime.partition(" ")
        delegation = dataclasses.asdict(m.session.delegation) if m.session.delegation else None
        from edgeq.artifacts import BenchResult

        result = BenchResult(model_sha256=tfl.sha256(data[model]), backend=str(backend), threads=threads,
                             runtime=runtime_name, runtime_version=runtime_version, init_ms=round(m.init_ms, 3),
                             first_inference_ms=round(m.first_ms, 3), latency=m.stats(),
                             environment=environment.capture(threads), model=str(model), delegation=delegation)
        steady = classify(m.samples_ms)
        fully = getattr(m.session, "fully_accelerated", None)
        document["results"].append({**result.to_dict(), "stability": steady.to_dict(),
                                    **({} if fully is None else {"fully_accelerated": fully})})
        if steady.stable is False:
            document["warnings"].append(f"unstable: {m.label}: {'; '.join(steady.reasons)} (ratios using it are "
                                        "marked; measure on a quiet machine or pin with --cpus)")
        if fully is False:
            document["warnings"].append(f"not fully delegated: {model.name} on {backend}: LiteRT reports the model "
                                        "not fully accelerated (some ops run on its CPU fallback kernels)")
        d = m.session.delegation
        if d is not None and not d.full:
            document["warnings"].append(
                f"not fully delegated: {model.name} on {backend}: {d.nodes_delegated} of {d.nodes_total} nodes in "
                f"{d.partitions} partition(s); left on the builtin kernels: {', '.join(d.undelegated_ops) or '-'}")
    for (model, backend, threads), m in by_key.items():  # backend pairs, same model and threads
        for (model2, backend2, threads2), m2 in by_key.items():
            if model2 == model and threads2 == threads and (backend.kind, backend2.kind) in BACKEND_PAIRS:
                what = f"{model.name} t{threads}: {backend} / {backend2}"
                document["ratios"].append(ratio_of(what, m, m2).to_dict())
    floats = [m for m in models if _is_float(data[m])]
    ints = [m for m in models if not _is_float(data[m])]
    for int_model in ints:
        for float_model in floats:
            for backend in backends:
                for threads in args.threads:
                    what = f"{backend} t{threads}: {int_model.name} / {float_model.name} (int8 / fp32)"
                    document["ratios"].append(ratio_of(what, by_key[(int_model, backend, threads)],
                                                       by_key[(float_model, backend, threads)]).to_dict())


#: (numerator, denominator) backends compared on the same model and threads: what XNNPACK buys over the
#: builtin kernels, and LiteRT's CompiledModel CPU path against the interpreter with XNNPACK.
BACKEND_PAIRS = (("xnnpack", "cpu"), ("litert-cpu", "xnnpack"))


class _FedSession:
    """A session fed what bench chose: the latency loop's ``set_inputs`` (random values over each input
    type's range) is replaced by ``feed``'s arrays; everything else is the wrapped session's."""

    def __init__(self, session: Any, feed: Any) -> None:
        self._session, self._feed = session, feed

    def set_inputs(self, arrays: list[Any]) -> None:
        self._session.set_inputs(self._feed(self._session) if self._feed is not None else arrays)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _input_feeds(models: list[Path], data: dict[Path, bytes], args: argparse.Namespace,
                 document: dict[str, Any]) -> dict[Path, Any]:
    """Per model: how its image inputs are generated (random 0..255 pixels through the model's own
    preprocessing, quantized with the input's scale and zero point), said on a line and in the JSON."""
    import dataclasses as dc

    import numpy as np

    from edgeq.calib.data import parse_preprocessing
    from edgeq.harness.accuracy import quantize
    from edgeq.harness.latency import random_inputs
    from edgeq.preprocess import apply_preprocessing, own_preprocessing, resolve

    explicit = parse_preprocessing(args.preprocess)
    out = sys.stderr if args.json == "-" else sys.stdout
    feeds: dict[Path, Any] = {}
    document["inputs"] = {}
    for model in models:
        resolved = resolve(explicit, model=own_preprocessing(data[model], model), images=False,
                           model_name=model.name)
        for warning in resolved.warnings:
            print(f"edgeq: warning: {warning}", file=sys.stderr)
        entry = {"model": str(model), "preprocessing": resolved.spec.to_dict() if resolved.spec else None,
                 "preprocessing_source": resolved.source.value if resolved.spec else None,
                 "feed": "pixels" if resolved.spec else "type-range", "warnings": list(resolved.warnings)}
        document["inputs"][str(model)] = entry
        if resolved.spec is None:
            info_line(f"inputs of {model.name}: random values over each input type's range (no preprocessing known: "
                      "no --preprocess, TFLite Metadata or sidecar)", out)
            feeds[model] = None
            continue
        info_line(f"inputs of {model.name}: random 0-255 pixels, {resolved.line()}", out)
        spec = dc.replace(resolved.spec, size=None)  # pixels are drawn at the input's own size

        def feed(session: Any, spec: Any = spec) -> list[Any]:
            rng = np.random.default_rng(0)
            arrays = random_inputs(session, 0)
            for i, info in enumerate(session.inputs):
                if len(info.shape) == 4 and info.shape[-1] in (1, 3, 4):
                    pixels = rng.integers(0, 255, size=info.shape, endpoint=True).astype(np.uint8)
                    arrays[i] = quantize(apply_preprocessing(spec, pixels), info)
            return arrays

        feeds[model] = feed
    return feeds


def _is_float(data: bytes) -> bool:
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(data)
    graph = parsed.subgraphs[0]
    return tfl.tensor_type_name(graph.tensors[graph.inputs[0]].type) == "FLOAT32" and not any(
        tfl.tensor_type_name(t.type) == "INT8" for t in graph.tensors)


def _bench_android(models: list[Path], backend: Any, args: argparse.Namespace, document: dict[str, Any]) -> None:
    from edgeq.harness import android

    if not args.android_binary:
        raise UsageError("the android backend needs --android-binary PATH (TFLite's benchmark_model for the device)")
    for model in models:
        for threads in args.threads:
            result = android.run_benchmark(model, backend.option, Path(args.android_binary), args.accelerator,
                                           threads, runs=args.runs, warmup_runs=args.warmup_runs,
                                           min_seconds=args.min_seconds, taskset=args.taskset,
                                           report_peak_memory=True)
            entry = {k: v for k, v in result.to_dict().items() if k not in ("raw_output", "commands")}
            document["results"].append({**entry, "model": str(model)})
            if args.accelerator != "cpu" and result.fully_delegated is not True:
                document["warnings"].append(f"not fully delegated: {model.name} on {backend} ({args.accelerator}): "
                                            f"benchmark_model reports applied={result.delegate_applied}, "
                                            f"fully={result.fully_delegated}")


def _print(document: dict[str, Any]) -> None:
    rows = []
    for r in document["results"]:
        if r.get("kind") == "android_benchmark":
            rows.append([Path(r["model"]).name, f"android:{r['serial']} {r['accelerator']}", r["threads"],
                         _ms(r["init_us"], 1e-3), _ms(r["first_us"], 1e-3), _ms(r["avg_us"], 1e-3), "-", "-",
                         r["count"], "-", "-", "-", "-", "-"])
            continue
        lat = r["latency"]
        d = r.get("delegation")
        fully = r.get("fully_accelerated")
        took = (f"{d['nodes_delegated']}/{d['nodes_total']} in {d['partitions']}" if d else
                "-" if fully is None else "all" if fully else "partial")
        rows.append([Path(r["model"]).name, r["backend"], r["threads"], f"{r['init_ms']:.1f}",
                     f"{r['first_inference_ms']:.2f}", f"{lat['mean_ms']:.3f}", f"{lat['p50_ms']:.3f}",
                     f"{lat['p90_ms']:.3f}", lat["n"], *_steadiness(lat), took])
    print_table(["model", "backend", "threads", "init ms", "first ms", "mean ms", "p50 ms", "p90 ms", "n",
                 "stalls", "p90/p50", "drift", "stable", "delegated"], rows)
    for entry in document["ratios"]:
        print(f"ratio {entry['what']}: {entry['ratio']:.3f}" + (" (unstable)" if entry.get("unstable") else
                                                               " (too few runs to judge stability)"
                                                               if entry.get("unjudged") else ""))
    for warning in document["warnings"]:
        print(f"warning: {warning}")
    env = document["environment"]
    print(f"environment: {env['cpu_model']}, {env['cpu_count']} cores, affinity {env['affinity']}, governor "
          f"{env['governor']}, load {env.get('loadavg', '?')} at start; ai-edge-litert "
          f"{env.get('ai-edge-litert_version', '?')}; peak RSS {document['peak_rss_mib']} MiB (whole process)")


def _steadiness(latency: dict[str, Any]) -> list[str]:
    """Share of runs over 2x the median, p90/p50, the drift between the medians of the run's thirds, and the
    verdict of edgeq.harness.latency.classify on them: how far to trust the figures."""
    from edgeq.harness.budget import stall_fraction
    from edgeq.harness.latency import classify

    samples = latency.get("samples_ms") or []
    steady = classify(samples)
    verdict = {True: "yes", False: "NO", None: "?"}[steady.stable]
    return [f"{stall_fraction(samples):.0%}", f"{steady.tail:.2f}", f"{steady.drift:.0%}", verdict]


def _ms(value: float | None, factor: float) -> str:
    return "-" if value is None else f"{value * factor:.3f}"
