"""Regenerate digits_test.npz, the suite's evaluation set, from scikit-learn (run from the repo root).

    .venv/bin/python device_tests/data/make_digits_test.py

It is exactly ``digits:test`` as edgeq loads it (datagen.bundled.load_digits: 360 images upsampled to
32x32 RGB uint8, with their labels), stored so the device suite can measure top-1 on a board that has only
``edgeq[device-test]`` (no scikit-learn). tests/test_device_test_verb.py checks the two still agree.
The data is scikit-learn's copy of the UCI digits (BSD-3-Clause; see DIGITS_NOTICE.txt).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datagen.bundled import load_digits

OUT = Path(__file__).resolve().parent / "digits_test.npz"


def main() -> None:
    digits = load_digits("test")
    np.savez_compressed(OUT, images=digits.images, labels=digits.labels)
    print(f"wrote {OUT} ({len(digits)} images {list(digits.images.shape[1:])}, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
