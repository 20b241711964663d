"""The condition registry: completeness, determinism, monotonic severity, JSON records, custom files."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from datagen import bundled
from datagen.condition_engine import MAX_INLINE_ELEMENTS, apply_condition, sample_seed
from datagen.conditions import CONDITIONS, SEVERITIES, Condition, get_condition, registry_with
from datagen.custom_conditions import load_custom_conditions
from edgeq.errors import InputError, UsageError

REQUIRED = ("original", "low_light", "high_contrast", "noise", "blur", "jpeg", "fog", "overexposed")
RANDOM = tuple(n for n in CONDITIONS if n != "original")
PHOTOS = ("skimage/astronaut", "skimage/coffee", "sklearn/china.jpg")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Real photos resized to 96×96 RGB, the size of a small edge model's input."""
    return [cv2.resize(p, (96, 96), interpolation=cv2.INTER_AREA) for p in bundled.load_photos(list(PHOTOS)).values()]


@pytest.fixture(scope="module")
def photo(photos: list[np.ndarray]) -> np.ndarray:
    return photos[0]


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    """A real grayscale handwritten digit, 32×32×1."""
    return bundled.load_digits("train", rgb=False).images[0]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


# --- completeness -----------------------------------------------------------------------------


def test_registry_has_the_required_conditions() -> None:
    assert set(REQUIRED) <= set(CONDITIONS)
    for name, condition in CONDITIONS.items():
        assert condition.name == name and condition.description
        assert [s["severity"] for s in condition.spec] == list(SEVERITIES)
        assert json.loads(json.dumps(condition.spec)) == list(condition.spec)  # spec is JSON-safe as is
        for severity_spec in condition.spec:
            assert all(step["args"]["p"] == 1.0 for step in severity_spec["transforms"])


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_every_condition_builds_and_runs_on_rgb_and_grey(name: str, photo: np.ndarray, digit: np.ndarray) -> None:
    condition = CONDITIONS[name]
    for severity in SEVERITIES:
        pipeline = condition.pipeline(severity)
        assert len(pipeline.transforms) == len(condition.spec[severity - 1]["transforms"])
        for image in (photo, digit, digit[..., 0]):
            out, applied = apply_condition(image, condition, severity, seed=11)
            assert out.dtype == np.uint8 and out.shape == image.shape
            expected = [step["transform"] for step in condition.spec[severity - 1]["transforms"]]
            assert [a["transform"] for a in applied] == expected


def test_grey_hxw_and_hxwx1_give_the_same_pixels(digit: np.ndarray) -> None:
    for condition in CONDITIONS.values():  # includes noise, whose ISONoise only takes RGB
        a, _ = apply_condition(digit, condition, 4, seed=5)
        b, _ = apply_condition(digit[..., 0], condition, 4, seed=5)
        assert np.array_equal(a[..., 0], b)


def test_transforms_are_built_strictly() -> None:
    typo = Condition("typo", "misspelled argument", tuple(
        {"severity": s, "transforms": [{"transform": "GaussNoise", "args": {"std_rang": [0.1, 0.2], "p": 1.0}}]}
        for s in SEVERITIES
    ))
    with pytest.raises(ValueError, match="std_rang"):
        typo.pipeline(3)


def test_original_is_the_identity(photo: np.ndarray, digit: np.ndarray) -> None:
    for severity in SEVERITIES:
        for image in (photo, digit):
            out, applied = apply_condition(image, CONDITIONS["original"], severity, seed=severity)
            assert np.array_equal(out, image) and applied == []


def test_bad_arguments_are_refused(photo: np.ndarray) -> None:
    noise = CONDITIONS["noise"]
    with pytest.raises(InputError, match="uint8"):
        apply_condition(photo.astype(np.float32), noise, 3, seed=0)
    with pytest.raises(InputError, match="shape"):
        apply_condition(np.zeros((8, 8, 4), np.uint8), noise, 3, seed=0)
    with pytest.raises(UsageError, match="severity"):
        apply_condition(photo, noise, 0, seed=0)
    with pytest.raises(UsageError, match="seed"):
        apply_condition(photo, noise, 3, seed=-1)
    with pytest.raises(UsageError):
        noise.pipeline(6)


