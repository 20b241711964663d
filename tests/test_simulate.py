"""Simulated quantization (edgeq.recover.simulate) against independent numpy references and the real INT8 model,
sensitivity ranking (edgeq.recover.sensitivity) and ``--method search`` (edgeq.recover.search) on the demo model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeq.artifacts import Estimator, IOType
from edgeq.calib.data import parse_preprocessing
from edgeq.calib.ranges import choose_ranges
from edgeq.converter.api import calibrate, convert
from edgeq.converter.quantize import quantize
from edgeq.errors import InputError, UsageError
from edgeq.harness.accuracy import predict_outputs
from edgeq.harness.backends import open_session, parse_backend
from edgeq.quant_recipe import QuantRecipe
from edgeq.recover.sensitivity import analyse
from edgeq.recover.simulate import Simulator, fidelity, int8_params
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

DEMO = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"
PREPROCESS = "mean=127.5,std=127.5"
SAMPLES = 16


@pytest.fixture(scope="module")
def demo() -> dict:
    """The demo float model, its calibration (32 digits) and the auto ranges, the probe, and 16 samples."""
    calibration = calibrate(DEMO, "digits:train", preprocessing=parse_preprocessing(PREPROCESS), limit=32)
    stats = calibration.stats
    table = choose_ranges(stats, QuantRecipe())
    ranges = {key: (r.min, r.max) for key, r in zip(sorted(stats.tensors), table.ranges, strict=True)}
    model = calibration.float_model.flatbuffer
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    from edgeq.calib.collect import model_inputs

    samples = [batch for _, batch in calibration.data.samples(model_inputs(interpreter))][:SAMPLES]
    return {"model": model, "stats": stats, "ranges": ranges, "sim": Simulator(model), "samples": samples}


def run_float(model: bytes, samples: list[list[np.ndarray]]) -> list[np.ndarray]:
    """A float model's outputs over ``samples``, per output stacked, with the same builtin kernels as the probe."""
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    inputs = [d["index"] for d in interpreter.get_input_details()]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    found: list[list[np.ndarray]] = [[] for _ in outputs]
    for sample in samples:
        for index, value in zip(inputs, sample, strict=True):
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        for k, index in enumerate(outputs):
            found[k].append(np.array(interpreter.get_tensor(index), dtype=np.float32))
    return [np.concatenate(v) for v in found]


def round_away(values: np.ndarray) -> np.ndarray:
    """std::round: halves away from zero (TFLite's quantizer; numpy's round goes to even)."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def tflite_int8(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point as TF's quantizer derives them from a range: the range widened to hold 0,
    scale = (hi - lo) / 255, zero point = round(-128 - lo / scale) (std::round) clamped to int8."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round_away(np.asarray(-128.0 - lo / scale)), -128, 127))


def fake_quantize(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(clamp(round(x / s) + zp, -128, 127) - zp) · s in float32, the slow way; x / s rounds half to even, as the
    harness quantizes a model's input (np.rint) and XNNPACK's QUANTIZE does (the zero point rounds half away)."""
    scale, zero_point = tflite_int8(lo, hi)
    q = np.clip(np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.float64) + zero_point, -128, 127)
    return (q - zero_point).astype(np.float32) * np.float32(scale)


