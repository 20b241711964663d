"""The fast calibration path gives exactly the statistics of the slow obvious one.

Binning: ``Binner.stats`` against ``TensorStats.update`` (``_bin_indices`` + ``np.bincount``), bit for bit, on
values chosen to break it (zeros of both signs, subnormals, exact bin edges and their neighbours, +-radius,
huge ranges, radii growing over several samples). Engine: ``collect`` on XNNPACK with the measured tensors
as extra outputs against the reference statistics of the very tensor values that model computes, and those
values against what the builtin kernels keep with ``preserve_all_tensors`` (nothing aliased or overwritten).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tflite_builders import GraphBuilder

from edgeq.calib.binning import Binner
from edgeq.calib.collect import collect, collection_kernels, model_inputs
from edgeq.calib.data import CalibrationSet
from edgeq.calib.outputs_engine import outputs_model
from edgeq.calib.stats import HIST_BINS, SampleExtremes, TensorStats
from edgeq.errors import InputError
from edgeq.tflite import model as tfl
from edgeq.tflite.runtime import CpuKernels, make_interpreter

DEMO = Path(__file__).parent / "data" / "demo" / "cnn_digits_float32.tflite"
HALF = HIST_BINS // 2
TINY = float(np.nextafter(np.float32(0), np.float32(1)))  # the smallest float32 subnormal


def reference(*arrays: np.ndarray) -> TensorStats:
    """The slow obvious statistics: ``TensorStats.update`` (``_bin_indices`` + ``np.bincount``)."""
    stats = TensorStats.empty()
    for array in arrays:
        stats.update(array)
    return stats


def same(a: TensorStats, b: TensorStats) -> bool:
    """Equal to the bit, -0.0 vs 0.0 included (as saved)."""
    x, y = a.to_arrays(""), b.to_arrays("")
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes() for k in x)


def _edges(exponent: int, ks: list[int], signs: list[int], nudge: list[int]) -> np.ndarray:
    """Values on (or one float32 step beside) bin edges ``k * radius / HALF`` of radius ``2**exponent``."""
    values = []
    for k, sign, step in zip(ks, signs, nudge, strict=False):
        edge = np.float32(sign * k * 2.0 ** (exponent - HALF.bit_length() + 1))
        toward = np.float32(np.inf if step > 0 else -np.inf)
        values.append(np.nextafter(edge, toward) if step else edge)
    return np.asarray(values, dtype=np.float32)


special = st.sampled_from([0.0, -0.0, TINY, -TINY, 1e-40, -1e-40, 1.1754944e-38, -1.1754944e-38, 1.0, -1.0,
                           2048.0, -2048.0, 2049.0, 4096.0, -4096.0, 6.0, 3e38, -3e38])
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
plain = hnp.arrays(np.float32, st.integers(0, 300), elements=st.one_of(float32s, special))
edges = st.builds(_edges, st.integers(-30, 20), st.lists(st.integers(0, HALF), min_size=1, max_size=200),
                  st.lists(st.sampled_from([1, -1]), min_size=200, max_size=200),
                  st.lists(st.sampled_from([0, 0, 1, -1]), min_size=200, max_size=200))
scaled = st.builds(lambda a, k: (a * np.float32(2.0**k)).astype(np.float32),
                   hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-4, 4, width=32)),
                   st.integers(-40, 40))
arrays = st.one_of(plain, edges, scaled)


@functools.cache
def binner(chunk: int) -> Binner:
    return Binner(chunk, small=0)  # every array through the fast path, however small


@settings(max_examples=400, deadline=None)
@given(arrays, st.sampled_from([1, 5, 64, 65536]))
def test_binner_equals_the_reference_bit_for_bit(values: np.ndarray, chunk: int) -> None:
    assert same(binner(chunk).stats(values), reference(values))


@settings(max_examples=150, deadline=None)
@given(st.lists(arrays, min_size=1, max_size=6), st.sampled_from([3, 65536]))
def test_samples_across_radius_doublings_merge_to_the_reference(samples: list[np.ndarray], chunk: int) -> None:
    """What collect does per tensor: one sample's stats at a time, recorded in SampleExtremes."""
    fast, slow = SampleExtremes.empty(), SampleExtremes.empty()
    for number, values in enumerate(samples):
        fast.add(number, binner(chunk).stats(values))
        slow.add(number, reference(values))
    assert fast == slow
    # same(), to the bit: extremes never hold -0.0 (it would depend on the order samples and shards merge in)
    assert same(fast.total(), reference(*samples))
    assert same(fast.total(), reference(*reversed(samples)))


