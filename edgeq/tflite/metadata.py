"""TFLite Metadata: the ``TFLITE_METADATA`` buffer that MediaPipe Tasks, the TFLite Task Library and
Android Studio's ML model binding read (input normalization, image properties, labels, ...).

The layout follows ``metadata_schema.fbs`` (schema 1.5.0, file identifier ``M001``) from
tensorflow/tflite-support, also shipped by MediaPipe. The schema is written down below as a table of
fields in field-id order, and one small generic codec turns a ModelMetadata flatbuffer into plain
dicts and back, so metadata a float model already carries survives conversion field by field.
``tflite-support`` itself cannot be installed next to TensorFlow 2.21 (it pins protobuf < 4); the
tests read what this module writes with the generated reader that ships in its wheel.

How a model's buffer is found: ``Model.metadata`` has an entry named ``TFLITE_METADATA`` whose
``buffer`` indexes ``Model.buffers``; that buffer holds the ModelMetadata flatbuffer. Associated files
(label lists, ...) live in a zip archive appended to the ``.tflite`` file; they are carried over too.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from edgeq.artifacts import ChannelOrder, Interpolation, Preprocessing
from edgeq.errors import InputError
from edgeq.tflite import model as tfl

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
SCHEMA_VERSION = "1.5.0"
#: Custom metadata (schema 1.5.0) with edgeq's full preprocessing spec, written only when the standard
#: fields cannot say it all (BGR channel order, a resize to another size than the input's).
EDGEQ_CUSTOM_NAME = "EDGEQ_PREPROCESSING"

COLOR_SPACE = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # string, strings, byte, uint, int, float, floats, uints, ubytes, table, tables, union
    ref: str | tuple[str, ...] = ""  # table name, or a union's member tables (type index 1, 2, ...)


def _f(name: str, kind: str, ref: str | tuple[str, ...] = "") -> Field:
    return Field(name, kind, ref)


# metadata_schema.fbs 1.5.0, fields in declaration (= field id) order. A union takes two ids: its type
# byte, then the table. Enums are bytes.
SCHEMA: dict[str, tuple[Field, ...]] = {
    "AssociatedFile": (_f("name", "string"), _f("description", "string"), _f("type", "byte"),
                       _f("locale", "string"), _f("version", "string")),
    "FeatureProperties": (),
    "ImageSize": (_f("width", "uint"), _f("height", "uint")),
    "ImageProperties": (_f("color_space", "byte"), _f("default_size", "table", "ImageSize")),
    "AudioProperties": (_f("sample_rate", "uint"), _f("channels", "uint")),
    "BoundingBoxProperties": (_f("index", "uints"), _f("type", "byte"), _f("coordinate_type", "byte")),
    "ValueRange": (_f("min", "int"), _f("max", "int")),
    "Content": (_f("content_properties", "union",
                   ("FeatureProperties", "ImageProperties", "BoundingBoxProperties", "AudioProperties")),
                _f("range", "table", "ValueRange")),
    "NormalizationOptions": (_f("mean", "floats"), _f("std", "floats")),
    "ScoreCalibrationOptions": (_f("score_transformation", "byte"), _f("default_score", "float")),
    "ScoreThresholdingOptions": (_f("global_score_threshold", "float"),),
    "BertTokenizerOptions": (_f("vocab_file", "tables", "AssociatedFile"),),
    "SentencePieceTokenizerOptions": (_f("sentencePiece_model", "tables", "AssociatedFile"),
                                      _f("vocab_file", "tables", "AssociatedFile")),
    "RegexTokenizerOptions": (_f("delim_regex_pattern", "string"), _f("vocab_file", "tables", "AssociatedFile")),
    "ProcessUnit": (_f("options", "union",
                       ("NormalizationOptions", "ScoreCalibrationOptions", "ScoreThresholdingOptions",
                        "BertTokenizerOptions", "SentencePieceTokenizerOptions", "RegexTokenizerOptions")),),
    "Stats": (_f("max", "floats"), _f("min", "floats")),
    "TensorGroup": (_f("name", "string"), _f("tensor_names", "strings")),
    "TensorMetadata": (_f("name", "string"), _f("description", "string"), _f("dimension_names", "strings"),
                       _f("content", "table", "Content"), _f("process_units", "tables", "ProcessUnit"),
                       _f("stats", "table", "Stats"), _f("associated_files", "tables", "AssociatedFile")),
    "CustomMetadata": (_f("name", "string"), _f("data", "ubytes")),
    "SubGraphMetadata": (_f("name", "string"), _f("description", "string"),
                         _f("input_tensor_metadata", "tables", "TensorMetadata"),
                         _f("output_tensor_metadata", "tables", "TensorMetadata"),
                         _f("associated_files", "tables", "AssociatedFile"),
                         _f("input_process_units", "tables", "ProcessUnit"),
                         _f("output_process_units", "tables", "ProcessUnit"),
                         _f("input_tensor_groups", "tables", "TensorGroup"),
                         _f("output_tensor_groups", "tables", "TensorGroup"),
                         _f("custom_metadata", "tables", "CustomMetadata")),
    "ModelMetadata": (_f("name", "string"), _f("description", "string"), _f("version", "string"),
                      _f("subgraph_metadata", "tables", "SubGraphMetadata"), _f("author", "string"),
                      _f("license", "string"), _f("associated_files", "tables", "AssociatedFile"),
                      _f("min_parser_version", "string")),
}

_SCALARS = {  # kind -> (flags, struct size, builder method)
    "byte": (number_types.Int8Flags, 1, "Int8"), "uint": (number_types.Uint32Flags, 4, "Uint32"),
    "int": (number_types.Int32Flags, 4, "Int32"), "float": (number_types.Float32Flags, 4, "Float32"),
}
_VECTORS = {"floats": (number_types.Float32Flags, 4, "Float32", 4), "uints": (number_types.Uint32Flags, 4, "Uint32", 4),
            "ubytes": (number_types.Uint8Flags, 1, "Uint8", 16)}  # CustomMetadata.data is force_align: 16


def _ids(table: str) -> list[tuple[int, Field]]:
    """(field id, field) pairs: a union uses its id for the type byte and the next for the value."""
    out, next_id = [], 0
    for f in SCHEMA[table]:
        out.append((next_id, f))
        next_id += 2 if f.kind == "union" else 1
    return out


def _slot_count(table: str) -> int:
    return sum(2 if f.kind == "union" else 1 for f in SCHEMA[table])


# ---- decoding ------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = bytearray(buf)

    def _vector(self, tab: Table, o: int, size: int) -> tuple[int, int]:
        start, n = tab.Vector(o), tab.VectorLen(o)
        if n < 0 or start + n * size > len(self.buf):
            raise ValueError("vector out of bounds")
        return start, n

    def table(self, name: str, pos: int) -> dict[str, Any]:
        if not 0 <= pos < len(self.buf):
            raise ValueError("table out of bounds")
        tab = Table(self.buf, pos)
        out: dict[str, Any] = {}
        for fid, f in _ids(name):
            o = tab.Offset(4 + 2 * fid)
            if f.kind == "union":
                member = tab.Get(number_types.Uint8Flags, o + tab.Pos) if o else 0
                o_value = tab.Offset(4 + 2 * (fid + 1))
                if member and o_value:
                    members = f.ref
                    if not 1 <= member <= len(members):
                        raise ValueError(f"unknown {f.name} member {member}")
                    table_name = members[member - 1]
                    out[f.name] = {table_name: self.table(table_name, tab.Indirect(o_value + tab.Pos))}
                continue
            if not o:
                continue
            if f.kind in _SCALARS:
                out[f.name] = tab.Get(_SCALARS[f.kind][0], o + tab.Pos)
            elif f.kind == "string":
                out[f.name] = tab.String(o + tab.Pos).decode("utf-8", errors="replace")
            elif f.kind == "table":
                out[f.name] = self.table(str(f.ref), tab.Indirect(o + tab.Pos))
            elif f.kind == "strings":
                start, n = self._vector(tab, o, 4)
                out[f.name] = [tab.String(start + 4 * i).decode("utf-8", errors="replace") for i in range(n)]
            elif f.kind == "tables":
                start, n = self._vector(tab, o, 4)
                out[f.name] = [self.table(str(f.ref), tab.Indirect(start + 4 * i)) for i in range(n)]
            else:
                flags, size, _, _ = _VECTORS[f.kind]
                start, n = self._vector(tab, o, size)
                out[f.name] = [tab.Get(flags, start + size * i) for i in range(n)]
        return out


def decode(buf: bytes) -> dict[str, Any]:
    """A ModelMetadata flatbuffer as nested dicts (absent fields left out; a union is {member: table})."""
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise InputError(f"the {METADATA_NAME} buffer is not a ModelMetadata flatbuffer (no 'M001' identifier)")
    try:
        reader = _Reader(buf)
        return reader.table("ModelMetadata", encode.Get(packer.uoffset, reader.buf, 0))
    except Exception as exc:  # the reader raises anything from struct.error to IndexError on damaged bytes
        raise InputError(f"the model's {METADATA_NAME} is damaged ({type(exc).__name__})") from None


# ---- encoding ------------------------------------------------------------------------------------


def _encode_table(b: flatbuffers.Builder, name: str, value: dict[str, Any]) -> int:
    known = {f.name for f in SCHEMA[name]}
    unknown = set(value) - known
    if unknown:
        raise ValueError(f"{name} has no field(s) {sorted(unknown)}")
    offsets: dict[str, int] = {}
    unions: dict[str, int] = {}
    for _, f in _ids(name):
        if f.name not in value or value[f.name] is None:
            continue
        v = value[f.name]
        if f.kind == "string":
            offsets[f.name] = b.CreateString(str(v))
        elif f.kind == "table":
            offsets[f.name] = _encode_table(b, str(f.ref), v)
        elif f.kind == "union":
            (member, table_value), = v.items()
            unions[f.name] = f.ref.index(member) + 1
            offsets[f.name] = _encode_table(b, member, table_value)
        elif f.kind in ("strings", "tables"):
            items = [b.CreateString(str(s)) for s in v] if f.kind == "strings" else \
                [_encode_table(b, str(f.ref), t) for t in v]
            b.StartVector(4, len(items), 4)
            for item in reversed(items):
                b.PrependUOffsetTRelative(item)
            offsets[f.name] = b.EndVector()
        elif f.kind in _VECTORS:
            _, size, method, alignment = _VECTORS[f.kind]
            b.StartVector(size, len(v), alignment)
            for x in reversed(list(v)):
                getattr(b, f"Prepend{method}")(x)
            offsets[f.name] = b.EndVector()
    b.StartObject(_slot_count(name))
    for fid, f in _ids(name):
        if f.name not in value or value[f.name] is None:
            continue
        if f.kind in _SCALARS:
            method = _SCALARS[f.kind][2]
            default = 0.0 if f.kind == "float" else 0
            getattr(b, f"Prepend{method}Slot")(fid, value[f.name], default)
        elif f.kind == "union":
            b.PrependUint8Slot(fid, unions[f.name], 0)
            b.PrependUOffsetTRelativeSlot(fid + 1, offsets[f.name], 0)
        else:
            b.PrependUOffsetTRelativeSlot(fid, offsets[f.name], 0)
    return b.EndObject()


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """Nested dicts (as :func:`decode` gives them) -> a ModelMetadata flatbuffer with identifier M001."""
    b = flatbuffers.Builder(1024)
    b.Finish(_encode_table(b, "ModelMetadata", metadata), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# ---- the model's buffer --------------------------------------------------------------------------


def _name(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _metadata_entry(parsed: Any) -> Any | None:
    for entry in parsed.metadata or []:
        if _name(entry.name) == METADATA_NAME:
            return entry
    return None


def metadata_bytes(model: bytes, parsed: Any | None = None) -> bytes | None:
    """The raw ModelMetadata flatbuffer of a .tflite model, or None when it carries none."""
    parsed = parsed if parsed is not None else tfl.parse(model)
    entry = _metadata_entry(parsed)
    if entry is None or not 0 <= entry.buffer < len(parsed.buffers or []):
        return None
    buffer = parsed.buffers[entry.buffer]
    if buffer.data is not None and len(buffer.data) > 0:
        return np.asarray(buffer.data, dtype=np.uint8).tobytes()
    offset, size = int(getattr(buffer, "offset", 0) or 0), int(getattr(buffer, "size", 0) or 0)
    if offset > 1 and size > 0 and offset + size <= len(model):  # buffers stored past the flatbuffer (> 2 GB)
        return bytes(model[offset:offset + size])
    return None


def read_metadata(model: bytes, parsed: Any | None = None) -> dict[str, Any] | None:
    """The model's ModelMetadata as nested dicts, or None when it has no TFLITE_METADATA."""
    raw = metadata_bytes(model, parsed)
    return None if raw is None else decode(raw)


