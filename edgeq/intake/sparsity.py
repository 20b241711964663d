"""Densify TFLite sparse tensors (``SparsityParameters``) in numpy, exactly as LiteRT's DENSIFY kernel does.

The format (schema.fbs, a modification of TACO): a conceptual dense tensor of rank n, optionally cut into
k-dimensional dense blocks, is traversed in ``traversal_order`` (n + k entries: a permutation of the n
block-grid dimensions, then a permutation of the k block dimensions). ``block_map[j]`` names the original
dimension that block dimension n + j subdivides. ``dim_metadata`` holds one entry per traversal level:
DENSE (``dense_size`` coordinates, all stored) or SPARSE_CSR (``array_segments`` cut ``array_indices``
into one run per position of the level above; the run lists the coordinates present). The stored values
are the leaves of that tree in traversal order.

Anything this module cannot decode the way LiteRT decodes it is refused with the reason, never guessed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.errors import InputError

DENSE, SPARSE_CSR = 0, 1

#: numpy dtype of each tensor type a sparse weight may hold (little-endian, as the flatbuffer stores it).
VALUE_DTYPES = {"FLOAT32": "<f4", "FLOAT16": "<f2", "INT8": "i1", "UINT8": "u1", "INT32": "<i4"}


def _ints(values: Any) -> np.ndarray:
    return np.zeros(0, dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64).ravel()


def _index_vector(vector: Any) -> np.ndarray | None:
    """The values of an Int32Vector / Uint16Vector / Uint8Vector union member, or None when absent."""
    if vector is None or getattr(vector, "values", None) is None:
        return None
    return _ints(vector.values)


def _is_permutation(values: np.ndarray, start: int, stop: int) -> bool:
    return sorted(values.tolist()) == list(range(start, stop))


def densify(shape: tuple[int, ...], sparsity: Any, values: np.ndarray) -> np.ndarray:
    """The dense array of ``shape`` that ``values`` encode under ``sparsity`` (a SparsityParametersT)."""
    n = len(shape)
    if n == 0 or any(d <= 0 for d in shape):
        raise InputError(f"sparse tensor has shape {list(shape)}; expected positive dimensions")
    order = _ints(sparsity.traversalOrder)
    block_map = _ints(sparsity.blockMap)
    metadata = list(sparsity.dimMetadata or [])
    k = len(order) - n
    if k < 0 or not _is_permutation(order[:n], 0, n) or not _is_permutation(order[n:], n, n + k):
        raise InputError(f"sparse traversal order {order.tolist()} is not a permutation for rank {n}")
    if len(block_map) != k or len(set(block_map.tolist())) != k or any(not 0 <= d < n for d in block_map):
        raise InputError(f"sparse block map {block_map.tolist()} does not map {k} block dimension(s) onto rank {n}")
    if k and np.any(np.diff(block_map) <= 0):
        raise InputError(f"sparse block map {block_map.tolist()} is not ascending (LiteRT decodes only ascending maps)")
    if len(metadata) != n + k:
        raise InputError(f"sparse tensor has {len(metadata)} dimension metadata entries, expected {n + k}")
    position = {int(dim): p for p, dim in enumerate(order)}  # traversal position of each expanded dimension
    block_size = []
    for j in range(k):
        here = metadata[position[n + j]]
        if int(here.format) != DENSE or int(here.denseSize) <= 0:
            raise InputError(f"sparse block dimension {n + j} is not dense (LiteRT supports dense blocks only)")
        # LiteRT reads block j's size at traversal position order[n + j]; the format says at the position whose
        # dimension is n + j. They agree for every layout with k <= 2; refuse any layout where they would not.
        if int(metadata[int(order[n + j])].denseSize) != int(here.denseSize):
            raise InputError("sparse block layout is decoded differently by LiteRT than the format specifies")
        block_size.append(int(here.denseSize))
    grid = list(shape)
    for j, dim in enumerate(block_map.tolist()):
        if shape[dim] % block_size[j]:
            raise InputError(f"sparse block size {block_size[j]} does not divide dimension {dim} of {list(shape)}")
        grid[dim] = shape[dim] // block_size[j]
    sizes = [grid[d] if d < n else block_size[d - n] for d in order.tolist()]  # per traversal level

    coords = np.zeros((1, 0), dtype=np.int64)  # one row per reachable position of the current level
    parent = np.zeros(1, dtype=np.int64)  # each row's position index, as the next sparse level's segments see it
    for level, (entry, size) in enumerate(zip(metadata, sizes, strict=True)):
        if int(entry.format) == DENSE:
            if int(entry.denseSize) != size:
                raise InputError(f"sparse level {level} is dense with size {int(entry.denseSize)}, expected {size}")
            steps = np.arange(size, dtype=np.int64)
            parent = (parent[:, None] * size + steps[None, :]).ravel()
            coords = np.concatenate([np.repeat(coords, size, axis=0),
                                     np.tile(steps, len(coords))[:, None]], axis=1)
        elif int(entry.format) == SPARSE_CSR:
            segments, indices = _index_vector(entry.arraySegments), _index_vector(entry.arrayIndices)
            if segments is None or indices is None:
                raise InputError(f"sparse level {level} lacks its segments or indices")
            if len(parent) and int(parent.max()) + 1 >= len(segments):
                raise InputError(f"sparse level {level} has {len(segments)} segment offsets for "
                                 f"{int(parent.max()) + 1} positions")
            if (len(segments) == 0 or segments[0] != 0 or np.any(np.diff(segments) < 0)
                    or segments[-1] > len(indices)):
                raise InputError(f"sparse level {level} has malformed segments")
            if len(indices) and (indices.min() < 0 or indices.max() >= size):
                raise InputError(f"sparse level {level} has an index outside [0, {size})")
            starts, counts = segments[parent], segments[parent + 1] - segments[parent]
            total = int(counts.sum())
            offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
            parent = np.arange(total, dtype=np.int64) + offsets
            coords = np.concatenate([np.repeat(coords, counts, axis=0), indices[parent][:, None]], axis=1)
        else:
            raise InputError(f"sparse level {level} has unknown format {int(entry.format)}")
    if len(coords) != values.size:
        raise InputError(f"sparse tensor stores {values.size} values for {len(coords)} encoded positions")
    original = np.zeros((len(coords), n), dtype=np.int64)
    for level in range(n):
        original[:, int(order[level])] = coords[:, level]
    for level in range(n, n + k):
        j = int(order[level]) - n
        dim = int(block_map[j])
        original[:, dim] = original[:, dim] * block_size[j] + coords[:, level]
    flat = np.ravel_multi_index(tuple(original.T), shape) if len(coords) else np.zeros(0, dtype=np.int64)
    if len(np.unique(flat)) != len(flat):
        raise InputError("sparse tensor encodes the same element twice")
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    dense[flat] = values.ravel()
    return dense.reshape(shape)
