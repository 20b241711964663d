"""edgeq's numpy densify against LiteRT's own DENSIFY kernel, on random tensors and sparsity layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tflite_builders import NUMPY_OF, densify_model, encode_sparse

from edgeq.errors import InputError
from edgeq.intake.sparsity import densify
from edgeq.tflite.runtime import CpuKernels, make_interpreter


def litert_densify(shape: tuple[int, ...], type_name: str, sparsity: object, values: np.ndarray) -> np.ndarray:
    interpreter, _ = make_interpreter(densify_model(shape, type_name, sparsity, values), CpuKernels.CPU)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def sparse_cases(draw: st.DrawFn) -> dict[str, object]:
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    blocked = sorted(draw(st.sets(st.integers(0, rank - 1), max_size=min(rank, 2))))  # LiteRT: ascending, k <= 2
    block_size = [draw(st.sampled_from(_divisors(shape[d]))) for d in blocked]
    grid_order = draw(st.permutations(range(rank)))
    block_order = draw(st.permutations(range(rank, rank + len(blocked))))
    formats = [draw(st.integers(0, 1)) for _ in range(rank)] + [0] * len(blocked)
    type_name = draw(st.sampled_from(sorted(NUMPY_OF)))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    magnitude = rng.integers(1, 100, size=shape) if type_name == "INT8" else rng.normal(size=shape) + 0.01
    dense = (magnitude * (rng.random(shape) < density)).astype(NUMPY_OF[type_name])
    largest = max(shape) + int(np.prod(shape))  # bounds every segment offset and index
    index_type = draw(st.sampled_from(["int32", "uint16", "uint8"] if largest < 256 else ["int32", "uint16"]))
    return {"dense": dense, "type_name": type_name, "order": [*grid_order, *block_order], "block_map": blocked,
            "block_size": block_size, "formats": formats, "index_type": index_type}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_cases())
def test_densify_matches_litert(case: dict[str, object]) -> None:
    dense: np.ndarray = case["dense"]  # type: ignore[assignment]
    sparsity, values = encode_sparse(dense, case["order"], case["block_map"], case["block_size"],  # type: ignore[arg-type]
                                     case["formats"], case["index_type"])  # type: ignore[arg-type]
    # the flatbuffer round trip is what the converter sees
    from edgeq.tflite import model as tfl

    parsed = tfl.parse(densify_model(dense.shape, case["type_name"], sparsity, values))  # type: ignore[arg-type]
    stored = parsed.subgraphs[0].tensors[0]
    raw = np.asarray(parsed.buffers[stored.buffer].data, dtype=np.uint8).tobytes()
    ours = densify(tuple(int(d) for d in stored.shape), stored.sparsity, np.frombuffer(raw, dtype=dense.dtype))
    theirs = litert_densify(dense.shape, case["type_name"], sparsity, values)  # type: ignore[arg-type]
    assert theirs.dtype == ours.dtype == dense.dtype
    np.testing.assert_array_equal(theirs, dense)  # the reference encoder is right (LiteRT agrees)...
    np.testing.assert_array_equal(ours, theirs)  # ...and so is edgeq's decoder


def test_block_sparse_matrix_example() -> None:
    """A 4x8 matrix in 2x4 blocks, block rows dense, block columns CSR (the format's own example layout)."""
    dense = np.zeros((4, 8), np.float32)
    dense[0:2, 4:8] = np.arange(1, 9).reshape(2, 4)
    dense[2:4, 0:4] = -np.arange(1, 9).reshape(2, 4)
    sparsity, values = encode_sparse(dense, [0, 1, 2, 3], [0, 1], [2, 4], [0, 1, 0, 0])
    assert values.size == 16  # two of the four blocks stored
    np.testing.assert_array_equal(densify(dense.shape, sparsity, values), dense)
    np.testing.assert_array_equal(litert_densify(dense.shape, "FLOAT32", sparsity, values), dense)


def _layout(dense: np.ndarray, **changes: object) -> tuple[object, np.ndarray]:
    sparsity, values = encode_sparse(dense, [0, 1, 2, 3], [0, 1], [2, 2], [0, 1, 0, 0])
    for key, value in changes.items():
        setattr(sparsity, key, value)
    return sparsity, values


@pytest.mark.parametrize(("change", "message"), [
    ({"blockMap": np.asarray([1, 0], np.int32)}, "not ascending"),
    ({"traversalOrder": np.asarray([0, 0, 2, 3], np.int32)}, "not a permutation"),
    ({"blockMap": np.asarray([0], np.int32)}, "does not map 2 block"),
])
def test_layouts_litert_would_misread_are_refused(change: dict[str, object], message: str) -> None:
    dense = np.arange(16, dtype=np.float32).reshape(4, 4)
    sparsity, values = _layout(dense, **change)
    with pytest.raises(InputError, match=message):
        densify(dense.shape, sparsity, values)


def test_malformed_encodings_are_refused() -> None:
    dense = np.eye(4, dtype=np.float32)
    sparsity, values = encode_sparse(dense, [0, 1], formats=[0, 1])
    with pytest.raises(InputError, match="stores 3 values for 4"):
        densify(dense.shape, sparsity, values[:3])
    sparsity.dimMetadata[1].arrayIndices.values = np.asarray([0, 1, 2, 9], np.int32)
    with pytest.raises(InputError, match="index outside"):
        densify(dense.shape, sparsity, values)
    sparsity, values = encode_sparse(dense, [0, 1], formats=[0, 1])
    sparsity.dimMetadata[1].arrayIndices.values = np.asarray([0, 0, 2, 3], np.int32)
    sparsity.dimMetadata[1].arraySegments.values = np.asarray([0, 2, 2, 3, 4], np.int32)
    with pytest.raises(InputError, match="twice"):
        densify(dense.shape, sparsity, values)
    sparsity, values = encode_sparse(dense, [0, 1], formats=[0, 1])
    sparsity.dimMetadata[0].denseSize = 3
    with pytest.raises(InputError, match="expected 4"):
        densify(dense.shape, sparsity, values)
