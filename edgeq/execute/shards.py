"""Contiguous, nonempty shards of a set of samples, numbered by their place in the whole set."""

from __future__ import annotations

SHARDS_PER_WORKER = 4  # several per worker, so a slow shard does not leave the other workers idle at the end


def shards(n: int, workers: int, per_worker: int = SHARDS_PER_WORKER) -> list[range]:
    """Split samples ``0..n-1`` into contiguous ranges in order, sizes differing by at most one.

    At most ``workers * per_worker`` shards and never an empty one: a set smaller than that gets one shard per
    sample, and no samples give no shards.
    """
    if n < 0 or workers < 1 or per_worker < 1:
        raise ValueError(f"cannot shard {n} samples over {workers} workers ({per_worker} shards each)")
    count = min(n, workers * per_worker)
    if count == 0:
        return []
    size, extra = divmod(n, count)
    out, start = [], 0
    for i in range(count):
        stop = start + size + (1 if i < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out
