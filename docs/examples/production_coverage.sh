#!/usr/bin/env bash
# The walkthrough of docs/production_coverage.md: instrument -> app logs -> coverage -> datagen -> rebuild -> coverage.
# Run from the repository root with the venv's edgeq and python on the PATH; everything goes to out/pc/ (git-ignored).
set -u
W=out/pc; PP=mean=127.5,std=127.5
rm -rf $W; mkdir -p $W/logs  # the app appends to its logs: start from none

# The stand-in for the app: the instrumented model on LiteRT's default kernels, one record per inference.
cat > $W/simulate_app.py <<'PY'
"""A stand-in for the app: run the instrumented model over images, log min/max per inference (JSONL)."""
import json
import sys
from pathlib import Path

import numpy as np

from datagen.calibset import load_set
from edgeq.production import append_record
from edgeq.tflite.runtime import make_interpreter

model, sidecar_path, images, log, device, start = sys.argv[1:7]
sidecar = json.loads(Path(sidecar_path).read_text())
interpreter, _ = make_interpreter(model, "xnnpack", threads=1)  # what an app's LiteRT runs by default
(detail,) = interpreter.get_input_details()
outputs = interpreter.get_output_details()
for i, image in enumerate(load_set(images).images):  # uint8 HxWxC, as the camera would deliver
    x = (image[None].astype(np.float32) - 127.5) / 127.5  # the app's own preprocessing
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    tensors = {}
    for out in sidecar["outputs"]:
        tensors.setdefault(out["tensor"], [0.0, 0.0])[out["statistic"] == "max"] = \
            interpreter.get_tensor(outputs[out["output_index"]]["index"]).item()
    append_record(log, model_sha256=sidecar["sha256"], time=float(start) + 600 * i,  # one inference per 10 min
                  tensors={name: tuple(v) for name, v in tensors.items()}, device=device, app_version="1.0")
PY

set -x
# 1. instrument the model the app ships
edgeq instrument tests/data/demo/cnn_digits_float32.tflite -o $W/cnn_digits_float32_instrumented.tflite
M=$W/cnn_digits_float32_instrumented

# 2. the app's images and logs: day 1 clean digits on both phones, day 2 the Pixel 8 in dim light
edgeq datagen --source digits:test --conditions original --n 48 --seed 1 --preprocess $PP -o $W/day1 --quiet
edgeq datagen --source digits:test --conditions low_light --n 48 --severity 5 --seed 1 --preprocess $PP -o $W/day2_dim --quiet
python $W/simulate_app.py $M.tflite $M.json $W/day1 $W/logs/pixel8.jsonl "Pixel 8" 1764547200
python $W/simulate_app.py $M.tflite $M.json $W/day1 $W/logs/galaxy.jsonl "Galaxy S24" 1764547500
python $W/simulate_app.py $M.tflite $M.json $W/day2_dim $W/logs/pixel8.jsonl "Pixel 8" 1764633600
python $W/simulate_app.py $M.tflite $M.json $W/day1 $W/logs/galaxy.jsonl "Galaxy S24" 1764633900

# 3. coverage of the calibration set the model was built with (clean digits only)
edgeq datagen --source digits:train --conditions original --n 96 --seed 0 --preprocess $PP -o $W/calib_v1 --quiet
edgeq coverage tests/data/demo/cnn_digits_float32.tflite --calib $W/calib_v1 --production-log $W/logs/ \
    --instrumented $M.json -o $W/cov_v1
echo "exit $?"

# 4. which datagen conditions reach production's range: a probe set of every condition as --candidates
edgeq datagen --source digits:train --conditions original,low_light,high_contrast,noise,blur,jpeg,fog,overexposed \
    --n 256 --severity 3 --seed 0 --preprocess $PP -o $W/probe --quiet
edgeq coverage tests/data/demo/cnn_digits_float32.tflite --calib $W/calib_v1 --candidates $W/probe \
    --production-log $W/logs/ --instrumented $M.json --quiet
echo "exit $?"

# 5. the new calibration set, the rebuilt INT8 model, coverage again
edgeq datagen --source digits:train --conditions original,noise,fog,high_contrast --n 256 --severity 3 --seed 0 \
    --preprocess $PP -o $W/calib_v2 --quiet
edgeq convert tests/data/demo/cnn_digits_float32.tflite --calib $W/calib_v2 -o $W/cnn_digits_int8_v2.tflite --quiet
edgeq coverage tests/data/demo/cnn_digits_float32.tflite --calib $W/calib_v2 --production-log $W/logs/ \
    --instrumented $M.json -o $W/cov_v2
echo "exit $?"
