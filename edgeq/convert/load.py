"""Any supported float model -> a float TFLite flatbuffer with a static input shape (batch 1 by default).

A dynamic batch leaves SHAPE/PACK/GATHER and QUANTIZE/DEQUANTIZE ops in an "int8" graph, so the
batch is fixed here, by re-wrapping the Keras model on inputs with a static batch size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeq.quiet import native_output_captured
from edgeq.tfimport import import_tensorflow

if TYPE_CHECKING:
    import keras


def keras_to_float_tflite(model: "keras.Model", batch_size: int = 1) -> bytes:
    """Convert a Keras model to a float32 ``.tflite`` flatbuffer with static batch ``batch_size``."""
    tf = import_tensorflow("converting a Keras model")
    import keras

    inputs = [keras.Input(shape=tuple(t.shape[1:]), batch_size=batch_size, name=t.name.split(":")[0],
                          dtype=t.dtype) for t in model.inputs]
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    static = keras.Model(inputs, outputs, name=model.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(static)
    with native_output_captured():  # the exporter prints its SavedModel signature to stdout
        return bytes(converter.convert())
