"""edgeq coverage --production-log: coverage from an instrumented model's logs equals coverage from the images.

The demo float CNN is instrumented, the instrumented model runs over production images on exactly the kernels
collect() uses, and its per-inference min/max are written as production log records (JSONL and .npz). The
coverage computed from those logs must equal, float for float, the coverage computed from the same images.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edgeq.calib.collect import collection_kernels, model_inputs
from edgeq.calib.coverage import coverage
from edgeq.calib.data import CalibrationSet
from edgeq.calib.log_coverage import BOUNDED_OPS, LoggedTensor, load_sidecar, log_coverage, parse_segment_by
from edgeq.cli import main as cli
from edgeq.errors import InputError, UsageError
from edgeq.intake.load import load_float_model
from edgeq.production import TensorExtremes, append_record, write_shard
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import make_interpreter

DEMO = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"
SCHEMA = Path(__file__).parents[1] / "docs" / "schemas" / "edgeq.coverage.schema.json"
T0 = 1_764_000_000.0  # epoch seconds of the first simulated record
STEP = 900.0  # one record every 15 minutes
WINDOW = 3600.0
SEGMENTS = [("Pixel 8", "1.0", {"camera": "back"}), ("Pixel 8", "1.1", {}), ("Galaxy S24", "1.1", {"camera": "front"})]


def _set(arrays: np.ndarray, conditions: list[str] | None = None, source: str = "mem") -> CalibrationSet:
    return CalibrationSet(source=source, arrays=(arrays.astype(np.float32),), preprocessing=None,
                          conditions=tuple(conditions) if conditions else None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("coverage_logs")
    instrumented = root / "cnn_digits_float32_instrumented.tflite"
    assert cli.main(["instrument", str(DEMO), "-o", str(instrumented), "--quiet"]) == 0
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, size=(24, 32, 32, 3))
    calib[8:16] *= 0.5  # three conditions of different reach
    calib[16:] *= 1.4
    production = rng.uniform(-1, 1, size=(12, 32, 32, 3)) * np.linspace(0.6, 1.6, 12)[:, None, None, None]
    np.save(root / "calib.npy", calib.astype(np.float32))
    np.save(root / "production.npy", production.astype(np.float32))
    return {"root": root, "float": load_float_model(DEMO), "instrumented": instrumented,
            "sidecar_path": instrumented.with_suffix(".json"),
            "sidecar": load_sidecar(instrumented.with_suffix(".json")),
            "calib": _set(calib, ["a"] * 8 + ["b"] * 8 + ["c"] * 8), "production": _set(production)}


def _run_instrumented(demo: dict, data: CalibrationSet, model: Path | None = None, sidecar: Any = None,
                      ) -> list[dict[str, tuple[float, float]]]:
    """The app: the instrumented model on the kernels collect() uses; per inference, {tensor: (min, max)} as the
    model outputs them (float values, or int8 codes: float inputs are quantized for an int8 input)."""
    model, sidecar = model or demo["instrumented"], sidecar or demo["sidecar"]
    interpreter, _ = make_interpreter(model.read_bytes(), collection_kernels(demo["float"].flatbuffer), threads=1)
    details = interpreter.get_output_details()
    per_inference = []
    for _, batch in data.samples(model_inputs(interpreter)):
        for detail, sample in zip(interpreter.get_input_details(), batch, strict=True):
            if detail["dtype"] == np.int8:
                scale, zero = detail["quantization"]
                sample = np.clip(np.round(sample / scale) + zero, -128, 127).astype(np.int8)
            interpreter.set_tensor(detail["index"], sample)
        interpreter.invoke()
        values: dict[str, list[float]] = {}
        for out in sidecar.outputs:
            values.setdefault(out.tensor, [0.0, 0.0])[out.statistic == "max"] = \
                float(interpreter.get_tensor(details[out.output_index]["index"]).item())
        per_inference.append({name: (lo, hi) for name, (lo, hi) in values.items()})
    return per_inference


def _records(demo: dict, data: CalibrationSet) -> list[dict]:
    return [{"time": T0 + i * STEP, "segment": SEGMENTS[i % len(SEGMENTS)], "tensors": tensors}
            for i, tensors in enumerate(_run_instrumented(demo, data))]


def _write_jsonl(path: Path, sha: str, records: list[dict]) -> Path:
    for r in records:
        device, app, tags = r["segment"]
        append_record(path, model_sha256=sha, time=r["time"], tensors=r["tensors"], device=device, app_version=app,
                      tags=tags)
    return path


def _write_npz(path: Path, sha: str, records: list[dict]) -> Path:
    names = sorted(records[0]["tensors"])
    write_shard(path, model_sha256=sha, tensors=names,
                mins=np.array([[r["tensors"][n][0] for n in names] for r in records]),
                maxs=np.array([[r["tensors"][n][1] for n in names] for r in records]),
                times=np.array([r["time"] for r in records]), devices=[r["segment"][0] for r in records],
                app_versions=[r["segment"][1] for r in records],
                tags={"camera": [r["segment"][2].get("camera", "") for r in records]})
    return path


@pytest.fixture(scope="module")
def logged(demo: dict) -> dict:
    records = _records(demo, demo["production"])
    sha = demo["sidecar"].sha256
    return {"records": records, "jsonl": _write_jsonl(demo["root"] / "app.jsonl", sha, records),
            "npz": _write_npz(demo["root"] / "shard.npz", sha, records)}


@pytest.mark.parametrize(("layout", "threshold"), [("jsonl", 1.3), ("npz", 1.3), ("jsonl", 1.0)])
def test_coverage_from_logs_equals_coverage_from_the_same_images(demo: dict, logged: dict, layout: str,
                                                                 threshold: float) -> None:
    """1.3: a margin, so flagged tensors name the conditions that reach production; 1.0: gaps beyond every one."""
    from_images = coverage(demo["float"], demo["calib"], demo["production"], threshold)
    from_logs = log_coverage(demo["float"], demo["calib"], [logged[layout]], demo["sidecar"], demo["sidecar_path"],
                             threshold, WINDOW)
    images = {layer.name: layer for layer in from_images.layers}
    logs = from_logs.coverage.layers
    assert [layer.name for layer in logs] == [layer.name for layer in from_images.layers]  # every tensor logged
    assert from_logs.not_logged == () and from_logs.not_in_model == ()
    for layer in logs:
        expected = images[layer.name]
        assert (layer.production_max, layer.ratio, layer.flagged, layer.closing_conditions, layer.calib_max) == (
            expected.production_max, expected.ratio, expected.flagged, expected.closing_conditions,
            expected.calib_max), layer.name
        assert layer.production_p9999 is None  # min/max logs hold no distribution
    if threshold > 1:  # the comparison is not vacuous
        assert any(layer.flagged and layer.closing_conditions for layer in logs)
    else:
        assert any(layer.flagged for layer in logs) and any(not layer.flagged for layer in logs)
    assert from_logs.coverage.per_condition_max == from_images.per_condition_max


def _reference_maxima(records: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in records:
        for name, (lo, hi) in r["tensors"].items():
            out[name] = max(out.get(name, -math.inf), -lo, hi)
    return out


def test_segments_and_windows_match_a_slow_reference(demo: dict, logged: dict) -> None:
    threshold = 1.1
    report = log_coverage(demo["float"], demo["calib"], [logged["jsonl"]], demo["sidecar"], demo["sidecar_path"],
                          threshold, WINDOW)
    calib = {layer.name: layer.calib_max for layer in report.coverage.layers}

    def expected(records: list[dict]) -> dict[str, tuple[float, float, bool]]:
        maxima = _reference_maxima(records)
        return {n: (m, calib[n] / m if m > 0 else math.inf, (calib[n] / m if m > 0 else math.inf) < threshold)
                for n, m in maxima.items()}

    records = logged["records"]
    assert len(report.segments) == len(SEGMENTS)
    for segment in report.segments:
        key = (segment.segment.device, segment.segment.app_version, dict(segment.segment.tags))
        mine = [r for r in records if r["segment"] == key]
        assert {t.name: (t.production_max, t.ratio, t.flagged) for t in segment.tensors} == expected(mine)
    windows = {}
    for r in records:
        windows.setdefault(math.floor(r["time"] / WINDOW), []).append(r)
    assert [w.start for w in report.windows] == [i * WINDOW for i in sorted(windows)]
    for w in report.windows:
        rows = expected(windows[int(w.start // WINDOW)])
        assert w.flagged == sum(f for _, _, f in rows.values()) and w.tensors == len(rows)
        assert w.worst_ratio == min(r for _, r, _ in rows.values())


@pytest.mark.parametrize("by", ["device", "tag:camera", "app_version,tag:camera"])
def test_segments_rolled_up_match_a_slow_reference(demo: dict, logged: dict, by: str) -> None:
    report = log_coverage(demo["float"], demo["calib"], [logged["npz"]], demo["sidecar"], demo["sidecar_path"],
                          segment_by=parse_segment_by(by))
    dims = by.split(",")

    def key(segment: tuple) -> tuple:
        device, app, tags = segment
        return (device if "device" in dims else "", app if "app_version" in dims else "",
                tuple(sorted((k, v) for k, v in tags.items() if f"tag:{k}" in dims)))

    groups: dict[tuple, list[dict]] = {}
    for r in logged["records"]:
        groups.setdefault(key(r["segment"]), []).append(r)
    got = {(s.segment.device, s.segment.app_version, s.segment.tags): {t.name: t.production_max for t in s.tensors}
           for s in report.segments}
    assert got == {k: _reference_maxima(v) for k, v in groups.items()}


def test_segment_by_is_checked() -> None:
    for bad in ("", "country", "tag:", "device,os"):
        with pytest.raises(UsageError):
            parse_segment_by(bad)
    assert parse_segment_by("device, device,tag:x") == ("device", "tag:x")


def test_bad_lines_and_other_models_are_counted_not_merged(demo: dict, logged: dict, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(logged["jsonl"].read_bytes() + b"{not json\n")
    _write_jsonl(path, "0" * 64, logged["records"][:2])  # another model's records, beyond anything calibrated
    with path.open("ab") as f:
        f.write(json.dumps({"version": 1, "model_sha256": demo["sidecar"].sha256, "time": 1,
                            "tensors": {"nope": [0, 1]}}).encode() + b"\n")
    clean = log_coverage(demo["float"], demo["calib"], [logged["jsonl"]], demo["sidecar"], demo["sidecar_path"])
    mixed = log_coverage(demo["float"], demo["calib"], [path], demo["sidecar"], demo["sidecar_path"])
    assert {r.value: n for r, n in mixed.read.bad.items()} == {"invalid_json": 1, "model_mismatch": 2,
                                                                 "unknown_tensor": 1}
    assert mixed.coverage.layers == clean.coverage.layers and mixed.records == clean.records


def test_a_subset_instrumented_leaves_the_rest_not_logged(demo: dict, logged: dict, tmp_path: Path) -> None:
    names = sorted(logged["records"][0]["tensors"])[:3]
    path = tmp_path / "subset.jsonl"
    for r in logged["records"]:
        append_record(path, model_sha256=demo["sidecar"].sha256, time=r["time"],
                      tensors={n: r["tensors"][n] for n in names})
    report = log_coverage(demo["float"], demo["calib"], [path], demo["sidecar"], demo["sidecar_path"])
    assert sorted(layer.name for layer in report.coverage.layers) == names
    assert len(report.not_logged) == len(logged["records"][0]["tensors"]) - 3
    assert not set(report.not_logged) & set(names)


def test_int8_codes_are_dequantized_and_floats_refused() -> None:
    tensor = LoggedTensor("t", "int8", scale=0.5, zero_point=-128)
    extremes = TensorExtremes(-128.0, 127.0, 1, 1, 0.0, 0.0)
    assert tensor.real(extremes, "here") == (0.0, 127.5)
    assert tensor.saturated(extremes)  # the top code; the bottom one is the zero point, real 0
    assert not tensor.saturated(TensorExtremes(-128.0, 100.0, 1, 1, 0.0, 0.0))
    for bad in (TensorExtremes(-128.0, 12.5, 1, 1, 0.0, 0.0), TensorExtremes(-129.0, 0.0, 1, 1, 0.0, 0.0)):
        with pytest.raises(InputError, match="no int8 code"):
            tensor.real(bad, "here")
    assert LoggedTensor("f", "float32").real(TensorExtremes(-2.5, 3.0, 1, 1, 0.0, 0.0), "here") == (-2.5, 3.0)


def test_a_sidecar_of_another_model_is_refused(demo: dict, logged: dict, tmp_path: Path) -> None:
    document = json.loads(demo["sidecar_path"].read_text())
    document["source_sha256"] = "f" * 64
    (tmp_path / "other.json").write_text(json.dumps(document))
    code = cli.main(["coverage", str(DEMO), "--calib", str(demo["root"] / "calib.npy"), "--production-log",
                     str(logged["jsonl"]), "--instrumented", str(tmp_path / "other.json"), "--quiet"])
    assert code == 2


def test_cli_exit_codes_and_clean_json(demo: dict, logged: dict, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    calib = str(demo["root"] / "calib.npy")
    base = ["coverage", str(DEMO), "--instrumented", str(demo["sidecar_path"])]
    # logs of the calibration images themselves: covered, exit 0
    own = _write_jsonl(tmp_path / "own.jsonl", demo["sidecar"].sha256, _records(demo, _set(np.load(calib))))
    assert cli.main([*base, "--calib", calib, "--production-log", str(own), "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)  # stdout is the document alone
    assert document["kind"] == "edgeq.coverage" and document["flagged"] == 0
    assert document["production_source"] == "logs" and document["production_log"]["records"] == 24
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))  # the published schema knows the new keys
    # production beyond calibration: exit 1, with plots
    code = cli.main([*base, "--calib", calib, "--production-log", str(logged["jsonl"]), "--window", "3600",
                     "-o", str(tmp_path / "out"), "--json", str(tmp_path / "cov.json")])
    assert code == 1
    written = json.loads((tmp_path / "out" / "coverage.json").read_text())
    assert written["flagged"] > 0 and len(written["production_log"]["windows"]) == len(
        {math.floor(r["time"] / WINDOW) for r in logged["records"]})
    assert all(layer["production_p9999"] is None for layer in written["layers"])
    jsonschema.validate(written, json.loads(SCHEMA.read_text()))
    for plot in ("coverage.png", "drift.png"):
        assert (tmp_path / "out" / plot).read_bytes()[:4] == b"\x89PNG"
    first = (tmp_path / "out" / "drift.png").read_bytes()
    assert cli.main([*base, "--calib", calib, "--production-log", str(logged["jsonl"]), "--window", "3600",
                     "-o", str(tmp_path / "again"), "--quiet"]) == 1
    assert (tmp_path / "again" / "drift.png").read_bytes() == first  # deterministic: no timestamp inside
    out = capsys.readouterr().out
    assert "segment" in out and "drift" in out
    # no valid record at all: exit 2, no document
    _write_jsonl(tmp_path / "foreign.jsonl", "0" * 64, logged["records"][:2])
    assert cli.main([*base, "--calib", calib, "--production-log", str(tmp_path / "foreign.jsonl"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "model_mismatch 2" in captured.err
    # the two production sources exclude each other
    assert cli.main([*base, "--calib", calib, "--production", calib, "--production-log", str(own)]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_the_sidecar_beside_the_model_is_found(demo: dict, logged: dict, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(DEMO.read_bytes())
    assert cli.main(["instrument", str(model), "-o", str(tmp_path / "m_instrumented.tflite"), "--quiet"]) == 0
    assert tfl.sha256((tmp_path / "m_instrumented.tflite").read_bytes()) == demo["sidecar"].sha256
    code = cli.main(["coverage", str(model), "--calib", str(demo["root"] / "calib.npy"), "--production-log",
                     str(logged["npz"]), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1 and document["production_log"]["instrumented_sidecar"] == str(tmp_path / "m_instrumented.json")


def test_an_int8_model_logs_codes_that_are_dequantized(demo: dict, tmp_path: Path) -> None:
    """The deployed INT8 model (converted from MODEL, then instrumented) logs int8 codes; the converter sidecar ties
    it to MODEL, and production max|x| is the dequantized codes' (reference: scale * (code - zero_point))."""
    int8 = tmp_path / "m_int8.tflite"
    assert cli.main(["convert", str(DEMO), "--calib", str(demo["root"] / "calib.npy"), "-o", str(int8),
                     "--method", "minmax", "--quiet"]) == 0
    instrumented = tmp_path / "m_int8_instrumented.tflite"
    assert cli.main(["instrument", str(int8), "-o", str(instrumented), "--quiet"]) == 0
    sidecar = load_sidecar(instrumented.with_suffix(".json"))
    codes = _run_instrumented(demo, demo["production"], instrumented, sidecar)
    log = tmp_path / "int8.jsonl"
    for i, tensors in enumerate(codes):
        append_record(log, model_sha256=sidecar.sha256, time=T0 + i, tensors=tensors)
    report = log_coverage(demo["float"], demo["calib"], [log], sidecar, instrumented.with_suffix(".json"))
    assert report.source_check == str(int8.with_suffix(".json"))
    quant = {out.tensor: (out.scale, out.zero_point) for out in sidecar.outputs}
    for layer in report.coverage.layers:
        s, z = quant[layer.name]
        expected = max(max(-s * (lo - z), s * (hi - z)) for lo, hi in (c[layer.name] for c in codes))
        assert layer.production_max == expected, layer.name
    assert "serving_default_image:0" in report.saturated  # 1.6x the calibrated inputs: clamped at code 127
    # a clamped tensor's logged max is only a lower bound: flagged whatever its ratio, never "covered" (the input
    # too: raw float inputs, no preprocessing that bounds them); a softmax at its op's own limit is no gap
    for layer in report.coverage.layers:
        assert layer.saturated == (layer.name in report.saturated and layer.producer not in BOUNDED_OPS)
        assert layer.flagged == (layer.saturated or layer.ratio < report.coverage.threshold)
    assert any(layer.saturated and layer.ratio >= 1.0 for layer in report.coverage.layers)  # was reported covered
    gaps = {layer.name for layer in report.coverage.layers if layer.saturated}
    for rows in [segment.tensors for segment in report.segments]:  # one segment, one window here: alike
        assert gaps <= {t.name for t in rows if t.flagged}
    assert report.windows and all(w.flagged >= len(gaps) for w in report.windows)
    # the same calibration data said to come from 8-bit images as (x - 127.5) / 127.5: inputs cannot go beyond
    # [-1, 1], the edges the input reached, so its saturation is the pixel range, not a gap; the rest unchanged
    from edgeq.artifacts import Preprocessing

    images = dataclasses.replace(demo["calib"], preprocessing=Preprocessing(mean=(127.5,), std=(127.5,)))
    again = log_coverage(demo["float"], images, [log], sidecar, instrumented.with_suffix(".json"))
    by_name = {layer.name: layer for layer in again.coverage.layers}
    assert not by_name["serving_default_image:0"].saturated
    assert [(t.name, t.saturated) for t in again.coverage.layers if t.producer != "INPUT"] == \
        [(t.name, t.saturated) for t in report.coverage.layers if t.producer != "INPUT"]
    # logged as floats (dequantized by the app) instead of codes: refused, never compared as codes
    floats = tmp_path / "floats.jsonl"
    append_record(floats, model_sha256=sidecar.sha256, time=T0, tensors={n: (0.5, 1.25) for n in codes[0]})
    with pytest.raises(InputError, match="no int8 code"):
        log_coverage(demo["float"], demo["calib"], [floats], sidecar, instrumented.with_suffix(".json"))


