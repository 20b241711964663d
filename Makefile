# The two commands: `make demo` and `make test`. Each creates or updates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeq-installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
export NO_ALBUMENTATIONS_UPDATE = 1

.PHONY: venv demo test lint bench-zoo clean

# Re-install only when the dependency list changes; otherwise this is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true  # pip compiles one file at a time
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeq build docs/examples/cnn_digits.yaml -o out/demo

lint: $(STAMP)
	$(BIN)/ruff check .

# Two workers, tests grouped by file (module fixtures built once): measured 143 s vs 234 s serial on
# 2 idle cores (docs/testing.md). Files are handed out slowest first (tests/conftest.py SLOW_FILES_FIRST),
# not by xdist's test count, so no worker ends alone with a long file.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
	$(BIN)/edgeq device-test -q --model device_tests/data/cnn_digits_int8.tflite \
		--eval-set device_tests/data/digits_test.npz --reference tests/data/demo/cnn_digits_float32.tflite \
		--budget device_tests/budget.ci.yaml \
		--latency-from device_tests/data/recorded_bench_cnn_digits_int8_quiet.json

bench-zoo: $(STAMP)
	$(BIN)/python benchmarks/zoo.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