@pytest.mark.parametrize("values", [
    np.zeros(10, np.float32), -np.zeros(10, np.float32),
    np.array([-0.0, 0.0, TINY, -TINY], np.float32),
    np.arange(-HALF, HALF + 1, dtype=np.float32),  # every edge of radius 2048 (scale 1), both signs
    np.arange(-HALF, HALF + 1, dtype=np.float32) / 8,
    np.array([4096.0, -1e-45, 1e-45, -2.5], np.float32),  # a radius past the fast path's: the reference bins it
    np.linspace(-3, 3, 1000).astype(np.float64), np.arange(-7, 9, dtype=np.int32),  # other dtypes
    np.ones((0, 3), np.float32),
])
def test_binner_on_hand_picked_values(values: np.ndarray) -> None:
    assert same(Binner(chunk=7, small=0).stats(values), reference(values))


def test_the_default_binner_on_tensor_sized_arrays() -> None:
    """Several chunks, ReLU zeros, bin edges and -0.0 together; and a small array, which update bins."""
    rng = np.random.default_rng(5)
    big = np.maximum(rng.normal(0, 3, size=200_003), 0).astype(np.float32)
    big[::7] = np.round(big[::7] * 256) / 256  # on edges of radius 8 (and 16)
    big[1::11] *= -1
    big[2::13] = -0.0
    for values in (big, big[:4095], big * np.float32(2.0**-90)):
        assert same(Binner().stats(values), reference(values))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_binner_refuses_non_finite_values_like_the_reference(bad: float) -> None:
    values = np.array([1.0, bad, 2.0], np.float32)
    with pytest.raises(ValueError, match="non-finite") as fast:
        Binner(small=0).stats(values)
    with pytest.raises(ValueError) as slow:
        reference(values)
    assert str(fast.value) == str(slow.value)


def residual_model() -> bytes:
    """Elementwise ops XNNPACK takes and computes exactly as the builtin kernels do (ADD, MUL, RELU, RESHAPE,
    a residual sum, an op whose input is used once and could be computed in place), a CUMSUM XNNPACK leaves to
    the builtin kernels (partly delegated), and an intermediate that is already an output."""
    S = tfl.schema()  # noqa: N806
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    x = b.tensor("x", [1, 4, 4, 3], "FLOAT32")
    c1 = b.tensor("c1", [3], "FLOAT32", rng.normal(size=3).astype(np.float32))
    c2 = b.tensor("c2", [3], "FLOAT32", rng.uniform(0.5, 2, size=3).astype(np.float32))
    shape = b.tensor("shape", [2], "INT32", np.array([16, 3], np.int32))
    axis = b.tensor("axis", [], "INT32", np.array(0, np.int32))
    names = ["shifted", "relu", "scaled", "residual", "flat", "summed", "twice"]
    shapes = [[1, 4, 4, 3]] * 4 + [[16, 3]] * 3
    t = {n: b.tensor(n, s, "FLOAT32") for n, s in zip(names, shapes, strict=True)}
    b.op("ADD", [x, c1], [t["shifted"]], S.AddOptionsT())
    b.op("RELU", [t["shifted"]], [t["relu"]])
    b.op("MUL", [t["relu"], c2], [t["scaled"]], S.MulOptionsT())
    b.op("ADD", [t["scaled"], x], [t["residual"]], S.AddOptionsT())
    b.op("RESHAPE", [t["residual"], shape], [t["flat"]], S.ReshapeOptionsT())
    b.op("CUMSUM", [t["flat"], axis], [t["summed"]], S.CumsumOptionsT())
    b.op("ADD", [t["summed"], t["summed"]], [t["twice"]], S.AddOptionsT())
    return b.build([x], [t["twice"], t["relu"]])


def models() -> dict[str, bytes]:
    return {"demo": DEMO.read_bytes(), "residual": residual_model()}


def calibration(model: bytes, n: int, seed: int = 0) -> CalibrationSet:
    interpreter, _ = make_interpreter(model, CpuKernels.CPU)
    shapes = [(n, *i.shape) for i in model_inputs(interpreter)]
    rng = np.random.default_rng(seed)
    arrays = tuple(rng.normal(0, 2, size=s).astype(np.float32) for s in shapes)
    return CalibrationSet(source="test", arrays=arrays, preprocessing=None)


def values_of(model: bytes, kernels: CpuKernels, data: CalibrationSet, keys: list[tuple[int, int]],
              preserve: bool = False) -> list[dict[tuple[int, int], np.ndarray]]:
    """Every sample's tensor values (copies), read after invoke."""
    interpreter, _ = make_interpreter(model, kernels, threads=1, preserve_all_tensors=preserve)
    found = []
    for _, batch in data.samples(model_inputs(interpreter)):
        for detail, array in zip(interpreter.get_input_details(), batch, strict=True):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        found.append({key: interpreter.get_tensor(key[1]) for key in keys})
    return found


