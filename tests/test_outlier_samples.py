"""Which calibration samples set each range, outlier samples named everywhere, and the sample guard.

The fixture: a small Keras CNN (seeded weights) on real digits in [-1, 1], calibrated on 64 digits of which
sample 37 is the same digit at 1000x intensity. Without the guard that one sample sets every range; with it
the INT8 model tracks the float model on clean digits. A tail many samples share is kept.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.artifacts import Estimator
from edgeq.calib.collect import ActivationStats, collect
from edgeq.calib.data import CalibrationSet
from edgeq.calib.estimators import SampleGuard, estimate, guard_trims, outlier_set, sample_stretch
from edgeq.calib.stats import TOP_SAMPLES, SampleExtremes, TensorStats
from edgeq.errors import InputError
from edgeq.quant_recipe import QuantRecipe

PATHOLOGICAL = 37
N_CALIB = 64


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"), keras.layers.Conv2D(16, 3, strides=2),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("outliers") / "cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def float_model(model_path: Path):
    from edgeq.intake.load import load_float_model

    return load_float_model(model_path)


def _digits(split: str, n: int) -> np.ndarray:
    from datagen.bundled import load_digits

    return (load_digits(split).images[:n].astype(np.float32) - 127.5) / 127.5  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outlier-sets")
    clean = _digits("train", N_CALIB)
    pathological = clean.copy()
    pathological[PATHOLOGICAL] *= 1000.0
    # An honest heavy tail: 12 of 64 samples (every fifth or so) at 20x-40x intensity, spread evenly.
    heavy = clean.copy()
    tail = np.arange(3, N_CALIB, 5)[:12]
    heavy[tail] *= np.linspace(20.0, 40.0, len(tail), dtype=np.float32)[:, None, None, None]
    out = {}
    for name, array in (("clean", clean), ("pathological", pathological), ("heavy", heavy)):
        out[name] = root / f"{name}.npy"
        np.save(out[name], array)
    out["eval"] = root / "eval.npy"
    np.save(out["eval"], _digits("test", 128))
    return out


def _outputs(model: bytes, x: np.ndarray) -> np.ndarray:
    from edgeq.harness.accuracy import predict
    from edgeq.harness.backends import open_session, parse_backend

    return predict(open_session(model, parse_backend("cpu")), x)


def _sqnr(float_model, int8_path: Path, eval_path: Path) -> float:
    from edgeq.validate.diagnostics import output_sqnr_db

    x = np.load(eval_path)
    return output_sqnr_db(_outputs(float_model.flatbuffer, x), _outputs(int8_path.read_bytes(), x))


# ---------------------------------------------------------------- bookkeeping vs a slow obvious reference


def _reference_extremes(model: bytes, x: np.ndarray) -> tuple[dict, dict]:
    """Every activation of every sample, by running the interpreter sample by sample (numpy only after)."""
    from edgeq.calib.collect import collection_kernels
    from edgeq.calib.outputs_engine import outputs_model
    from edgeq.tflite import model as tfl
    from edgeq.tflite.runtime import make_interpreter

    keys = [a.key for a in tfl.float_activations(tfl.parse(model))]
    assert all(g == 0 for g, _ in keys)  # a plain graph: every value is in the interpreter after invoke
    # every activation as a graph output, on the kernels collect() uses for this model (an independent read of
    # the values: the test then recomputes the bookkeeping with plain numpy)
    interpreter, _ = make_interpreter(outputs_model(model, [i for _, i in keys]), collection_kernels(model))
    index = interpreter.get_input_details()[0]["index"]
    raw: dict = {key: [] for key in keys}
    for sample in x:
        interpreter.set_tensor(index, sample[None])
        interpreter.invoke()
        for key in keys:
            raw[key].append(np.array(interpreter.get_tensor(key[1]), dtype=np.float32))
    return raw, {key: [float(np.abs(v).max()) for v in values] for key, values in raw.items()}


def _ranked(values: list[float], descending: bool) -> tuple[tuple[int, float], ...]:
    order = sorted(range(len(values)), key=lambda i: ((-values[i]) if descending else values[i], i))
    return tuple((i, values[i]) for i in order[:TOP_SAMPLES])


def _stats_of(arrays: list[np.ndarray]) -> TensorStats:
    stats = TensorStats.empty()
    for array in arrays:
        stats.update(array)
    return stats


def test_bookkeeping_matches_a_numpy_reference(float_model, sets: dict[str, Path]) -> None:
    x = np.load(sets["pathological"])[:40]
    x[5] *= -3.0  # another sample that stands out, and with flipped signs
    stats = collect(float_model.flatbuffer, CalibrationSet(source="test", arrays=(x,), preprocessing=None))
    raw, abs_max = _reference_extremes(float_model.flatbuffer, x)
    assert set(stats.extremes) == set(raw)
    for key, values in raw.items():
        extremes = stats.extremes[key]
        maxima = [float(v.max()) for v in values]
        minima = [float(v.min()) for v in values]
        assert extremes.samples == len(x)
        assert extremes.top_max == _ranked(maxima, descending=True)
        assert extremes.top_min == _ranked(minima, descending=False)
        assert extremes.top_abs == _ranked(abs_max[key], descending=True)
        top = extremes.top_abs[0][0]
        assert extremes.top == _stats_of([values[top]])
        assert extremes.rest == _stats_of([v for i, v in enumerate(values) if i != top])
        assert stats.tensors[key] == _stats_of(values)  # the set's statistics: bit for bit a plain pass
        second = sorted(abs_max[key], reverse=True)[1]
        assert sample_stretch(extremes) == pytest.approx(max(abs_max[key]) / second)
    input_key = next(k for k, p in stats.producers.items() if p == "INPUT")
    assert stats.extremes[input_key].top_abs[0][0] == PATHOLOGICAL


per_sample = st.lists(st.lists(st.integers(-40, 40), min_size=1, max_size=6), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(per_sample, st.randoms(use_true_random=False), st.integers(1, 4))
def test_extremes_are_the_same_in_any_order_and_split(samples: list[list[int]], rnd: random.Random,
                                                      pieces: int) -> None:
    """Small integers make ties common: they must be broken the same way whatever the order or split."""
    arrays = [np.array(s, dtype=np.float64) * 0.25 for s in samples]
    reference = SampleExtremes.empty()
    for i, array in enumerate(arrays):
        reference.add(i, _stats_of([array]))
    order = list(range(len(arrays)))
    rnd.shuffle(order)
    parts = [SampleExtremes.empty() for _ in range(pieces)]
    for n, i in enumerate(order):
        parts[n % pieces].add(i, _stats_of([arrays[i]]))
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    assert merged == reference
    assert merged.total() == _stats_of(arrays)
    abs_max = [float(np.abs(a).max()) for a in arrays]
    assert reference.top_abs == _ranked(abs_max, descending=True)
    top = reference.top_abs[0][0]
    assert reference.rest == _stats_of([a for i, a in enumerate(arrays) if i != top])


# ---------------------------------------------------------------- the stats file


def test_stats_file_round_trip_is_deterministic_and_version_2_still_loads(float_model, sets: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    data = CalibrationSet(source=str(sets["pathological"]), arrays=(np.load(sets["pathological"]),),
                          preprocessing=None)
    stats = collect(float_model.flatbuffer, data)
    first, second = stats.save(tmp_path / "a.npz"), collect(float_model.flatbuffer, data).save(tmp_path / "b.npz")
    assert first.read_bytes() == second.read_bytes()
    loaded = ActivationStats.load(first)
    assert loaded.extremes == stats.extremes and loaded.tensors == stats.tensors
    # Version 2 (no sample extremes): loads, converts, names nothing, trims nothing.
    with np.load(first) as archive:
        arrays = {k: archive[k] for k in archive.files if "_x_" not in k}
    meta = json.loads(str(arrays["meta"]))
    meta["version"] = 2
    for field in ("extremes", "sample_info"):
        meta.pop(field)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v2.npz", **arrays)
    old = ActivationStats.load(tmp_path / "v2.npz")
    assert old.extremes == {} and old.tensors == stats.tensors
    from edgeq.converter.api import convert

    artifact = convert(float_model, tmp_path / "v2.tflite", stats=tmp_path / "v2.npz")
    assert artifact.outlier_samples == () and all(r.trimmed_sample is None and not r.top_max
                                                  for r in artifact.ranges.ranges)


def test_damaged_extremes_are_refused(float_model, sets: dict[str, Path], tmp_path: Path) -> None:
    stats = collect(float_model.flatbuffer, CalibrationSet(source="x", arrays=(np.load(sets["clean"])[:20],),
                                                           preprocessing=None))
    path = stats.save(tmp_path / "s.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    name = next(k for k in arrays if k.endswith("_x_rest_hist")
                and arrays[k.replace("_x_rest_hist", "_radius")] == arrays[k.replace("_hist", "_radius")])
    hist = arrays[name].copy()
    hist[int(np.flatnonzero(arrays[name.replace("_x_rest_hist", "_hist")] == 0)[0])] += 1  # where the whole has none
    arrays[name] = hist
    arrays[name.replace("_hist", "_count")] = np.array(int(hist.sum()))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="rest's histogram is not part of the total's"):
        ActivationStats.load(tmp_path / "bad.npz")
    arrays = {k: archive_value for k, archive_value in np.load(path).items()}
    ranked = next(k for k in arrays if k.endswith("_x_rank_abs_sample"))
    arrays[ranked] = arrays[ranked][::-1].copy()
    np.savez(tmp_path / "bad2.npz", **arrays)
    with pytest.raises(InputError, match=r"not in order|does not match"):
        ActivationStats.load(tmp_path / "bad2.npz")


# ---------------------------------------------------------------- the guard, on statistics alone


def _extremes(scales: list[float], seed: int = 0) -> tuple[TensorStats, SampleExtremes]:
    rng = np.random.default_rng(seed)
    extremes = SampleExtremes.empty()
    for i, scale in enumerate(scales):
        extremes.add(i, _stats_of([rng.normal(size=200) * scale]))
    return extremes.total(), extremes


def test_guard_trims_one_sample_and_keeps_shared_or_wide_tails() -> None:
    guard = SampleGuard()
    one = [1.0] * 63 + [1000.0]
    stats, extremes = _extremes(one)
    for method in (Estimator.AUTO, Estimator.MSE, Estimator.PERCENTILE, Estimator.KL):
        guarded = estimate(stats, method, extremes=extremes, guard=guard)
        raw = estimate(stats, method)
        assert guarded.trimmed_sample == 63 and guarded.untrimmed == (raw.lo, raw.hi)
        assert max(-guarded.lo, guarded.hi) < 10 < 100 < max(-raw.lo, raw.hi), method
        assert "sample guard: sample 63" in guarded.rule
    minmax = estimate(stats, Estimator.MINMAX, extremes=extremes, guard=guard)
    assert minmax.trimmed_sample is None and minmax.hi == stats.max  # minmax is the observed range
    assert estimate(stats, Estimator.MSE, extremes=extremes).trimmed_sample is None  # no guard given
    # A tail eight samples share: the top one is not 10x beyond the next.
    assert not guard_trims(_extremes([1.0] * 56 + [500.0] * 8)[1], guard)
    # A wide spread of per-sample maxima that the top one continues (gap 12x < spread 2nd/8th 20x).
    assert not guard_trims(_extremes([1.0] * 56 + [600.0, 50.0, 20.0, 10.0, 6.0, 4.0, 3.0, 2.5])[1], guard)
    # Too few samples to call one of them an outlier.
    assert not guard_trims(_extremes([1.0] * 14 + [1000.0])[1], guard)


def test_an_outlier_sample_is_followed_at_the_lower_factor() -> None:
    guard = SampleGuard()
    _, strong = _extremes([1.0] * 63 + [50.0])
    _, mild = _extremes([1.0] * 63 + [5.0], seed=1)  # 5x: below the factor, above the follow factor
    _, mild_other = _extremes([1.0] * 20 + [5.0] + [1.0] * 43, seed=2)  # 5x from a sample that is no outlier
    outliers = outlier_set([strong, mild, mild_other], guard)
    assert outliers == {63}
    followed = SampleGuard(outliers=outliers)
    assert guard_trims(mild, followed) and not guard_trims(mild, guard)
    assert not guard_trims(mild_other, followed)
    stats = mild.total()
    assert "outlier sample 63" in estimate(stats, Estimator.AUTO, extremes=mild, guard=followed).rule


# ---------------------------------------------------------------- the sidecar and the SQNR it protects


@pytest.mark.parametrize("method", [Estimator.AUTO, Estimator.MSE])
def test_sidecar_names_the_sample_and_the_guard_keeps_the_output(method: Estimator, float_model,
                                                                 sets: dict[str, Path], tmp_path: Path) -> None:
    from edgeq.converter.api import convert

    clean = convert(float_model, tmp_path / "clean.tflite", calib=sets["clean"], recipe=QuantRecipe(method=method))
    convert(float_model, tmp_path / "guarded.tflite", calib=sets["pathological"], recipe=QuantRecipe(method=method))
    raw = convert(float_model, tmp_path / "raw.tflite", calib=sets["pathological"],
                  recipe=QuantRecipe(method=method, sample_guard=False))
    sidecar = json.loads((tmp_path / "guarded.json").read_text())
    (outlier,) = sidecar["outlier_samples"]
    assert outlier["sample"] == PATHOLOGICAL and outlier["max_factor"] > 100
    assert outlier["tensors"] == outlier["trimmed"] >= len(sidecar["ranges"]["ranges"]) - 1
    trimmed = [r for r in sidecar["ranges"]["ranges"] if r["trimmed_sample"] is not None]
    assert {r["trimmed_sample"] for r in trimmed} == {PATHOLOGICAL}
    assert all(r["top_max"][0]["sample"] == PATHOLOGICAL or r["top_min"][0]["sample"] == PATHOLOGICAL
               for r in trimmed)
    assert clean.outlier_samples == () and all(r.trimmed_sample is None for r in clean.ranges.ranges)
    assert raw.outlier_samples[0].trimmed == 0 and all(r.trimmed_sample is None for r in raw.ranges.ranges)
    sqnr_clean = _sqnr(float_model, tmp_path / "clean.tflite", sets["eval"])
    sqnr_guarded = _sqnr(float_model, tmp_path / "guarded.tflite", sets["eval"])
    sqnr_raw = _sqnr(float_model, tmp_path / "raw.tflite", sets["eval"])
    assert sqnr_guarded > 30.0 and sqnr_guarded > sqnr_clean - 3.0  # as good as calibrating without the sample
    assert sqnr_raw < 5.0  # one sample in 64 wrecks the output


def test_heavy_tail_from_many_samples_keeps_its_range(float_model, sets: dict[str, Path], tmp_path: Path) -> None:
    from edgeq.converter.api import convert

    guarded = convert(float_model, tmp_path / "g.tflite", calib=sets["heavy"], recipe=QuantRecipe(method=Estimator.MSE))
    raw = convert(float_model, tmp_path / "r.tflite", calib=sets["heavy"],
                  recipe=QuantRecipe(method=Estimator.MSE, sample_guard=False))
    assert guarded.outlier_samples == ()
    assert [(r.min, r.max) for r in guarded.ranges.ranges] == [(r.min, r.max) for r in raw.ranges.ranges]
    assert all(r.trimmed_sample is None for r in guarded.ranges.ranges)
    heavy = np.load(sets["heavy"])
    tail = {int(i) for i in np.flatnonzero(np.abs(heavy).max(axis=(1, 2, 3)) > 10)}
    inputs = next(r for r in guarded.ranges.ranges if r.top_max and r.top_max[0].value == float(heavy.max()))
    assert {v.sample for v in inputs.top_max} <= tail  # the tail's samples lead, and the range reaches them
    assert inputs.max > 0.5 * inputs.top_max[0].value


def test_cli_flags_turn_the_guard_off_and_set_its_factors(model_path: Path, sets: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.cli import main as cli

    assert cli.main(["convert", str(model_path), "--calib", str(sets["pathological"]), "-o",
                     str(tmp_path / "a.tflite")]) == 0
    assert f"sample {PATHOLOGICAL} alone sets the range of" in capsys.readouterr().out
    assert cli.main(["convert", str(model_path), "--calib", str(sets["pathological"]), "--no-sample-guard",
                     "--json", "-o", str(tmp_path / "b.tflite")]) == 0
    document = json.loads(capsys.readouterr().out)["sidecar"]  # edgeq.convert: the sidecar is under 'sidecar'
    assert document["recipe"]["sample_guard"] is False
    assert all(r["trimmed_sample"] is None for r in document["ranges"]["ranges"])
    assert cli.main(["convert", str(model_path), "--calib", str(sets["pathological"]), "--sample-guard-factors",
                     "2000,3", "--json", "-o", str(tmp_path / "c.tflite")]) == 0
    document = json.loads(capsys.readouterr().out)["sidecar"]
    assert document["recipe"]["sample_guard_factor"] == 2000.0  # 1000x is below it: nothing trimmed
    assert all(r["trimmed_sample"] is None for r in document["ranges"]["ranges"])
    assert cli.main(["convert", str(model_path), "--calib", str(sets["pathological"]), "--sample-guard-factors",
                     "3,10", "-o", str(tmp_path / "d.tflite")]) == 2
    assert "1 < FOLLOW <= FACTOR" in capsys.readouterr().err


def test_recipe_keys(tmp_path: Path) -> None:
    from edgeq.quant_recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("method: mse\nsample_guard: false\nsample_guard_factor: 20\nsample_guard_follow: 4\n")
    recipe = load_recipe(path)
    assert (recipe.sample_guard, recipe.sample_guard_factor, recipe.sample_guard_follow) == (False, 20.0, 4.0)
    path.write_text("sample_guard_factor: 1\n")
    with pytest.raises(InputError, match="sample guard factors"):
        load_recipe(path)


# ---------------------------------------------------------------- the report and the coverage view


def test_validate_report_and_html_name_the_sample(model_path: Path, sets: dict[str, Path], tmp_path: Path) -> None:
    import dataclasses

    from datagen.bundled import load_digits
    from edgeq.artifacts import Preprocessing
    from edgeq.report.page import render_html
    from edgeq.results.validation import ValidationReport
    from edgeq.validate.protocol import EvalData, validate

    digits = load_digits("test")
    data = EvalData(name="digits:test", images=digits.images[:96], labels=digits.labels[:96], conditions=None,
                    preprocessing=Preprocessing(mean=(127.5,), std=(127.5,)))
    report = validate(model_path, sets["pathological"], data, tmp_path / "v", methods=(Estimator.AUTO,))
    section = report.calibration_samples
    assert section.guard.enabled is True and section.tracked is True
    assert [s.sample for s in section.outlier_samples] == [PATHOLOGICAL]
    assert section.trimmed and all(t.sample == PATHOLOGICAL for t in section.trimmed)
    assert f"sample {PATHOLOGICAL} alone sets the range" in section.summary[0]
    # The report's per-method ranges are the ones convert used: the auto model's sidecar says the same.
    sidecar = json.loads((tmp_path / "v" / "auto.json").read_text()) if (tmp_path / "v" / "auto.json").is_file() \
        else json.loads(next((tmp_path / "v").glob("*auto*.json")).read_text())
    used = {r["name"]: (r["min"], r["max"]) for r in sidecar["ranges"]["ranges"]}
    assert report.histograms
    for histogram in report.histograms:
        assert histogram.ranges["auto"] == pytest.approx(used[histogram.name])
    report = ValidationReport.from_document(json.loads(json.dumps(report.to_document())))  # as report.json holds it
    page = render_html(report)  # a part of the Activation ranges section
    assert "<h3>Outlier calibration samples</h3>" in page and "Sample guard <b>on</b>" in page
    row = page.split("<h3>Outlier calibration samples</h3>", 1)[1]
    assert f"<td class=\"num\">{PATHOLOGICAL}</td>" in row
    quiet = dataclasses.replace(section, outlier_samples=(), trimmed=())
    assert "Outlier calibration samples" not in render_html(dataclasses.replace(report, calibration_samples=quiet))
    off = dataclasses.replace(quiet, guard=dataclasses.replace(quiet.guard, enabled=False))
    assert "Sample guard <b>off</b>" in render_html(dataclasses.replace(report, calibration_samples=off))


def test_coverage_names_the_datagen_sample(model_path: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A datagen set from 32 dark images and one bright one: the bright one's sample is named by its manifest."""
    from edgeq.cli import main as cli

    rng = np.random.default_rng(0)
    images = rng.integers(0, 3, size=(33, 32, 32, 3), dtype=np.uint8)
    images[21] = rng.integers(200, 256, size=(32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "frames.npz", images=images)
    calib = tmp_path / "calib"
    assert cli.main(["datagen", "--source", str(tmp_path / "frames.npz"), "--conditions", "original", "--n", "33",
                     "--preprocess", "none", "-o", str(calib)]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (calib / "manifest.jsonl").read_text().splitlines()]
    bright = next(i for i, r in enumerate(records) if r["source_id"].endswith("/00021"))
    code = cli.main(["coverage", str(model_path), "--calib", str(calib), "--production", str(calib), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    (outlier,) = document["outlier_samples"]
    assert outlier["sample"] == bright
    assert (outlier["id"], outlier["condition"], outlier["source"]) == (records[bright]["id"], "original",
                                                                       records[bright]["source_id"])
    inputs = next(layer for layer in document["layers"] if layer["producer"] == "INPUT")
    assert inputs["calib_top_sample"] == bright and inputs["calib_stretch"] > 50
    assert inputs["calib_max_without_top"] == pytest.approx(2.0)


def test_image_folder_samples_are_named_by_file(model_path: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An image folder: the outlier sample is named by its file; edgeq calibrate says so too."""
    from PIL import Image

    from edgeq.cli import main as cli

    folder = tmp_path / "images"
    (folder / "b").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(20):
        pixels = rng.integers(0, 3, size=(32, 32, 3), dtype=np.uint8)
        if i == 13:
            pixels = rng.integers(200, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("b" if i % 2 else ".") / f"img_{i:02d}.png")
    assert cli.main(["calibrate", str(model_path), "--calib", str(folder), "--preprocess", "none",
                     "-o", str(tmp_path / "stats.npz")]) == 0
    out = capsys.readouterr().out
    stats = ActivationStats.load(tmp_path / "stats.npz")
    files = sorted(p for p in folder.rglob("*.png"))
    bright = files.index(folder / "b" / "img_13.png")
    assert f"outlier calibration sample: sample {bright} (source b/img_13.png)" in out
    assert stats.sample_info[bright] == {"source": "b/img_13.png"}