def test_many_segments_print_the_worst_and_json_keeps_all(demo: dict, logged: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "users.jsonl"
    records = logged["records"] * 3
    for i, r in enumerate(records[:25]):
        append_record(path, model_sha256=demo["sidecar"].sha256, time=r["time"], tensors=r["tensors"],
                      tags={"user": f"u{i:02d}"})
    code = cli.main(["coverage", str(DEMO), "--instrumented", str(demo["sidecar_path"]), "--calib",
                     str(demo["root"] / "calib.npy"), "--production-log", str(path), "--json",
                     str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert code == 1 and "the 20 segments of 25 with the lowest ratios" in out
    shown = [line for line in out.splitlines() if line.startswith("- - user=")]
    document = json.loads((tmp_path / "c.json").read_text())
    segments = document["production_log"]["segments"]
    assert len(segments) == 25 and len(shown) == 20
    worst = sorted(segments, key=lambda s: min(t["ratio"] for t in s["tensors"]))[:20]
    assert sorted(line.split()[2] for line in shown) == sorted(f"user={s['tags']['user']}" for s in worst)


@pytest.mark.parametrize(("mean", "std"), [((123.7, 116.3, 103.5), (58.4,)), ((0.0,), (58.4, 57.1, 57.4)),
                                           ((127.5,), (127.5,)), ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))])
def test_pixel_bounds_cover_every_channel(mean: tuple, std: tuple) -> None:
    """A per-channel mean with one std (or the reverse) applies the single value to every channel: the bounds
    an input cannot pass are over all channels (zip stopped at the shorter tuple, taking channel 0 alone)."""
    from edgeq.artifacts import Preprocessing
    from edgeq.calib.log_coverage import _pixel_bounds

    channels = max(len(mean), len(std))
    values = [(pixel - mean[c % len(mean)]) / std[c % len(std)] for c in range(channels) for pixel in (0, 255)]
    assert _pixel_bounds(Preprocessing(mean=mean, std=std)) == pytest.approx((min(values), max(values)))
