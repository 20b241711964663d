"""Deterministic training of one zoo model: seeded, op-deterministic, cosine-decayed Adam."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from datagen.bundled import LabelledImages
from edgeq import progress
from edgeq.artifacts import Preprocessing
from edgeq.preprocess import apply_preprocessing

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class TrainOutcome:
    model: "keras.Model"
    val_accuracy: float
    test_accuracy: float
    train_seconds: float


def train_classifier(model: "keras.Model", train: LabelledImages, val: LabelledImages, test: LabelledImages,
                     preprocessing: Preprocessing, *, epochs: int, batch_size: int, learning_rate: float,
                     seed: int, train_limit: int | None) -> TrainOutcome:
    """Fit ``model`` and measure it; the same seed and data give the same weights."""
    import keras

    from .determinism import seed_everything
    from .progress import EpochProgress

    seed_everything(seed)
    x_train = apply_preprocessing(preprocessing, train.images)
    y_train = train.labels
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    steps = max(1, epochs * int(np.ceil(len(y_train) / batch_size)))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.perf_counter()
    with progress.task("training", epochs) as counted:  # one line per epoch (Keras' verbose output prints)
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                  callbacks=[EpochProgress(epochs, counted)])
    train_seconds = time.perf_counter() - started
    return TrainOutcome(
        model=model,
        val_accuracy=keras_accuracy(model, val, preprocessing),
        test_accuracy=keras_accuracy(model, test, preprocessing),
        train_seconds=train_seconds,
    )


def keras_accuracy(model: "keras.Model", data: LabelledImages, preprocessing: Preprocessing) -> float:
    """Top-1 accuracy of a Keras classifier on a labelled set."""
    probs = model.predict(apply_preprocessing(preprocessing, data.images), batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == data.labels))
