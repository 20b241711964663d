"""Zoo training reports its epochs through edgeq.progress (Keras' own verbose output is off: it prints).

Training a zoo model takes a minute or more; without this a user sees nothing until it ends. Each epoch
becomes one step line (``epoch 3/8 loss 0.4120 acc 0.871 12 s``) inside a ``training`` task that counts
epochs, so a terminal shows a bar with an ETA and a CI log gets one line per epoch. Where the lines go is
the caller's reporter; under the library's default they go nowhere. Not part of the zoo cache key
(models/zoo.py ``_CODE_FILES``): reporting does not change the weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import keras

from edgeq import progress


def epoch_line(epoch: int, epochs: int, logs: Mapping[str, Any], seconds: float) -> str:
    """``epoch 3/8 loss 0.4120 acc 0.871 12 s``: the figures Keras measured on the epoch, then its time."""
    parts = [f"epoch {epoch}/{epochs}"]
    if "loss" in logs:
        parts.append(f"loss {float(logs['loss']):.4f}")
    if "accuracy" in logs:
        parts.append(f"acc {float(logs['accuracy']):.3f}")
    parts.append(f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s")
    return " ".join(parts)


class EpochProgress(keras.callbacks.Callback):
    """Reports each finished epoch as a step and advances ``counted`` (the caller's task, which it closes
    even when training fails). ``clock`` is injectable for tests."""

    def __init__(self, epochs: int, counted: progress.Task | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self._epochs = epochs
        self._counted = counted
        self._clock = clock
        self._began = 0.0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._began = self._clock()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        progress.step(epoch_line(epoch + 1, self._epochs, logs or {}, self._clock() - self._began))
        if self._counted is not None:
            self._counted.advance()