def test_input_image_is_not_modified(photo: np.ndarray) -> None:
    before = photo.copy()
    for condition in CONDITIONS.values():
        apply_condition(photo, condition, 5, seed=1)
    assert np.array_equal(photo, before)


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_bytes_different_seeds_differ(photo: np.ndarray) -> None:
    for name in RANDOM:
        condition = CONDITIONS[name]
        first, record = apply_condition(photo, condition, 3, seed=123)
        again, record_again = apply_condition(photo, condition, 3, seed=123)
        assert first.tobytes() == again.tobytes() and record == record_again, name
        others = {_digest(apply_condition(photo, condition, 3, seed=s)[0]) for s in range(5)}
        assert len(others) > 1, f"{name} ignores its seed"


def test_results_do_not_depend_on_call_order(photo: np.ndarray, digit: np.ndarray) -> None:
    jobs = [(photo, "noise", 3, 1), (digit, "blur", 2, 2), (photo, "jpeg", 5, 3), (photo, "noise", 3, 4),
            (digit, "noise", 4, 5), (photo, "fog", 1, 6), (photo, "low_light", 4, 7)]
    forward = [_digest(apply_condition(img, CONDITIONS[c], s, seed)[0]) for img, c, s, seed in jobs]
    backward = [_digest(apply_condition(img, CONDITIONS[c], s, seed)[0]) for img, c, s, seed in reversed(jobs)]
    assert forward == backward[::-1]