def _associated_archive(model: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    """Files of the zip archive appended to a .tflite (associated files: labels, vocabularies)."""
    if not model or b"PK\x05\x06" not in model[-65558:]:
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return [(info, archive.read(info)) for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return []


def write_metadata(model: bytes, metadata: dict[str, Any],
                   associated: list[tuple[zipfile.ZipInfo, bytes]] | None = None) -> bytes:
    """``model`` with its TFLITE_METADATA buffer set to ``metadata`` (added when absent).

    The zip of associated files is kept: the one already appended to ``model``, or ``associated``.
    """
    files = _associated_archive(model) if associated is None else associated
    parsed = tfl.parse(model)
    buffer = tfl.schema().BufferT()
    buffer.data = np.frombuffer(encode_metadata(metadata), dtype=np.uint8)
    entry = _metadata_entry(parsed)
    parsed.buffers = list(parsed.buffers or [])
    if entry is not None and 0 <= entry.buffer < len(parsed.buffers):
        parsed.buffers[entry.buffer] = buffer
    else:
        parsed.buffers.append(buffer)
        new = tfl.schema().MetadataT()
        new.name = METADATA_NAME
        new.buffer = len(parsed.buffers) - 1
        if entry is not None:  # an entry pointing nowhere: repoint it
            entry.buffer = new.buffer
        else:
            parsed.metadata = [*(parsed.metadata or []), new]
    out = tfl.serialize(parsed)
    if not files:
        return out
    sink = io.BytesIO(out)
    sink.seek(0, io.SEEK_END)
    with zipfile.ZipFile(sink, "a") as archive:  # a non-zip file gets an archive appended, as tflite-support does
        for info, data in files:
            archive.writestr(info, data)
    return sink.getvalue()


# ---- preprocessing <-> NormalizationOptions -------------------------------------------------------


@dataclass(frozen=True)
class InputTensor:
    """What the metadata of one model input needs from the model itself."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # TensorType name: FLOAT32, INT8, UINT8, ...
    scale: float = 0.0
    zero_point: int = 0

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 4 and self.shape[-1] in (1, 3, 4)


def model_tensors(parsed: Any, which: str = "inputs") -> list[InputTensor]:
    graph = parsed.subgraphs[0]
    found = []
    for index in getattr(graph, which):
        tensor = graph.tensors[int(index)]
        q = tensor.quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
        zero = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
        shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
        found.append(InputTensor(tfl.tensor_name(tensor), shape, tfl.tensor_type_name(tensor.type), scale, zero))
    return found


def _normalization(tensor_md: dict[str, Any]) -> dict[str, Any] | None:
    for unit in tensor_md.get("process_units", []):
        options = unit.get("options") or {}
        if "NormalizationOptions" in options:
            return options["NormalizationOptions"]
    return None


def _custom_spec(subgraph: dict[str, Any]) -> dict[str, Any] | None:
    for entry in subgraph.get("custom_metadata", []):
        if entry.get("name") == EDGEQ_CUSTOM_NAME:
            try:
                document = json.loads(bytes(entry.get("data", [])).decode())
            except (ValueError, UnicodeError):
                return None
            return document if isinstance(document, dict) else None
    return None


def preprocessing_from_metadata(metadata: dict[str, Any], input_index: int = 0) -> Preprocessing | None:
    """The preprocessing input ``input_index`` asks for: its NormalizationOptions (mean, std), plus channel
    order, interpolation and resize size from edgeq's custom entry when present. None: the metadata
    describes no normalization for that input."""
    subgraphs = metadata.get("subgraph_metadata") or []
    if not subgraphs:
        return None
    inputs = subgraphs[0].get("input_tensor_metadata") or []
    if not 0 <= input_index < len(inputs):
        return None
    options = _normalization(inputs[input_index])
    if options is None or not options.get("mean") or not options.get("std"):
        return None
    fields: dict[str, Any] = {"mean": tuple(float(v) for v in options["mean"]),
                              "std": tuple(float(v) for v in options["std"])}
    custom = _custom_spec(subgraphs[0])
    if custom:
        try:
            if custom.get("channel_order"):
                fields["channel_order"] = ChannelOrder(custom["channel_order"])
            if custom.get("interpolation"):
                fields["interpolation"] = Interpolation(custom["interpolation"])
            if custom.get("size"):
                fields["size"] = (int(custom["size"][0]), int(custom["size"][1]))
        except (ValueError, TypeError, IndexError, KeyError):
            pass
    return Preprocessing(**fields)


def model_preprocessing(model: bytes) -> Preprocessing | None:
    """The preprocessing a .tflite model's own metadata asks for (first input), or None."""
    metadata = read_metadata(model)
    return None if metadata is None else preprocessing_from_metadata(metadata)


def _broadcast(values: tuple[float, ...], n: int) -> list[float]:
    return list(values) * n if len(values) == 1 else list(values)


def input_stats(preprocessing: Preprocessing, tensor: InputTensor) -> dict[str, list[float]]:
    """Per-channel min/max of the tensor's own values for 0..255 pixels: normalized floats for a float
    input, the quantized integers (scale, zero point, clipped to the type) for an int8/uint8 input."""
    n = max(len(preprocessing.mean), len(preprocessing.std))
    mean, std = _broadcast(preprocessing.mean, n), _broadcast(preprocessing.std, n)
    lows, highs = [], []
    for m, s in zip(mean, std, strict=True):
        a, b = (0.0 - m) / s, (255.0 - m) / s
        lo, hi = min(a, b), max(a, b)
        if tensor.dtype in ("INT8", "UINT8", "INT16") and tensor.scale > 0:
            limits = np.iinfo({"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16}[tensor.dtype])
            lo = float(np.clip(np.rint(lo / tensor.scale) + tensor.zero_point, limits.min, limits.max))
            hi = float(np.clip(np.rint(hi / tensor.scale) + tensor.zero_point, limits.min, limits.max))
        lows.append(float(np.float32(lo)))
        highs.append(float(np.float32(hi)))
    return {"max": highs, "min": lows}


def _needs_custom(preprocessing: Preprocessing, inputs: list[InputTensor]) -> bool:
    """BGR order, or a resize to other than the input's own size (then its interpolation matters too)."""
    sizes = {t.shape[1:3] for t in inputs if t.is_image}
    resizes = preprocessing.size is not None and tuple(preprocessing.size) not in sizes
    return preprocessing.channel_order is not ChannelOrder.RGB or resizes


def _describe_input(preprocessing: Preprocessing, tensor: InputTensor) -> str:
    mean = "/".join(f"{v:g}" for v in preprocessing.mean)
    std = "/".join(f"{v:g}" for v in preprocessing.std)
    text = f"Image input: pixels 0..255 normalized as (x - {mean}) / {std}"
    if tensor.dtype in ("INT8", "UINT8") and tensor.scale > 0:
        text += (f", then quantized to {tensor.dtype.lower()} with the tensor's scale {tensor.scale:.8g} "
                 f"and zero point {tensor.zero_point}")
    return text + "."


def _color_space(tensor: InputTensor) -> int:
    return {1: COLOR_SPACE["GRAYSCALE"], 3: COLOR_SPACE["RGB"]}.get(tensor.shape[-1], COLOR_SPACE["UNKNOWN"])


def _set_normalization(tensor_md: dict[str, Any], preprocessing: Preprocessing) -> None:
    unit = {"options": {"NormalizationOptions": {"mean": [float(v) for v in preprocessing.mean],
                                                 "std": [float(v) for v in preprocessing.std]}}}
    units = list(tensor_md.get("process_units", []))
    for i, existing in enumerate(units):
        if "NormalizationOptions" in (existing.get("options") or {}):
            units[i] = unit
            break
    else:
        units.insert(0, unit)
    tensor_md["process_units"] = units


def _version_at_least(current: str | None, needed: str) -> str:
    def key(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in text.split("."))
        except ValueError:
            return (0,)
    return needed if current is None or key(current) < key(needed) else current


def describe_model(metadata: dict[str, Any] | None, preprocessing: Preprocessing | None, inputs: list[InputTensor],
                   outputs: list[InputTensor], name: str) -> dict[str, Any] | None:
    """The metadata the quantized model should carry: ``metadata`` (the float model's, kept field by
    field) refreshed for the quantized inputs, or new metadata when there was none. None: nothing to say."""
    if metadata is None and preprocessing is None:
        return None
    document: dict[str, Any] = json.loads(json.dumps(metadata)) if metadata is not None else {
        "name": name, "description": "Full-integer INT8 model converted by edgeq.", "min_parser_version": "1.0.0"}
    subgraphs = document.setdefault("subgraph_metadata", [])
    if not subgraphs:
        subgraphs.append({})
    subgraph = subgraphs[0]
    tensors_md = subgraph.setdefault("input_tensor_metadata", [])
    fresh = not tensors_md
    if fresh:
        tensors_md.extend({"name": t.name} for t in inputs)
    if not subgraph.get("output_tensor_metadata") and metadata is None:
        subgraph["output_tensor_metadata"] = [
            {"name": t.name, "content": {"content_properties": {"FeatureProperties": {}}}} for t in outputs]
    images = [i for i, t in enumerate(inputs) if t.is_image] or ([0] if len(inputs) == 1 else [])
    for i in images:
        if i >= len(tensors_md):
            continue
        tensor_md, tensor = tensors_md[i], inputs[i]
        if preprocessing is not None:
            _set_normalization(tensor_md, preprocessing)
        options = _normalization(tensor_md)
        if options is None:
            continue
        in_effect = Preprocessing(mean=tuple(options.get("mean") or (0.0,)), std=tuple(options.get("std") or (1.0,)))
        if any(s == 0 for s in in_effect.std):
            continue
        tensor_md["stats"] = input_stats(in_effect, tensor)
        if fresh:
            tensor_md["description"] = _describe_input(in_effect, tensor)
        if "content" not in tensor_md and tensor.is_image:
            height, width = tensor.shape[1], tensor.shape[2]
            tensor_md["content"] = {"content_properties": {"ImageProperties": {
                "color_space": _color_space(tensor), "default_size": {"width": width, "height": height}}}}
    custom = [c for c in subgraph.get("custom_metadata", []) if c.get("name") != EDGEQ_CUSTOM_NAME]
    if preprocessing is not None and _needs_custom(preprocessing, inputs):
        data = json.dumps(preprocessing.to_dict(), sort_keys=True).encode()
        custom.append({"name": EDGEQ_CUSTOM_NAME, "data": list(data)})
        document["min_parser_version"] = _version_at_least(document.get("min_parser_version"), "1.5.0")
    if custom:
        subgraph["custom_metadata"] = custom
    else:
        subgraph.pop("custom_metadata", None)
    return document


def embed_preprocessing(quantized: bytes, source: bytes, preprocessing: Preprocessing | None,
                        source_path: str | Path | None = None) -> bytes:
    """The quantized model with TFLite Metadata that describes *it*: the source's metadata (if any) kept,
    its input NormalizationOptions set to ``preprocessing`` (the one calibration used), the input
    ``stats`` recomputed in the quantized tensor's own values; the source's associated files carried over.

    ``source`` is the float flatbuffer that was quantized; ``source_path`` the original model, whose stem
    names new metadata (not the output's: the same inputs give the same bytes under any output name) and
    which is read when it is a .tflite (float16 folding re-serializes the flatbuffer, dropping the zip).
    """
    name = Path(source_path).stem if source_path is not None and Path(source_path).stem else "model"
    parsed = tfl.parse(quantized)
    original = None
    if source_path is not None and Path(source_path).suffix == ".tflite" and Path(source_path).is_file():
        original = Path(source_path).read_bytes()
    metadata = read_metadata(quantized, parsed)
    for candidate in (source, original):
        if metadata is None and candidate is not None and candidate[4:8] == tfl.FILE_IDENTIFIER:
            metadata = read_metadata(candidate)
    document = describe_model(metadata, preprocessing, model_tensors(parsed, "inputs"),
                              model_tensors(parsed, "outputs"), name)
    if document is None:
        return quantized
    associated = _associated_archive(quantized) or _associated_archive(source) or (
        _associated_archive(original) if original is not None else [])
    return write_metadata(quantized, document, associated)
