"""datagen: real image sources and condition-stratified calibration sets for edgeq."""