def test_a_fresh_interpreter_gives_the_same_bytes(photo: np.ndarray) -> None:
    here = {n: _digest(apply_condition(photo, CONDITIONS[n], 3, sample_seed(7, n, "a", 3))[0]) for n in CONDITIONS}
    script = textwrap.dedent(f"""
        import hashlib, json
        import cv2
        from datagen import bundled
        from datagen.condition_engine import apply_condition, sample_seed
        from datagen.conditions import CONDITIONS
        photo = cv2.resize(bundled.load_photos([{PHOTOS[0]!r}])[{PHOTOS[0]!r}], (96, 96), interpolation=cv2.INTER_AREA)
        out = {{}}
        for n in reversed(list(CONDITIONS)):  # a different order, too
            img, _ = apply_condition(photo, CONDITIONS[n], 3, sample_seed(7, n, "a", 3))
            out[n] = hashlib.sha256(img.tobytes()).hexdigest()
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here


def test_each_transform_gets_its_own_random_stream(photo: np.ndarray) -> None:
    # Compose.set_random_seed alone would give both noise maps the same draws.
    twice = Condition("twice", "two identical noise steps", tuple(
        {"severity": s, "transforms": [
            {"transform": "GaussNoise", "args": {"std_range": [0.05, 0.05], "per_channel": True, "p": 1.0}},
        ] * 2} for s in SEVERITIES
    ))
    _, applied = apply_condition(photo, twice, 3, seed=1)
    first, second = (a["params"]["noise_map"] for a in applied)
    assert first["mean"] != second["mean"]


def test_sample_seed_is_stable_and_specific() -> None:
    # Pinned: changing the derivation would silently change every existing manifest's images.
    assert sample_seed(0, "noise", 7, 3) == 1336719486393445545
    assert sample_seed(0, "noise", 7, 3) == sample_seed(0, "noise", "7", 3)
    seeds = {sample_seed(b, c, i, s) for b in (0, 1) for c in ("noise", "blur") for i in (1, 2) for s in (1, 5)}
    assert len(seeds) == 16
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(UsageError):
        sample_seed(0, "noise", 1, 0)
    with pytest.raises(UsageError):
        sample_seed(-1, "noise", 1, 1)


def test_conditions_survive_pickling_for_worker_processes(photo: np.ndarray) -> None:
    condition = CONDITIONS["noise"]
    apply_condition(photo, condition, 3, seed=1)  # fills the pipeline cache, which must not travel
    copy = pickle.loads(pickle.dumps(condition))
    assert copy == condition
    assert np.array_equal(apply_condition(photo, copy, 3, 9)[0], apply_condition(photo, condition, 3, 9)[0])


# --- monotonic severity -----------------------------------------------------------------------


def _laplacian_var(out: np.ndarray, _: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _psnr(out: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


STATISTICS = {
    "low_light": (lambda out, ref: float(out.mean()), "down"),
    "overexposed": (lambda out, ref: float(out.mean()), "up"),
    "high_contrast": (lambda out, ref: float(out.std()), "up"),
    "noise": (lambda out, ref: float((out.astype(np.float64) - ref).std()), "up"),
    "blur": (_laplacian_var, "down"),
    "jpeg": (_psnr, "down"),
    "fog": (lambda out, ref: float(out.std()), "down"),
}


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_severity_moves_a_statistic_monotonically(name: str, photos: list[np.ndarray]) -> None:
    statistic, direction = STATISTICS[name]
    condition = CONDITIONS[name]
    means = [
        np.mean([statistic(apply_condition(img, condition, s, seed)[0], img) for img in photos for seed in (0, 1)])
        for s in SEVERITIES
    ]
    steps = np.diff(means)
    assert (steps < 0).all() if direction == "down" else (steps > 0).all(), f"{name}: {np.round(means, 2)}"


# --- applied-parameter records ----------------------------------------------------------------


def _max_list_len(value: object) -> int:
    if isinstance(value, dict):
        return max((_max_list_len(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max([len(value), *(_max_list_len(v) for v in value)])
    return 0


def test_applied_params_are_json_and_compact(photo: np.ndarray, digit: np.ndarray) -> None:
    for condition in CONDITIONS.values():
        for severity in (1, 5):
            for image in (photo, digit):
                _, applied = apply_condition(image, condition, severity, seed=3)
                text = json.dumps(applied, allow_nan=False)
                assert json.loads(text) == applied
                assert _max_list_len(applied) <= MAX_INLINE_ELEMENTS
    _, applied = apply_condition(photo, CONDITIONS["noise"], 3, seed=3)
    noise_map = applied[0]["params"]["noise_map"]  # GaussNoise's 96×96×3 map, summarised
    assert noise_map["summary"] == "array" and noise_map["shape"] == [96, 96, 3]
    assert 0.03 * 255 <= noise_map["std"] <= 0.045 * 255 * 1.05


# --- lookup and custom conditions -------------------------------------------------------------


def test_get_condition_names_the_known_ones() -> None:
    assert get_condition("fog") is CONDITIONS["fog"]
    with pytest.raises(InputError, match=r"unknown condition 'rain'; known conditions: original, low_light"):
        get_condition("rain")


VALID_YAML = """\
rain:
  description: "Rain streaks on the lens"
  transforms:
    - RandomRain: {drop_length: [5, 10, 15, 20, 25], slant_range: [-10, 10], p: 1.0}
    - GaussianBlur: {sigma_limit: [[0.2, 0.3], [0.3, 0.5], [0.5, 0.7], [0.7, 0.9], [0.9, 1.1]]}
dim:
  transforms:
    - RandomGamma: {gamma_limit: [[110, 120], [120, 130], [130, 140], [140, 150], [150, 160]]}
"""


def test_a_valid_custom_file_loads_and_applies(tmp_path: Path, photo: np.ndarray, digit: np.ndarray) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text(VALID_YAML)
    custom = load_custom_conditions(path)
    assert list(custom) == ["rain", "dim"]
    rain = custom["rain"]
    assert rain.description == "Rain streaks on the lens"
    assert [rain.spec[s - 1]["transforms"][0]["args"]["drop_length"] for s in SEVERITIES] == [5, 10, 15, 20, 25]
    assert rain.spec[2]["transforms"][1]["args"] == {"sigma_limit": [0.5, 0.7], "p": 1.0}
    registry = registry_with(custom)
    assert set(registry) == set(CONDITIONS) | {"rain", "dim"}
    for image in (photo, digit):
        out, applied = apply_condition(image, get_condition("rain", registry), 3, seed=4)
        assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
        json.dumps(applied)
    json_path = tmp_path / "extra.json"
    json_path.write_text(json.dumps({"dim": {"transforms": [{"RandomGamma": {"gamma_limit": [120, 130]}}]}}))
    assert load_custom_conditions(json_path)["dim"].spec[0]["transforms"][0]["args"]["gamma_limit"] == [120, 130]


@pytest.mark.parametrize(("text", "expected"), [
    ("rain:\n  transforms:\n    - RandomRian: {drop_length: 10}\n",
     r"condition 'rain': unknown transform 'RandomRian' \(did you mean 'RandomRain'\?\)"),
    ("rain:\n  transforms:\n    - RandomRain: {drop_lenght: 10}\n",
     r"condition 'rain': unknown argument 'drop_lenght' for RandomRain \(did you mean 'drop_length'\?\)"),
    ("rain:\n  transforms:\n    - RandomRain: {drop_length: [5, 10, 15, 20]}\n",
     r"RandomRain argument 'drop_length' has a list of 4 values; a per-severity list needs exactly 5"),
    ("grain:\n  transforms:\n    - GaussNoise: {std_range: [[0.01, 0.02], [0.02, 0.03], [0.03, 0.04], [0.05, 0.06]]}\n",
     r"GaussNoise argument 'std_range' has a list of 4 values"),
    ("noise:\n  transforms:\n    - GaussNoise: {std_range: [0.1, 0.2]}\n",
     r"condition 'noise' clashes with a built-in condition"),
    ("- GaussNoise: {std_range: [0.1, 0.2]}\n", r"must be a non-empty mapping of condition name"),
    ("grain:\n  transforms:\n    - GaussNoise: {std_range: [2, 3]}\n", r"GaussNoise at severity 1: std_range"),
    ("grain:\n  transforms:\n    - GaussNoise: {std_range: [0.1, 0.2], p: 0.5}\n", r"p must be 1\.0"),
    ("grain:\n  transforms: []\n", r"'transforms' must be a non-empty list"),
    ("grain:\n  transform:\n    - GaussNoise: {}\n", r"unknown key\(s\) 'transform'"),
    ("tilt:\n  transforms:\n    - Rotate: {limit: 10}\n", r"unknown transform 'Rotate' \(pixel-level"),
    ("grain: [1\n", r"cannot parse custom-conditions file"),
])
def test_invalid_custom_files_say_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=expected) as caught:
        load_custom_conditions(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_transforms_without_a_strict_argument_load(tmp_path: Path, photo: np.ndarray) -> None:
    """albumentations 2.0.8's MedianBlur and ToSepia take no ``strict``; they still load and apply."""
    path = tmp_path / "median.yaml"
    path.write_text("median:\n  transforms:\n    - MedianBlur: {blur_limit: [3, 3, 5, 5, 7]}\n    - ToSepia: {}\n")
    condition = load_custom_conditions(path)["median"]
    out, applied = apply_condition(photo, condition, 3, seed=1)
    assert out.shape == photo.shape and [a["transform"] for a in applied] == ["MedianBlur", "ToSepia"]
    path.write_text("median:\n  transforms:\n    - MedianBlur: {blur_limt: 3}\n")
    with pytest.raises(InputError, match="did you mean 'blur_limit'"):
        load_custom_conditions(path)


def test_missing_file_and_registry_clash(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such custom-conditions file"):
        load_custom_conditions(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="clashes"):
        registry_with({"fog": CONDITIONS["fog"]})
