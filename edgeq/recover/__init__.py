"""When INT8 falls short: simulated quantization, sensitivity, per-tensor range search and the float-graph
transforms (equalization, bias correction) the recovery ladder applies (docs/recovery.md)."""
