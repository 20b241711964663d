"""The single call into TensorFlow's private MLIR quantizer.

``tensorflow.lite.python.convert.mlir_quantize`` is not a public API: it is pinned by the
tensorflow range in pyproject.toml and guarded by tests/test_tfquant_contract.py, which fails
loudly if an upgrade changes how stamped min/max ranges become scales.
"""

from __future__ import annotations

from edgeq.artifacts import IOType
from edgeq.errors import InputError
from edgeq.quiet import native_output_captured
from edgeq.tfimport import import_tensorflow


def mlir_quantize(stamped: bytes, io_type: IOType, per_channel: bool = True,
                  per_channel_dense: bool = True) -> bytes:
    """Full-integer quantization of a float flatbuffer whose activations carry min/max ranges."""
    tf = import_tensorflow("INT8 conversion")
    from tensorflow.lite.python import convert as tf_convert

    io_dtype = {IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.FLOAT32: tf.float32}[io_type]
    try:
        with native_output_captured() as captured:  # it prints its flags to stdout
            quantized = tf_convert.mlir_quantize(
                stamped,
                disable_per_channel=not per_channel,
                fully_quantize=False,  # as TFLiteConverter calls it: True ignores the I/O types
                input_data_type=io_dtype,
                output_data_type=io_dtype,
                disable_per_channel_for_dense_layers=not per_channel_dense,
            )
    except (ValueError, RuntimeError) as exc:
        # The quantizer's C++ errors arrive as ValueError (an invalid or unsupported model) or RuntimeError
        # (a failed pass): the model's problem, exit 2. Anything else is a bug in edgeq's call: exit 4.
        detail = captured.first_error_line() or str(exc).strip().splitlines()[0]
        raise InputError(f"the TensorFlow quantizer refused the model: {detail}") from exc
    return bytes(quantized)
