"""Validation: FP32 baseline vs INT8 per method, per condition and per layer, with gates and triage."""
