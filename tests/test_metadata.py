"""Preprocessing travels with the model: TFLite Metadata written by convert, read back by an independent
reader generated from the official schema, honoured by eval/bench/validate/coverage, refused when unknown."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import edgeq
from edgeq.artifacts import ChannelOrder, Preprocessing
from edgeq.calib.data import parse_preprocessing
from edgeq.cli import main as cli
from edgeq.errors import InputError
from edgeq.preprocess import RAW, PreprocessingWarning, Source, resolve
from edgeq.tflite import metadata as md
from edgeq.tflite import model as tfl

PP = Preprocessing(mean=(127.5,), std=(127.5,))
TFLITE_SUPPORT = "tflite-support==0.4.4"


@pytest.fixture(scope="session")
def official(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``metadata_schema_py_generated``: the reader Google generated with flatc from the official
    metadata_schema.fbs, as shipped in the tflite-support wheel. The package itself cannot be installed
    next to TensorFlow 2.21 (protobuf < 4), so only its wheel is downloaded (pip's cache keeps it)."""
    folder = tmp_path_factory.mktemp("tflite-support")
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "--disable-pip-version-check", "-q", TFLITE_SUPPORT, "-d", str(folder)],
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip download {TFLITE_SUPPORT} timed out")
    wheels = list(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"cannot download {TFLITE_SUPPORT} (the official generated reader): {done.stderr.strip()[-200:]}")
    member = "tensorflow_lite_support/metadata/metadata_schema_py_generated.py"
    with zipfile.ZipFile(wheels[0]) as wheel:
        (folder / "official_metadata_schema.py").write_bytes(wheel.read(member))
        assert b'file_identifier "M001"' in wheel.read("tensorflow_lite_support/metadata/metadata_schema.fbs")
    spec = importlib.util.spec_from_file_location("official_metadata_schema", folder / "official_metadata_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_metadata(official: ModuleType, model: bytes) -> Any:
    """ModelMetadataT of a .tflite read the way tflite-support's MetadataDisplayer finds it."""
    parsed = tfl.parse(model)
    entry = next(e for e in parsed.metadata if e.name.decode() == "TFLITE_METADATA")
    buffer = bytearray(np.asarray(parsed.buffers[entry.buffer].data, dtype=np.uint8).tobytes())
    assert official.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    return official.ModelMetadataT.InitFromPackedBuf(buffer, 0)


def _input_quantization(model: bytes) -> tuple[str, float, int]:
    parsed = tfl.parse(model)
    graph = parsed.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    return tfl.tensor_type_name(tensor.type), float(tensor.quantization.scale[0]), int(tensor.quantization.zeroPoint[0])


EVERYTHING = {  # every table and union member of metadata_schema.fbs 1.5.0 at least once
    "name": "m", "description": "d", "version": "v1", "author": "a", "license": "Apache-2.0",
    "min_parser_version": "1.5.0",
    "associated_files": [{"name": "readme.txt", "description": "x", "type": 1, "locale": "en", "version": "2"}],
    "subgraph_metadata": [{
        "name": "main", "description": "sg",
        "input_tensor_metadata": [
            {"name": "image", "description": "pixels", "dimension_names": ["h", "w", "c"],
             "content": {"content_properties": {"ImageProperties": {"color_space": 1,
                                                                    "default_size": {"width": 8, "height": 6}}},
                         "range": {"min": 1, "max": 2}},
             "process_units": [{"options": {"NormalizationOptions": {"mean": [127.5, 1.0, 2.0],
                                                                     "std": [127.5, 3.0, 4.0]}}}],
             "stats": {"max": [1.0], "min": [-1.0]}},
            {"name": "audio", "content": {"content_properties": {"AudioProperties": {"sample_rate": 16000,
                                                                                     "channels": 1}}}},
            {"name": "text", "process_units": [
                {"options": {"BertTokenizerOptions": {"vocab_file": [{"name": "vocab.txt", "type": 5}]}}},
                {"options": {"SentencePieceTokenizerOptions": {"sentencePiece_model": [{"name": "sp.model"}],
                                                               "vocab_file": [{"name": "v"}]}}},
                {"options": {"RegexTokenizerOptions": {"delim_regex_pattern": "[ ]+",
                                                       "vocab_file": [{"name": "r"}]}}}]}],
        "output_tensor_metadata": [
            {"name": "boxes", "content": {"content_properties": {"BoundingBoxProperties": {
                "index": [1, 0, 3, 2], "type": 1, "coordinate_type": 1}}}},
            {"name": "scores", "content": {"content_properties": {"FeatureProperties": {}}},
             "process_units": [{"options": {"ScoreCalibrationOptions": {"score_transformation": 2,
                                                                        "default_score": 0.25}}},
                               {"options": {"ScoreThresholdingOptions": {"global_score_threshold": 0.5}}}],
             "associated_files": [{"name": "labels.txt", "type": 2}]}],
        "associated_files": [{"name": "sub.txt"}],
        "input_process_units": [{"options": {"NormalizationOptions": {"mean": [0.0], "std": [1.0]}}}],
        "output_process_units": [{"options": {"ScoreThresholdingOptions": {"global_score_threshold": 0.75}}}],
        "input_tensor_groups": [{"name": "g", "tensor_names": ["image", "audio"]}],
        "output_tensor_groups": [{"name": "det", "tensor_names": ["boxes", "scores"]}],
        "custom_metadata": [{"name": "blob", "data": list(b"\x00\x01custom")}]}],
}


def test_codec_round_trips_every_table_through_the_official_reader_and_writer(official: ModuleType) -> None:
    import flatbuffers

    ours = md.encode_metadata(EVERYTHING)
    assert md.decode(ours) == EVERYTHING
    theirs = official.ModelMetadataT.InitFromPackedBuf(bytearray(ours), 0)
    assert official.ModelMetadata.ModelMetadataBufferHasIdentifier(bytearray(ours), 0)
    sg = theirs.subgraphMetadata[0]
    image = sg.inputTensorMetadata[0]
    assert (theirs.name, theirs.author, theirs.minParserVersion) == (b"m", b"a", b"1.5.0")
    assert image.content.contentPropertiesType == official.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == official.ColorSpaceType.RGB
    assert (image.content.contentProperties.defaultSize.width, image.content.contentProperties.defaultSize.height) \
        == (8, 6)
    unit = image.processUnits[0]
    assert unit.optionsType == official.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [127.5, 1.0, 2.0] and list(unit.options.std) == [127.5, 3.0, 4.0]
    assert list(image.stats.min) == [-1.0] and list(image.stats.max) == [1.0]
    assert sg.inputTensorMetadata[1].content.contentProperties.sampleRate == 16000
    assert sg.inputTensorMetadata[2].processUnits[2].options.delimRegexPattern == b"[ ]+"
    boxes, scores = sg.outputTensorMetadata
    assert list(boxes.content.contentProperties.index) == [1, 0, 3, 2]
    assert scores.processUnits[0].options.defaultScore == 0.25
    assert scores.associatedFiles[0].type == official.AssociatedFileType.TENSOR_AXIS_LABELS
    assert [n.decode() for n in sg.outputTensorGroups[0].tensorNames] == ["boxes", "scores"]
    assert bytes(sg.customMetadata[0].data) == b"\x00\x01custom"
    # the other way: what the official writer packs, edgeq decodes to the same document
    builder = flatbuffers.Builder(0)
    builder.Finish(theirs.Pack(builder), md.FILE_IDENTIFIER)
    assert md.decode(bytes(builder.Output())) == EVERYTHING


def test_damaged_metadata_is_one_input_error() -> None:
    good = md.encode_metadata(EVERYTHING)
    with pytest.raises(InputError, match="no 'M001' identifier"):
        md.decode(b"\x00" * 16)
    with pytest.raises(InputError, match="TFLITE_METADATA is damaged"):
        md.decode(good[:40])


def test_none_is_an_explicit_preprocessing() -> None:
    assert parse_preprocessing("none") == RAW == Preprocessing()
    assert parse_preprocessing("mean=127.5,std=127.5") == PP


def test_resolution_order_warnings_and_refusal() -> None:
    bgr = Preprocessing(mean=(127.5,), std=(127.5,), channel_order=ChannelOrder.BGR)
    assert resolve(None, model=(PP, Source.MODEL), data_set=PP).source is Source.MODEL
    explicit = resolve(RAW, model=(PP, Source.MODEL))
    assert explicit.spec == RAW and explicit.source is Source.OPTION
    assert explicit.warnings[0] == "--preprocess none (raw 0-255 values) differs from the model's metadata " \
                                   "(mean=127.5,std=127.5); using --preprocess"
    assert resolve(bgr, model=(PP, Source.MODEL)).warnings  # the channel order matters too
    assert not resolve(Preprocessing(mean=(127.5, 127.5, 127.5), std=(127.5,)), model=(PP, Source.MODEL)).warnings
    assert resolve(None, data_set=PP).source is Source.DATA_SET
    assert resolve(None, images=False).spec is None
    with pytest.raises(InputError, match=r"--preprocess mean=\.\.\.,std=\.\.\..*--preprocess none"):
        resolve(None)


# ---- a converted zoo model carries its preprocessing -------------------------------------------


@pytest.fixture(scope="module")
def converted(tiny_zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeq_models import ZOO

    out = tmp_path_factory.mktemp("metadata") / "cnn_int8.tflite"
    edgeq.convert(tiny_zoo["cnn"], out, calib="digits:train", limit=32, preprocessing=ZOO["cnn"].preprocessing)
    return out


def test_convert_writes_metadata_that_describes_the_int8_model(converted: Path, official: ModuleType) -> None:
    data = converted.read_bytes()
    theirs = official_metadata(official, data)
    tensor = theirs.subgraphMetadata[0].inputTensorMetadata[0]
    norm = tensor.processUnits[0].options
    assert list(norm.mean) == [127.5] and list(norm.std) == [127.5]
    assert tensor.content.contentProperties.colorSpace == official.ColorSpaceType.RGB
    assert (tensor.content.contentProperties.defaultSize.height, tensor.content.contentProperties.defaultSize.width) \
        == (32, 32)
    kind, scale, zero = _input_quantization(data)
    assert kind == "INT8"
    # stats are the int8 tensor's own values for pixels 0 and 255: (x - mean) / std, then scale and zero point
    assert list(tensor.stats.min) == [np.clip(np.rint(-1.0 / scale) + zero, -128, 127)]
    assert list(tensor.stats.max) == [np.clip(np.rint(1.0 / scale) + zero, -128, 127)]
    assert f"scale {scale:.8g}" in tensor.description.decode() and f"zero point {zero}" in tensor.description.decode()
    assert len(theirs.subgraphMetadata[0].outputTensorMetadata) == len(tfl.parse(data).subgraphs[0].outputs)
    assert md.model_preprocessing(data) == PP
    sidecar = json.loads(converted.with_suffix(".json").read_text())
    assert sidecar["preprocessing"]["mean"] == [127.5] and sidecar["sha256"] == tfl.sha256(data)


def _eval(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | None, str]:
    code = cli.main(["eval", *argv, "--backend", "cpu", "--json", "-"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_eval_without_preprocess_uses_the_model_metadata(converted: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    alone = tmp_path / "alone.tflite"  # no sidecar next to it: only the metadata can say
    alone.write_bytes(converted.read_bytes())
    code, implicit, err = _eval([str(alone), "--data", "digits:test"], capsys)
    assert code == 0, err
    assert implicit is not None and implicit["preprocessing_source"] == "model-metadata"
    assert "preprocessing: mean=127.5,std=127.5 (from the model's metadata)" in err
    code, explicit, err = _eval([str(alone), "--data", "digits:test", "--preprocess", "mean=127.5,std=127.5"], capsys)
    assert code == 0 and explicit is not None and explicit["preprocessing_source"] == "option"
    assert implicit["top1"] == explicit["top1"] and implicit["n"] == explicit["n"] == 360
    assert not implicit["warnings"] and "warning" not in err


def test_explicit_preprocess_that_disagrees_with_the_metadata_is_a_warning(
        converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, document, err = _eval([str(converted), "--data", "digits:test", "--limit", "40", "--preprocess", "none"],
                                capsys)
    assert code == 0 and document is not None
    warning = [line for line in err.splitlines() if line.startswith("edgeq: warning:")]
    assert len(warning) == 1 and "differs from cnn_int8.tflite's metadata (mean=127.5" in warning[0]
    assert document["warnings"] and document["preprocessing_source"] == "option"


def _strip_metadata(data: bytes) -> bytes:
    parsed = tfl.parse(data)
    parsed.metadata = [m for m in parsed.metadata if m.name.decode() != md.METADATA_NAME]
    return tfl.serialize(parsed)


def test_a_model_that_says_nothing_is_refused_and_the_sidecar_is_a_fallback(
        converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(_strip_metadata(converted.read_bytes()))
    assert md.read_metadata(bare.read_bytes()) is None
    code, _, err = _eval([str(bare), "--data", "digits:test"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no preprocessing is known for bare.tflite" in err and "--preprocess none" in err
    # an edgeq sidecar that describes exactly these bytes is the model's own record
    sidecar = json.loads(converted.with_suffix(".json").read_text())
    bare.with_suffix(".json").write_text(json.dumps({**sidecar, "sha256": tfl.sha256(bare.read_bytes())}))
    code, document, err = _eval([str(bare), "--data", "digits:test", "--limit", "20"], capsys)
    assert code == 0 and document is not None and document["preprocessing_source"] == "sidecar", err
    bare.with_suffix(".json").write_text(json.dumps(sidecar))  # a stale sidecar (other bytes) is ignored
    assert _eval([str(bare), "--data", "digits:test"], capsys)[0] == 2


def test_convert_and_calibrate_refuse_uint8_images_without_preprocessing(
        tiny_zoo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datagen.bundled import load_digits

    np.save(tmp_path / "uint8_images.npy", load_digits("train").images[:8])
    for argv in (["convert", str(tiny_zoo["cnn"]), "--calib", str(tmp_path / "uint8_images.npy"),
                  "-o", str(tmp_path / "m.tflite")],
                 ["calibrate", str(tiny_zoo["cnn"]), "--calib", "digits:train", "--limit", "4",
                  "-o", str(tmp_path / "s.npz")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert "holds uint8 images" in err and "--preprocess mean=...,std=..." in err and "--preprocess none" in err
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "s.npz").exists()
    # `none` says the model takes raw 0..255 values: accepted, and written down as mean 0, std 1
    assert cli.main(["convert", str(tiny_zoo["cnn"]), "--calib", str(tmp_path / "uint8_images.npy"),
                     "--preprocess", "none", "-o", str(tmp_path / "raw.tflite")]) == 0
    assert md.model_preprocessing((tmp_path / "raw.tflite").read_bytes()) == RAW


def test_bench_generates_inputs_through_the_model_preprocessing(converted: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "bench.json"
    assert cli.main(["bench", str(converted), "--backend", "cpu", "--runs", "3", "--min-seconds", "0",
                     "--warmup-seconds", "0", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "inputs of cnn_int8.tflite: random 0-255 pixels, preprocessing: mean=127.5,std=127.5 " \
           "(from the model's metadata)" in out
    entry = json.loads(report.read_text())["inputs"][str(converted)]
    assert entry["feed"] == "pixels" and entry["preprocessing_source"] == "model-metadata"


# ---- a float model that already carries metadata ------------------------------------------------


@pytest.fixture(scope="module")
def float_with_metadata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras CNN trained on real digits, as a float .tflite carrying TFLite Metadata (normalization
    mean 127.5/std 127.5, image properties, a label file packed in the appended zip) as MediaPipe's do."""
    import keras

    from datagen.bundled import load_digits
    from edgeq.intake.load import keras_to_float_tflite
    from edgeq.preprocess import apply_preprocessing

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    net = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    net.compile("adam", "sparse_categorical_crossentropy")
    train = load_digits("train")
    net.fit(apply_preprocessing(PP, train.images), train.labels, epochs=4, batch_size=32, verbose=0)
    flatbuffer = keras_to_float_tflite(net)
    graph = tfl.parse(flatbuffer).subgraphs[0]
    in_name = tfl.tensor_name(graph.tensors[graph.inputs[0]])
    document = {
        "name": "digits classifier", "description": "a float model from another tool", "author": "someone",
        "version": "v3", "min_parser_version": "1.0.0",
        "subgraph_metadata": [{
            "input_tensor_metadata": [{
                "name": "image", "description": "float image",
                "content": {"content_properties": {"ImageProperties": {"color_space": 1,
                                                                       "default_size": {"width": 32, "height": 32}}}},
                "process_units": [{"options": {"NormalizationOptions": {"mean": [127.5], "std": [127.5]}}}],
                "stats": {"max": [1.0], "min": [-1.0]}}],
            "output_tensor_metadata": [{
                "name": "probability", "content": {"content_properties": {"FeatureProperties": {}}},
                "stats": {"max": [1.0], "min": [0.0]},
                "associated_files": [{"name": "labels.txt", "description": "digit names", "type": 2}]}]}]}
    assert in_name
    labels = zipfile.ZipInfo("labels.txt", date_time=(2020, 1, 1, 0, 0, 0))
    path = tmp_path_factory.mktemp("float-md") / "digits_float.tflite"
    path.write_bytes(md.write_metadata(flatbuffer, document, [(labels, b"zero\none\ntwo\n")]))
    return path


def test_float_metadata_survives_and_describes_the_int8_model(float_with_metadata: Path, tmp_path: Path,
                                                              official: ModuleType) -> None:
    from datagen.bundled import load_digits
    from edgeq.harness.accuracy import predict
    from edgeq.harness.backends import open_session, parse_backend
    from edgeq.preprocess import apply_preprocessing

    out = tmp_path / "digits_int8.tflite"
    artifact = edgeq.convert(float_with_metadata, out, calib="digits:train", limit=64)  # no preprocessing given
    assert artifact.preprocessing == PP  # the float model's own metadata was honoured
    data = out.read_bytes()
    theirs = official_metadata(official, data)
    assert (theirs.name, theirs.author, theirs.version) == (b"digits classifier", b"someone", b"v3")
    image = theirs.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.name == b"image" and image.description == b"float image"  # kept field by field
    assert list(image.processUnits[0].options.mean) == [127.5] and list(image.processUnits[0].options.std) == [127.5]
    kind, scale, zero = _input_quantization(data)
    assert kind == "INT8"
    # the float stats ([-1, 1]) became the int8 tensor's: the same values under its scale and zero point
    assert list(image.stats.min) == [np.clip(np.rint(-1.0 / scale) + zero, -128, 127)]
    assert list(image.stats.max) == [np.clip(np.rint(1.0 / scale) + zero, -128, 127)]
    output = theirs.subgraphMetadata[0].outputTensorMetadata[0]
    assert output.associatedFiles[0].name == b"labels.txt"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # the packed label file came along
        assert archive.read("labels.txt") == b"zero\none\ntwo\n"
    # fed the way a metadata reader feeds it -- (x - mean) / std, then the input's scale and zero point --
    # the INT8 model predicts like the float model
    x = apply_preprocessing(PP, load_digits("test").images[:120])
    cpu = parse_backend("cpu")
    float_top = predict(open_session(float_with_metadata.read_bytes(), cpu), x).argmax(-1)
    int8_top = predict(open_session(data, cpu), x).argmax(-1)
    assert np.mean(float_top == int8_top) >= 0.9
    # re-converting the INT8 model's own metadata is stable (no drift in what it says)
    assert md.model_preprocessing(data) == PP


def test_convert_warns_when_preprocess_disagrees_with_float_metadata(float_with_metadata: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    with pytest.warns(PreprocessingWarning, match="differs from the float model's metadata"):
        edgeq.convert(float_with_metadata, out, calib="digits:train", limit=8, preprocessing=RAW)
    assert md.model_preprocessing(out.read_bytes()) == RAW  # the metadata says what calibration used


def test_coverage_uses_the_float_model_metadata(float_with_metadata: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["coverage", str(float_with_metadata), "--calib", "digits:train", "--production", "digits:test",
                     "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    document = json.loads(captured.out)
    assert document["preprocessing_source"] == "model-metadata" and document["preprocessing"]["mean"] == [127.5]
    assert "preprocessing: mean=127.5,std=127.5 (from the model's metadata)" in captured.err


def test_validate_uses_the_float_model_metadata(float_with_metadata: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "validation"
    code = cli.main(["validate", str(float_with_metadata), "--calib", "digits:train", "--eval", "digits:test",
                     "--methods", "minmax", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "preprocessing: mean=127.5,std=127.5 (from the model's metadata)" in captured.out
    document = json.loads((out / "report.json").read_text())
    assert document["preprocessing"]["source"] == "model-metadata"
    assert document["validation"]["baseline"]["top1"] > 0.8  # fed as trained (~94 % here; raw pixels: chance)
    assert md.model_preprocessing((out / "int8_minmax.tflite").read_bytes()) == PP


def test_bgr_order_travels_in_edgeq_custom_metadata(tiny_zoo: dict[str, Path], tmp_path: Path,
                                                    official: ModuleType) -> None:
    bgr = Preprocessing(mean=(127.5,), std=(127.5,), channel_order=ChannelOrder.BGR)
    out = tmp_path / "bgr.tflite"
    edgeq.convert(tiny_zoo["cnn"], out, calib="digits:train", limit=8, preprocessing=bgr)
    assert md.model_preprocessing(out.read_bytes()) == bgr
    theirs = official_metadata(official, out.read_bytes())
    assert theirs.minParserVersion == b"1.5.0"
    assert theirs.subgraphMetadata[0].customMetadata[0].name == md.EDGEQ_CUSTOM_NAME.encode()


def test_a_mediapipe_model_keeps_its_metadata(tmp_path: Path, official: ModuleType) -> None:
    """BlazeFace from the mediapipe wheel: float16 weights (folded before quantizing) and real metadata."""
    from PIL import Image

    from datagen.bundled import load_photos

    source = Path(__file__).parent / "data" / "mediapipe" / "face_detection_short_range.tflite"
    if not source.is_file():
        pytest.skip(f"{source} is not here")
    before = md.read_metadata(source.read_bytes())
    assert before is not None
    for name, photo in load_photos(["skimage/astronaut", "skimage/coffee", "skimage/chelsea"]).items():
        Image.fromarray(photo).save(tmp_path / f"{name.replace('/', '_')}.png")
    out = tmp_path / "face_int8.tflite"
    artifact = edgeq.convert(source, out, calib=tmp_path)  # an image folder, no preprocessing given
    assert artifact.preprocessing == PP and artifact.rewrites.get("fold_float16_dequantize", 0) > 0
    after = md.read_metadata(out.read_bytes())
    assert after is not None
    for key in ("name", "description"):
        assert after[key] == before[key]
    assert after["subgraph_metadata"][0]["output_tensor_metadata"] == before["subgraph_metadata"][0][
        "output_tensor_metadata"]
    kind, scale, zero = _input_quantization(out.read_bytes())
    theirs = official_metadata(official, out.read_bytes()).subgraphMetadata[0].inputTensorMetadata[0]
    assert kind == "INT8" and list(theirs.processUnits[0].options.mean) == [127.5]
    assert list(theirs.stats.min) == [np.clip(np.rint(-1.0 / scale) + zero, -128, 127)]
