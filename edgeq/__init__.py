"""edgeq: full-integer INT8 TensorFlow Lite models for the edge, with calibration you can trust."""

__version__ = "0.1.0"