def per_channel_int8(values: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel int8 weights in [-127, 127], dequantized (TF's rule for conv and dense filters)."""
    moved = np.moveaxis(values.astype(np.float64), axis, 0)
    out = np.empty_like(moved)
    for c in range(moved.shape[0]):
        bound = np.abs(moved[c]).max()
        scale = bound / 127.0 if bound > 0 else 1.0
        out[c] = np.clip(round_away(moved[c] / scale), -127, 127) * scale
    return np.moveaxis(out, 0, axis).astype(np.float32)


def relative_error(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    ref = np.concatenate([r.reshape(-1) for r in reference]).astype(np.float64)
    got = np.concatenate([o.reshape(-1) for o in outputs]).astype(np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def conv_activation(sim: Simulator, n: int = 0) -> int:
    """Index in ``sim.activations`` of the n-th CONV_2D output (a choice of its own, not a same-scale follower)."""
    return [i for i, a in enumerate(sim.activations) if a.producer == "CONV_2D"][n]


def test_everything_off_is_the_float_model_exactly(demo: dict) -> None:
    sim = demo["sim"]
    assert sim.activations and sim.weights
    expected = run_float(demo["model"], demo["samples"])
    for got, want in zip(sim.run(sim.float_config(), demo["samples"]), expected, strict=True):
        assert np.array_equal(got, want)
    # ranges given but every gate off: still exact
    off = sim.params(demo["ranges"], quantized=set(), weights=set())
    assert all(np.array_equal(g, w) for g, w in zip(sim.run(off, demo["samples"]), expected, strict=True))


def ties(x: np.ndarray, lo: float, hi: float) -> int:
    """How many of ``x / scale`` lie within 1e-3 of a half: where halves-to-even and halves-away differ."""
    scale, _ = tflite_int8(lo, hi)
    v = x.astype(np.float64) / scale
    return int(np.sum(np.abs(np.abs(v - np.floor(v)) - 0.5) < 1e-3))


#: Spans where ``x / scale`` of the preprocessed digits lands on exact halves (where rounding half to even and half
#: away from zero differ: (-1, 1) puts every pixel of (p - 127.5) / 127.5 on one), and spans where none does.
TIES = ((-1.0, 1.0), (-0.7, 0.5))


@pytest.mark.parametrize("span", [(-1.0, 1.2), (-0.8, 0.6), (-2.0, 0.3), *TIES])
def test_input_alone_is_the_float_model_on_fake_quantized_input(demo: dict, span: tuple[float, float]) -> None:
    sim = demo["sim"]
    key = (0, int(tfl.parse(demo["model"]).subgraphs[0].inputs[0]))
    assert sim.activations[0].key == key and sim.activations[0].producer == "INPUT"
    config = sim.params({key: span}, quantized={key}, weights=set())
    near_halves = sum(ties(s[0], *span) for s in demo["samples"])
    assert (near_halves > 0) == (span in TIES), near_halves  # each span is the case it claims to be
    quantized_input = [[fake_quantize(s[0], *span)] for s in demo["samples"]]
    expected = run_float(demo["model"], quantized_input)
    got = sim.run(config, demo["samples"])
    plain = run_float(demo["model"], demo["samples"])
    for g, e, p in zip(got, expected, plain, strict=True):
        assert np.abs(e - p).max() > 1e-4  # the quantization is visible ...
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)  # ... and the probe's is numpy's


@pytest.mark.parametrize("span", [(-1.0, 1.2), (0.0, 3.0), (-2.0, 0.3), (-1.0, 1.0), (-0.3, 2.7)])
def test_int8_params_match_the_real_quantizer(demo: dict, span: tuple[float, float]) -> None:
    """The scale and zero point the probe uses are the ones the real INT8 model gets for the same range, ties
    included: (-1, 1) gives a zero point from min of -0.5 (TF: -1), (-0.3, 2.7) one of -102.5 (TF: -103)."""
    key = (0, int(tfl.parse(demo["model"]).subgraphs[0].inputs[0]))
    ranges = dict(demo["ranges"])
    ranges[key] = span
    real = tfl.parse(quantize(demo["model"], ranges, IOType.INT8)).subgraphs[0]
    params = real.tensors[real.inputs[0]].quantization
    _, qmin, _, scale = int8_params(*span)
    assert scale == pytest.approx(float(params.scale[0]), rel=1e-6)
    assert int(-128 - qmin) == int(params.zeroPoint[0])
    assert (scale, int(-128 - qmin)) == pytest.approx(tflite_int8(*span))


def test_one_weight_alone_is_the_float_model_with_that_buffer_rounded(demo: dict) -> None:
    sim = demo["sim"]
    axes = {"CONV_2D": 0, "FULLY_CONNECTED": 0}
    plain = run_float(demo["model"], demo["samples"])
    for k, weight in enumerate(sim.weights):
        parsed = tfl.parse(demo["model"])
        tensor = parsed.subgraphs[0].tensors[weight.key[1]]
        buffer = parsed.buffers[tensor.buffer]
        values = np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), "<f4").reshape(list(tensor.shape))
        rounded = per_channel_int8(values, axes[weight.producer])
        buffer.data = np.frombuffer(rounded.astype("<f4").tobytes(), np.uint8).copy()
        expected = run_float(tfl.serialize(parsed), demo["samples"])
        got = sim.run(sim.float_config().with_weight(k, 1.0), demo["samples"])
        for g, e, p in zip(got, expected, plain, strict=True):
            assert np.abs(e - p).max() > 1e-6, weight.name  # the rounding changes the outputs ...
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6, err_msg=weight.name)  # ... exactly so