@pytest.mark.parametrize("name", ["demo", "residual"])
def test_collect_equals_the_reference_statistics_of_the_values_the_outputs_model_computes(name: str) -> None:
    model = models()[name]
    data = calibration(model, 6)
    keys = [a.key for a in tfl.float_activations(tfl.parse(model))]
    assert collection_kernels(model) == CpuKernels.XNNPACK
    stats = collect(model, data)
    samples = values_of(outputs_model(model, [i for _, i in keys]), CpuKernels.XNNPACK, data, keys)
    for key in keys:
        slow = SampleExtremes.empty()
        for number, values in enumerate(samples):
            slow.add(number, reference(values[key]))
        assert stats.extremes[key] == slow, stats.names[key]
        assert same(stats.tensors[key], reference(*(values[key] for values in samples))), stats.names[key]


@pytest.mark.parametrize("kernels", [CpuKernels.CPU, CpuKernels.XNNPACK])
def test_extra_outputs_hold_what_the_builtin_kernels_keep(kernels: CpuKernels) -> None:
    """The residual model's ops are exact on both kernel sets, so every tensor read from the outputs model
    equals, to the bit, what preserve_all_tensors keeps on the builtin kernels: nothing aliased or overwritten."""
    model = residual_model()
    data = calibration(model, 3, seed=1)
    keys = [a.key for a in tfl.float_activations(tfl.parse(model))]
    kept = values_of(model, CpuKernels.CPU, data, keys, preserve=True)
    read = values_of(outputs_model(model, [i for _, i in keys]), kernels, data, keys)
    for want, got in zip(kept, read, strict=True):
        for key in keys:
            assert want[key].tobytes() == got[key].tobytes(), key


def test_the_outputs_engine_and_the_replay_engine_agree_where_kernels_compute_alike() -> None:
    model = residual_model()
    data = calibration(model, 5, seed=2)
    fast, slow = collect(model, data, engine="outputs"), collect(model, data, engine="replay")
    assert fast.extremes == slow.extremes
    assert all(same(fast.tensors[k], slow.tensors[k]) for k in slow.tensors)


def dynamic_model() -> bytes:
    """The positive values of the input, gathered (WHERE + GATHER_ND): how many depends on the data, so the
    gathered tensors are dynamic, allocated when their op runs, and left by XNNPACK to the builtin kernels."""
    S = tfl.schema()  # noqa: N806
    b = GraphBuilder()
    x = b.tensor("x", [1, 4, 4, 3], "FLOAT32")
    zero = b.tensor("zero", [], "FLOAT32", np.array(0, np.float32))
    positive = b.tensor("positive", [1, 4, 4, 3], "BOOL")
    where = b.tensor("where", [1, 4], "INT64")  # shapes of data-dependent tensors: resized when run
    gathered = b.tensor("gathered", [1], "FLOAT32")
    doubled = b.tensor("doubled", [1], "FLOAT32")
    b.op("GREATER", [x, zero], [positive])
    b.op("WHERE", [positive], [where])
    b.op("GATHER_ND", [x, where], [gathered])
    b.op("ADD", [gathered, gathered], [doubled], S.AddOptionsT())
    return b.build([x], [doubled])


def test_a_dynamic_tensor_is_measured_after_each_invoke() -> None:
    model = dynamic_model()
    data = calibration(model, 4, seed=4)
    fast, slow = collect(model, data, engine="outputs"), collect(model, data, engine="replay")
    assert fast.extremes == slow.extremes and len(fast.extremes) == 3
    assert fast.tensors[(0, 4)].count == int((data.arrays[0] > 0).sum())
    data.arrays[0][::2] = -np.abs(data.arrays[0][::2])  # no positive value: the gathered tensors hold nothing
    fast, slow = collect(model, data, engine="outputs"), collect(model, data, engine="replay")
    assert fast.extremes == slow.extremes and fast.extremes[(0, 4)].samples == 2


def test_outputs_model_appends_each_measured_tensor_once_and_drops_signatures() -> None:
    model = residual_model()
    graph = tfl.parse(model).subgraphs[0]
    extended = tfl.parse(outputs_model(model, [0, 7, 8, 8, 6, 5]))
    assert list(extended.subgraphs[0].outputs) == [int(i) for i in graph.outputs] + [7, 8, 5]
    assert not extended.signatureDefs


