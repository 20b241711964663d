"""Custom Keras layers used by the zoo, registered so that saved `.keras` files load again.

Import this module before ``keras.saving.load_model`` on a zoo model (edgeq's loaders do).
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="edgeq")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned (tokens, dim) table to every sequence; a plain ADD of a constant in TFLite."""

    def __init__(self, tokens: int, dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tokens, self.dim = tokens, dim

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.table = self.add_weight(shape=(1, self.tokens, self.dim), name="table",
                                     initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return x + self.table

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "tokens": self.tokens, "dim": self.dim}
