"""Regenerates tiny_int8.tflite: a 3-op INT8 model for tests that must run without TensorFlow."""
from pathlib import Path

import keras
import numpy as np

import edgeq

keras.utils.set_random_seed(0)
i = keras.Input((8, 8, 1), name="image")
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(i)
x = keras.layers.MaxPooling2D()(x)
x = keras.layers.Flatten()(x)
keras.Model(i, keras.layers.Dense(3, activation="softmax")(x)).save("/tmp/tiny.keras")
np.save("/tmp/tiny_calib.npy", np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32))
edgeq.convert("/tmp/tiny.keras", str(Path(__file__).with_name("tiny_int8.tflite")), calib="/tmp/tiny_calib.npy")
