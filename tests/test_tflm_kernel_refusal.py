"""TFLite Micro's refusals, each reported as what it is: a kernel that refuses int8, never an arena overflow.

The models are the int8 one-op models tools/kernel_tables.py measures: EXP, which edgeq's quantizer makes int8
and TFLM's EXP kernel refuses at prepare, and SQUARE, which the quantizer leaves in float (measured with its
DEQUANTIZE/QUANTIZE removed) and TFLM's kernel refuses only when it first runs. Before, the binding's
"TFLM failed to allocate tensors" made the EXP refusal read "does not fit a TFLite Micro tensor arena of
134217728 bytes".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_kernel_tables import load_generator  # tools/kernel_tables.py, loaded once

from edgeq.errors import ExitCode, InputError
from edgeq.harness import tflm
from edgeq.spec.check import check_model
from edgeq.tflite import model as tfl

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests" / "data" / "tiny_int8.tflite"


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    pytest.importorskip("tensorflow")
    generator = load_generator()
    cases = generator._cases()
    folder = tmp_path_factory.mktemp("one-op")
    models = {}
    for op in ("EXP", "SQUARE"):
        made = generator.make(op, cases[op], folder / op)
        assert made.model is not None and generator._ops(made.model) == [op]
        models[op] = made.model
    return models


def test_an_int8_exp_is_a_kernel_refusal_at_prepare(int8_models: dict[str, bytes]) -> None:
    with pytest.raises(tflm.KernelRefusedError) as caught:
        tflm.open_session(int8_models["EXP"])
    message = str(caught.value)
    assert message.startswith("TFLite Micro's EXP kernel refuses node 0 (INT8 -> INT8) at prepare: ")
    assert "exp.cc" in message and "INT8 != FLOAT32" in message
    assert "arena" not in message and "134217728" not in message
    assert caught.value.ops == ("EXP",) and caught.value.phase == "prepare"
    assert isinstance(caught.value, tflm.UnsupportedOpError)  # callers that catch "TFLM cannot run this op" still do
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_an_int8_square_is_refused_at_its_first_invoke(int8_models: dict[str, bytes]) -> None:
    session = tflm.open_session(int8_models["SQUARE"])  # TFLM's SQUARE checks its types only when it runs
    session.set_inputs([np.zeros(session.inputs[0].shape, np.int8)])
    with pytest.raises(tflm.KernelRefusedError) as caught:
        session.invoke()
    assert str(caught.value).startswith("TFLite Micro's SQUARE kernel refuses node 0 (INT8 -> INT8) at invoke: ")
    assert "INT8 != FLOAT32" in str(caught.value)
    assert caught.value.ops == ("SQUARE",) and caught.value.phase == "invoke"


def test_check_for_tflm_fails_what_tflm_refuses(int8_models: dict[str, bytes]) -> None:
    exp = int8_models["EXP"]
    assert check_model(exp).passed and check_model(exp, target="xnnpack").passed  # LiteRT runs int8 EXP
    report = check_model(exp, target="tflm")
    assert not report.passed
    assert [(f.rule_id, f.op_type) for f in report.findings] == [("tflm.unsupported-op", "EXP")]
    square = check_model(int8_models["SQUARE"])  # LiteRT refuses int8 SQUARE too
    assert ("op.no-int8-kernel", "SQUARE") in {(f.rule_id, f.op_type) for f in square.findings}


#: TFLM's log (tflite-micro 0.dev20261023182759) for an int8 CONV_2D with 512 output channels allocated in a
#: 12000-byte arena: the kernel's prepare fails because the arena ran out, so the kernel's line is no refusal.
ARENA_SHORT_IN_PREPARE = [
    "Failed to allocate temp memory. Requested: 24, available 0, missing: 24",
    "Unable to allocate TfLiteAffineQuantization.",
    "Failed to populate a temp TfLiteTensor struct from flatbuffer data!",
    "tensorflow/lite/micro/kernels/conv_common.cc:107 output != nullptr was not true.",
    "Node CONV_2D (number 0) failed to prepare with status 1",
    "TFLM failed to allocate tensors",
]


def test_a_prepare_that_ran_out_of_arena_is_an_arena_overflow() -> None:
    parsed = tfl.parse(TINY.read_bytes())
    error = tflm._failure(ARENA_SHORT_IN_PREPARE, parsed, 12000)
    assert type(error) is InputError
    assert str(error) == ("the model does not fit a TFLite Micro tensor arena of 12000 bytes (the cap): "
                          "Failed to allocate temp memory. Requested: 24, available 0, missing: 24")


def test_the_bindings_generic_line_alone_is_not_called_an_arena_overflow() -> None:
    parsed = tfl.parse(TINY.read_bytes())
    error = tflm._failure(["TFLM failed to allocate tensors"], parsed, 1 << 27)
    assert type(error) is InputError
    assert str(error) == "TFLite Micro cannot load the model: TFLM failed to allocate tensors"
