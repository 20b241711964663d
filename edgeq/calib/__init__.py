"""Calibration: streaming activation statistics and the range estimators built on them."""