def test_a_sample_driving_a_tensor_to_nan_is_named() -> None:
    model = residual_model()
    data = calibration(model, 3)
    data.arrays[0][1] = 3e38  # finite; scaled by c2 > 1.2 it overflows
    with pytest.raises(InputError, match=r"calibration sample 1 of test drives tensor 'scaled' to NaN or Inf"):
        collect(model, data)


def test_control_flow_stays_on_the_replay_engine() -> None:
    """A graph running another subgraph (here an IF) is collected on the builtin kernels."""
    S = tfl.schema()  # noqa: N806
    parsed = tfl.parse(residual_model())
    options = S.IfOptionsT()
    options.thenSubgraphIndex, options.elseSubgraphIndex = 1, 1
    op = S.OperatorT()
    op.opcodeIndex = tfl.opcode_index(parsed, "IF")
    op.inputs, op.outputs = np.asarray([0], np.int32), np.asarray([], np.int32)
    op.builtinOptionsType, op.builtinOptions = S.BuiltinOptions.IfOptions, options
    parsed.subgraphs[0].operators.append(op)
    parsed.subgraphs.append(parsed.subgraphs[0])
    assert collection_kernels(tfl.serialize(parsed)) == CpuKernels.CPU


def test_an_unknown_engine_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown collection engine"):
        collect(residual_model(), calibration(residual_model(), 1), engine="fast")


def test_tensors_computed_from_constants_alone_keep_the_replay_engine() -> None:
    """XNNPACK packs DEQUANTIZE(int8 weights) as static weights and never writes its output, even when it is a
    graph output: reading it gave uninitialised memory (ranges of 1e24, different on every run). Such a model
    is collected on the builtin kernels, which compute the dequantized weights: scale * code, exactly."""
    from edgeq.calib.outputs_engine import applies

    schema = tfl.schema()
    b = GraphBuilder()
    x = b.tensor("x", [1, 4], "FLOAT32")
    codes = b.tensor("codes", [3, 4], "INT8", np.arange(-6, 6, dtype=np.int8).reshape(3, 4))
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [0.5], [0]
    b.graph.tensors[codes].quantization = q
    w = b.tensor("w", [3, 4], "FLOAT32")
    y = b.tensor("y", [1, 3], "FLOAT32")
    b.op("DEQUANTIZE", [codes], [w], version=2)
    b.op("FULLY_CONNECTED", [x, w, -1], [y], schema.FullyConnectedOptionsT())
    model = b.build([x], [y])
    parsed = tfl.parse(model)
    assert tfl.constant_derived(parsed) == [w] and not applies(parsed)
    assert collection_kernels(model) == CpuKernels.CPU
    data = CalibrationSet(source="t", arrays=(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32),),
                          preprocessing=None)
    stats = collect(model, data)
    weights = next(key for key, name in stats.names.items() if name == "w")
    assert (stats.tensors[weights].min, stats.tensors[weights].max) == (-3.0, 2.5)
    assert stats.tensors == collect(model, data, engine="replay").tensors


def test_coverage_of_a_tensor_production_never_fills_is_not_a_crash(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Production with no positive input leaves the gathered tensors empty: p99.99 is null there (it was exit 4:
    a quantile of no values), the max is 0 and so covered."""
    import json

    from edgeq.cli import main as cli

    rng = np.random.default_rng(0)
    (tmp_path / "m.tflite").write_bytes(dynamic_model())
    np.save(tmp_path / "calib.npy", rng.normal(size=(6, 4, 4, 3)).astype(np.float32))
    np.save(tmp_path / "prod.npy", -np.abs(rng.normal(size=(6, 4, 4, 3))).astype(np.float32))
    code = cli.main(["coverage", str(tmp_path / "m.tflite"), "--calib", str(tmp_path / "calib.npy"), "--production",
                     str(tmp_path / "prod.npy"), "--preprocess", "none", "--json"])
    layers = {layer["name"]: layer for layer in json.loads(capsys.readouterr().out)["layers"]}
    assert code in (0, 1)
    assert layers["gathered"]["production_max"] == 0 and layers["gathered"]["production_p9999"] is None
    assert not layers["gathered"]["flagged"]


def test_an_all_zero_tensor_has_a_plain_zero_max() -> None:
    """max(-0.0, 0.0) is -0.0: coverage JSON showed calib_max -0.0 and ratio -0.0 for all-zero tensors."""
    for values in (np.zeros(7, np.float32), -np.zeros(7, np.float32), np.zeros(5000, np.float32)):
        assert str(binner(65536).stats(values).abs_max) == "0.0"
        assert str(reference(values).abs_max) == "0.0"
