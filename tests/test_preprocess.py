"""Preprocessing: (x - mean) / std per channel, channel order, resize, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeq.artifacts import ChannelOrder, Preprocessing
from edgeq.errors import InputError
from edgeq.preprocess import apply_preprocessing


@example(images=np.full((1, 1, 1, 3), 131, np.uint8), mean=(0.0, 0.0, 131.00608316845344), std=(1.0, 1.0, 0.5))
@settings(max_examples=30, deadline=None)
@given(images=arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.just(3))),
       mean=st.tuples(*[st.floats(0, 255)] * 3), std=st.tuples(*[st.floats(0.5, 100)] * 3))
def test_normalization_matches_the_obvious_loop(images: np.ndarray, mean: tuple[float, ...],
                                                std: tuple[float, ...]) -> None:
    out = apply_preprocessing(Preprocessing(mean=mean, std=std), images)
    assert out.dtype == np.float32
    n, h, w, c = images.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for ch in range(c):
                    # the model input is float32, mean and std too: near-cancelling (pixel - mean) keeps the
                    # float32 rounding of mean (hypothesis found 131 - 131.00608 off by 1e-5 after / 0.5)
                    expected = (float(images[i, y, x, ch]) - float(np.float32(mean[ch]))) / float(np.float32(std[ch]))
                    assert out[i, y, x, ch] == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_bgr_reverses_channels() -> None:
    images = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    out = apply_preprocessing(Preprocessing(channel_order=ChannelOrder.BGR), images)
    assert np.array_equal(out[..., 0], images[..., 2])


def test_resize_to_spec_size_keeps_channels() -> None:
    images = np.full((2, 8, 8, 1), 100, dtype=np.uint8)
    out = apply_preprocessing(Preprocessing(size=(4, 6)), images)
    assert out.shape == (2, 4, 6, 1)
    assert np.allclose(out, 100.0)


@pytest.mark.parametrize(("images", "spec", "message"), [
    (np.zeros((1, 2, 2, 3), np.float32), Preprocessing(), "expected uint8"),
    (np.zeros((2, 2, 3), np.uint8), Preprocessing(), "expected uint8"),
    (np.zeros((1, 2, 2, 3), np.uint8), Preprocessing(mean=(1.0, 2.0)), "mean has 2 values"),
    (np.zeros((1, 2, 2, 3), np.uint8), Preprocessing(std=(0.0,)), "std must not contain 0"),
])
def test_bad_input_is_refused(images: np.ndarray, spec: Preprocessing, message: str) -> None:
    with pytest.raises(InputError, match=message):
        apply_preprocessing(spec, images)
