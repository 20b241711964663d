"""The zoo registry, its recipe-hash cache, and ``build`` (train or reuse).

A model's cache key hashes its recipe, its architecture, the code that builds and trains it and the
framework versions, so a change to any of them retrains and nothing stale is ever reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from datagen import bundled
from edgeq import preprocess
from edgeq.artifacts import Artifact, Preprocessing
from edgeq.errors import InputError, UsageError
from edgeq.progress import step
from edgeq.versions import package_versions

from . import architectures

if TYPE_CHECKING:
    import keras

    from datagen.bundled import LabelledImages

CACHE_ENV = "EDGEQ_CACHE_DIR"
_CODE_FILES = ("architectures.py", "layers.py", "train.py", "determinism.py")


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides the trained weights besides code and data."""

    epochs: int
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    train_limit: int | None = None  # use only the first N training images (reduced test budgets)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    dataset: str  # "digits" or "lfw"
    input_shape: tuple[int, int, int]
    num_classes: int
    builder: Callable[..., "keras.Model"]
    recipe: TrainRecipe
    preprocessing: Preprocessing


_DIGITS_PP = Preprocessing(size=(32, 32), mean=(127.5,), std=(127.5,))
_LFW_PP = Preprocessing(size=(25, 25), mean=(127.5,), std=(127.5,))

ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("cnn", "plain CNN: conv-BN-ReLU, max pooling, dense", "digits", (32, 32, 3), 10,
             architectures.plain_cnn, TrainRecipe(epochs=30), _DIGITS_PP),
    ZooEntry("resnet", "ResNet-style: basic residual blocks with identity and projection adds",
             "digits", (32, 32, 3), 10, architectures.resnet, TrainRecipe(epochs=15), _DIGITS_PP),
    ZooEntry("mobilenet_v2", "MobileNetV2-style: inverted residuals, depthwise convs, ReLU6",
             "digits", (32, 32, 3), 10, architectures.mobilenet_v2, TrainRecipe(epochs=20), _DIGITS_PP),
    ZooEntry("vit", "small ViT: patch embedding, LayerNorm, multi-head self-attention, GELU, softmax",
             "digits", (32, 32, 3), 10, architectures.vit, TrainRecipe(epochs=40, learning_rate=2e-3),
             _DIGITS_PP),
    ZooEntry("face_cnn", "compact grey CNN: face vs non-face on lfw_subset", "lfw", (25, 25, 1), 2,
             architectures.face_cnn, TrainRecipe(epochs=60, batch_size=16), _LFW_PP),
)}


@dataclass(frozen=True)
class ZooCard(Artifact):
    """What was trained, how, and how well: stored beside every cached zoo model."""

    kind: ClassVar[str] = "zoo_card"
    name: str
    key: str
    description: str
    dataset: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    params: int
    recipe: TrainRecipe
    preprocessing: Preprocessing
    val_accuracy: float
    test_accuracy: float
    train_seconds: float
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltModel:
    card: ZooCard
    path: Path  # the cached model.keras
    reused: bool


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The zoo cache: ``override``, else $EDGEQ_CACHE_DIR, else $XDG_CACHE_HOME/edgeq (~/.cache/edgeq)."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeq"


def entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise UsageError(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    return ZOO[name]


def _framework_versions() -> dict[str, str]:
    """Installed framework versions, read from package metadata so no framework is imported."""
    return package_versions(("tensorflow", "keras"))


def recipe_key(zoo_entry: ZooEntry, recipe: TrainRecipe) -> str:
    """A hash of everything that decides the trained model."""
    here = Path(__file__).parent
    code = hashlib.sha256()
    for path in [*(here / f for f in _CODE_FILES), Path(bundled.__file__), Path(preprocess.__file__)]:
        code.update(path.read_bytes())
    payload = {
        "name": zoo_entry.name, "dataset": zoo_entry.dataset, "input_shape": zoo_entry.input_shape,
        "num_classes": zoo_entry.num_classes, "builder": zoo_entry.builder.__name__,
        "recipe": dataclasses.asdict(recipe), "preprocessing": zoo_entry.preprocessing.to_dict(),
        "code": code.hexdigest(), "versions": _framework_versions(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_splits(dataset: str) -> tuple["LabelledImages", "LabelledImages", "LabelledImages"]:
    loader = bundled.load_digits if dataset == "digits" else bundled.load_lfw
    return loader("train"), loader("val"), loader("test")


def build(name: str, recipe: TrainRecipe | None = None, cache: str | os.PathLike[str] | None = None,
          force: bool = False) -> BuiltModel:
    """Train zoo model ``name`` under ``recipe`` (default: its own), or reuse the cached result."""
    zoo_entry = entry(name)
    recipe = recipe or zoo_entry.recipe
    if recipe.epochs < 1 or recipe.batch_size < 1 or (recipe.train_limit is not None and recipe.train_limit < 1):
        raise UsageError("epochs, batch size and train limit must be positive")
    key = recipe_key(zoo_entry, recipe)
    final = cache_dir(cache) / "zoo" / f"{name}-{key}"
    if final.exists() and not force:
        card = ZooCard.from_dict(json.loads((final / "card.json").read_text()))
        return BuiltModel(card=card, path=final / "model.keras", reused=True)
    card, staged = _train_into_staging(zoo_entry, recipe, key, final.parent)
    if force and final.exists():
        shutil.rmtree(final)
    try:
        os.replace(staged, final)
    except OSError:  # another process finished the same model first: keep theirs
        shutil.rmtree(staged, ignore_errors=True)
    return BuiltModel(card=card, path=final / "model.keras", reused=False)


def _train_into_staging(zoo_entry: ZooEntry, recipe: TrainRecipe, key: str,
                        parent: Path) -> tuple[ZooCard, Path]:
    from .determinism import seed_everything
    from .train import train_classifier

    step(f"zoo {zoo_entry.name}: training {recipe.epochs} epochs (cached afterwards)")
    train, val, test = load_splits(zoo_entry.dataset)
    seed_everything(recipe.seed)  # the initial weights come from the seed too
    model = zoo_entry.builder(zoo_entry.input_shape, zoo_entry.num_classes)
    outcome = train_classifier(
        model, train, val, test, zoo_entry.preprocessing, epochs=recipe.epochs,
        batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, seed=recipe.seed,
        train_limit=recipe.train_limit,
    )
    card = ZooCard(
        name=zoo_entry.name, key=key, description=zoo_entry.description, dataset=zoo_entry.dataset,
        input_shape=zoo_entry.input_shape, class_names=train.class_names,
        params=int(model.count_params()), recipe=recipe, preprocessing=zoo_entry.preprocessing,
        val_accuracy=outcome.val_accuracy, test_accuracy=outcome.test_accuracy,
        train_seconds=round(outcome.train_seconds, 2), versions=_framework_versions(),
    )
    parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{zoo_entry.name}-", dir=parent))
    try:
        outcome.model.save(staged / "model.keras")
        (staged / "card.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return card, staged


def load_model(path: str | os.PathLike[str]) -> "keras.Model":
    """Load a zoo ``.keras`` file (registers the zoo's custom layers first)."""
    import keras

    from . import layers  # noqa: F401  (registration side effect)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such model file: {path}")
    return keras.saving.load_model(path)
