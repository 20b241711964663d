"""The float model every later stage consumes: a neutral type, so calibration and conversion can share it
without importing the loader (or each other)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeq.tflite import model as tfl


@dataclass(frozen=True)
class RewriteCount:
    """One float-graph rewrite applied at intake, and how many times."""

    name: str
    count: int


@dataclass(frozen=True)
class FloatModel:
    """A float flatbuffer ready for calibration, and where it came from."""

    flatbuffer: bytes  # after rewrites: what stats are collected on and ranges stamped into
    source: str
    source_fingerprint: str  # sha256 of the source file (or of the SavedModel's saved_model.pb)
    source_bytes: int  # size of the float model as converted, before rewrites
    rewrites: tuple[RewriteCount, ...] = ()

    @property
    def fingerprint(self) -> str:
        return tfl.sha256(self.flatbuffer)