def test_int16_is_far_closer_to_float_than_int8(demo: dict) -> None:
    sim, ranges, samples = demo["sim"], demo["ranges"], demo["samples"]
    reference = sim.run(sim.float_config(), samples)
    i = conv_activation(sim)
    key = sim.activations[i].key
    int8 = relative_error(reference, sim.run(sim.params(ranges, quantized={key}, weights=set()), samples))
    int16 = relative_error(reference, sim.run(sim.params(ranges, quantized={key}, int16={key}, weights=set()),
                                              samples))
    assert 0 < int16 < int8 / 50, (int8, int16)


@given(widen=st.lists(st.floats(1.0, 4.0), min_size=2, max_size=2), lean=st.floats(0.0, 1.0))
def test_int16_everywhere_with_ranges_holding_every_value_is_within_1e3_of_float(demo: dict, widen: list[float],
                                                                                lean: float) -> None:
    """Any range that contains every value (however loose, up to 4x), at int16 on every activation: the outputs
    stay within 1e-3 (relative) of float."""
    sim, samples = demo["sim"], demo["samples"][:4]
    stats = demo["stats"]
    ranges = {}
    for key in [a.key for a in sim.activations]:
        t = stats.tensors[key]
        lo, hi = float(t.min), float(t.max)
        width = max(hi - lo, 1e-6)
        ranges[key] = (lo - lean * (widen[0] - 1) * width, hi + (1 - lean) * (widen[1] - 1) * width)
    reference = sim.run(sim.float_config(), samples)
    outputs = sim.run(sim.params(ranges, int16=set(ranges), weights=set()), samples)
    assert relative_error(reference, outputs) < 1e-3
    assert fidelity(reference, outputs) > 55.0


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "kl", "auto"])
def test_simulated_fidelity_is_within_6_db_of_the_real_int8_model(demo: dict, method: str) -> None:
    sim, samples = demo["sim"], demo["samples"]
    recipe = QuantRecipe(method=Estimator(method))
    table = choose_ranges(demo["stats"], recipe)
    ranges = {key: (r.min, r.max) for key, r in zip(sorted(demo["stats"].tensors), table.ranges, strict=True)}
    reference = sim.run(sim.float_config(), samples)
    simulated = fidelity(reference, sim.run(sim.params(ranges), samples))
    x = np.concatenate([s[0] for s in samples])
    outputs = list(predict_outputs(open_session(quantize(demo["model"], ranges, IOType.INT8), parse_backend("cpu")),
                                   x).values())
    real = fidelity([r.reshape(-1) for r in reference], [o.reshape(-1) for o in outputs])
    assert 20.0 < real < 100.0
    assert abs(simulated - real) < 6.0, (simulated, real)


def test_a_terrible_range_is_ranked_most_sensitive(demo: dict) -> None:
    sim, samples = demo["sim"], demo["samples"][:8]
    ranges = dict(demo["ranges"])
    victim = sim.activations[conv_activation(sim, 1)]
    lo, hi = ranges[victim.key]
    ranges[victim.key] = (lo, 1000.0 * hi)  # every value rounds to one of a couple of steps
    report = analyse(sim, ranges, samples, described_as="auto, one range ruined")
    first = report.tensors[0]
    assert (first.name, first.tensor_kind, first.rank) == (victim.name, "activation", 1)
    assert first.only_db < min(r.only_db for r in report.tensors[1:]) - 10
    assert first.recovers_db > 5  # leaving it float wins most of the loss back
    assert [r.rank for r in report.tensors] == list(range(1, len(report.tensors) + 1))
    assert report.samples == len(samples) and report.ranges == "auto, one range ruined"
    followers = [name for name, leader in report.shares_scale.items() if leader == victim.name]
    assert followers and not {r.name for r in report.tensors} & set(followers)


