"""Artifacts survive to_dict -> JSON -> from_dict unchanged, and bad documents are refused clearly."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq import artifacts
from edgeq.artifacts import SCHEMA_VERSION, Artifact, Estimator, Preprocessing, TensorRange
from edgeq.errors import InputError

ALL_ARTIFACTS = [
    cls for cls in vars(artifacts).values()
    if isinstance(cls, type) and issubclass(cls, Artifact) and cls is not Artifact
]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
finite = st.floats(allow_nan=False, allow_infinity=False)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of type ``tp`` that JSON can carry (finite floats, str keys), from the type hints alone."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return json_values
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    if tp is type(None):
        return st.none()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return st.builds(tp, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(tp)})
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(st.text(max_size=6), strategy_for(args[1]), max_size=3)
    return {float: finite, int: st.integers(-(2**31), 2**31), str: st.text(max_size=10),
            bool: st.booleans()}[tp]


def test_every_artifact_kind_is_unique() -> None:
    kinds = [cls.kind for cls in ALL_ARTIFACTS]
    assert len(kinds) == len(set(kinds))
    assert len(ALL_ARTIFACTS) >= 8  # the result types left for edgeq/results (documents, not artifacts)


@pytest.mark.parametrize("cls", ALL_ARTIFACTS, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_json_round_trip(cls: type[Artifact], data: st.DataObject) -> None:
    original = data.draw(strategy_for(cls))
    document = json.loads(json.dumps(original.to_dict()))
    assert document["kind"] == cls.kind
    assert document["schema_version"] == SCHEMA_VERSION
    assert cls.from_dict(document) == original


def _range() -> TensorRange:
    return TensorRange(name="conv1", min=-1.0, max=2.0, estimator=Estimator.MSE, rule="method",
                       outlier_ratio=1.5, clip_fraction=0.001)


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(InputError, match="expected a preprocessing artifact, got 'tensor_range'"):
        Preprocessing.from_dict(_range().to_dict())


def test_newer_schema_is_refused() -> None:
    doc = {**_range().to_dict(), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(InputError, match="schema version"):
        TensorRange.from_dict(doc)


def test_missing_field_is_named() -> None:
    doc = _range().to_dict()
    del doc["max"]
    with pytest.raises(InputError, match="missing field 'max'"):
        TensorRange.from_dict(doc)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("estimator", "median", "not one of minmax, percentile"),
    ("min", "low", "expected a number"),
    ("name", 3, "expected str"),
])
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TensorRange.from_dict({**_range().to_dict(), field: value})


def test_artifacts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _range().min = 0.0  # type: ignore[misc]


def test_non_finite_floats_travel_as_valid_json() -> None:
    """An infinite outlier ratio (an all-zero p99) must not write the invalid JSON token Infinity."""
    import json
    import math

    from edgeq.artifacts import Estimator, TensorRange

    original = TensorRange(name="t", min=-1.0, max=1.0, estimator=Estimator.MINMAX, rule="method",
                           outlier_ratio=math.inf, clip_fraction=math.nan)
    text = json.dumps(original.to_dict(), allow_nan=False)  # raises on Infinity/NaN
    back = TensorRange.from_dict(json.loads(text))
    assert back.outlier_ratio == math.inf and math.isnan(back.clip_fraction)
