"""Intake: any supported float model (Keras, SavedModel, float .tflite) -> one static float flatbuffer.

Below calibration and conversion: both consume the FloatModel it produces and nothing here imports them.
"""