def test_search_ships_the_best_held_out_contender_and_its_recipe_rebuilds_the_model(tmp_path: Path) -> None:
    from edgeq.recover.search import MARGIN_DB

    out = tmp_path / "searched.tflite"
    pp = parse_preprocessing(PREPROCESS)
    artifact = convert(DEMO, out, calib="digits:train", limit=24, preprocessing=pp,
                       recipe=QuantRecipe(method=Estimator.SEARCH))
    sidecar = json.loads(out.with_suffix(".json").read_text())
    record = artifact.search
    assert record is not None and sidecar["search"]["chosen"] == record.chosen
    assert (record.fit_samples, record.held_out_samples) == (18, 6)
    scores = {s.method: s.real_db for s in record.scores}
    assert set(scores) == {"search", "minmax", "percentile", "mse", "kl", "auto"}
    whole = {s.method: s.calibration_db for s in record.scores}

    def beats(a: str, b: str) -> bool:
        return scores[a] >= scores[b] + MARGIN_DB and whole[a] >= whole[b]

    # auto ships unless a single estimator beats it (by the margin held out, not worse on the whole set), and
    # that one unless the per-tensor choice beats it
    holder = "auto"
    challengers = [m for m in scores if m not in ("search", "auto") and beats(m, "auto")]
    if challengers:
        holder = max(challengers, key=lambda m: whole[m])
    assert record.chosen == ("search" if beats("search", holder) else holder)
    assert scores[record.chosen] >= scores["auto"] and whole[record.chosen] >= whole["auto"]
    # the sidecar's recipe on the whole calibration set's statistics reproduces the model byte for byte
    recipe = QuantRecipe.from_dict(sidecar["recipe"])
    assert Estimator(recipe.method) is not Estimator.SEARCH
    again = convert(DEMO, tmp_path / "again.tflite", calib="digits:train", limit=24, preprocessing=pp, recipe=recipe)
    assert again.sha256 == artifact.sha256
    assert (tmp_path / "again.tflite").read_bytes() == out.read_bytes()


def test_search_refuses_too_few_samples_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.cli import main as cli

    pp = parse_preprocessing(PREPROCESS)
    with pytest.raises(InputError, match="at least 8 samples"):
        convert(DEMO, tmp_path / "few.tflite", calib="digits:train", limit=5, preprocessing=pp,
                recipe=QuantRecipe(method=Estimator.SEARCH))
    assert not (tmp_path / "few.tflite").exists()
    assert cli.main(["convert", str(DEMO), "--calib", "digits:train", "--limit", "5", "--preprocess", PREPROCESS,
                     "--method", "search", "-o", str(tmp_path / "few.tflite")]) == 2
    err = capsys.readouterr().err
    assert "at least 8 samples" in err and err.count("\n") == 1
    stats = tmp_path / "stats.npz"
    assert cli.main(["calibrate", str(DEMO), "--calib", "digits:train", "--limit", "8", "--preprocess", PREPROCESS,
                     "-o", str(stats)]) == 0
    with pytest.raises(UsageError, match="give --calib, not --stats"):
        convert(DEMO, tmp_path / "s.tflite", stats=stats, recipe=QuantRecipe(method=Estimator.SEARCH))
    capsys.readouterr()
    assert cli.main(["convert", str(DEMO), "--stats", str(stats), "--method", "search",
                     "-o", str(tmp_path / "s.tflite")]) == 2
    assert "give --calib, not --stats" in capsys.readouterr().err
    assert not (tmp_path / "s.tflite").exists()


def test_split_outputs_take_the_scale_of_the_split_data_not_of_its_axis(tmp_path: Path) -> None:
    """SPLIT's first operand is the axis: its outputs follow the data (operand 1), as the quantizer scales them."""
    import keras

    from edgeq.intake.load import load_float_model

    x = keras.Input((6, 6, 4), batch_size=1)
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    a, b = keras.ops.split(y, 2, axis=-1)
    keras.Model(x, keras.layers.Add()([a * 2.0, b])).save(tmp_path / "split.keras")
    model = load_float_model(tmp_path / "split.keras").flatbuffer
    parsed = tfl.parse(model)
    graph = parsed.subgraphs[0]
    split = next(op for op in graph.operators if tfl.op_type(parsed, op) == "SPLIT")
    sim = Simulator(model)
    data = (0, int(split.inputs[1]))
    assert all(sim.same_scale[(0, int(out))] == data for out in split.outputs)
