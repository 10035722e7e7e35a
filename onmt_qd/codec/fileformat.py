"""The compressed model file ("QDZ", docs/formats.md "The compressed file").

Layout, all integers little-endian:

    b"ONMTQDZ\\0" | uint32 format version | uint64 header length | uint64 payload length
    | JSON header (UTF-8) | payload | SHA-256 of everything before it (32 bytes)

The JSON header holds the caller's ``meta`` (model options, vocabularies, policy), the
coder and pooling used, and an index of every tensor: shape, dtype or quantization
fields, and {offset, length} of each of its arrays in the payload. Arrays are raw
little-endian bytes; level indices are entropy-coded streams.

Reading runs no code from the file (JSON and numpy.frombuffer only, no pickle), checks
the checksum before decoding anything and validates every header field, so a corrupted
or hostile file gives a one-line CompressedFileError rather than a decoder traceback.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch

from onmt_qd.codec.entropy import Coder, get_coder
from onmt_qd.codec.levelcoding import EncodedLevels, encode_levels
from onmt_qd.codec.sizereport import SizeReport, build_size_report
from onmt_qd.fileio import atomic_output
from onmt_qd.quant.quantizer import (
    QuantizedFields, QuantizedTensor, validate_bits, validate_bucket_size)

MAGIC = b"ONMTQDZ\0"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<8sIQQ")  # magic, format version, header length, payload length
CHECKSUM_BYTES = hashlib.sha256().digest_size
FRAMING_BYTES = PREFIX.size + CHECKSUM_BYTES

# dtype name in the header -> (torch dtype, little-endian numpy dtype of its bytes)
PLAIN_DTYPES = {
    "float32": (torch.float32, "<f4"), "float64": (torch.float64, "<f8"),
    "float16": (torch.float16, "<f2"), "bfloat16": (torch.bfloat16, "<i2"),
    "int64": (torch.int64, "<i8"), "int32": (torch.int32, "<i4"),
    "int16": (torch.int16, "<i2"), "int8": (torch.int8, "i1"),
    "uint8": (torch.uint8, "u1"), "bool": (torch.bool, "?"),
}
DTYPE_NAMES = {torch_dtype: name for name, (torch_dtype, _) in PLAIN_DTYPES.items()}

# The parsed JSON header and its entries: JSON values, each checked where it is read.
Json = dict[str, Any]
FieldType = TypeVar("FieldType")


class CompressedFileError(ValueError):
    """A file that is not a readable compressed model; the message is one line."""


class _InvalidHeader(ValueError):
    """A header field is missing or inconsistent (read_compressed adds the path)."""


# --- writing -------------------------------------------------------------------------


def tensor_bytes(tensor: torch.Tensor) -> tuple[str, bytes]:
    """(dtype name, raw little-endian bytes) of a CPU copy of ``tensor``."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype not in DTYPE_NAMES:
        raise ValueError(f"cannot store tensors of dtype {tensor.dtype}")
    name = DTYPE_NAMES[tensor.dtype]
    numpy_dtype = PLAIN_DTYPES[name][1]
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: store its bits
        tensor = tensor.view(torch.int16)
    return name, tensor.numpy().astype(numpy_dtype, copy=False).tobytes()


def tensor_from_bytes(data: bytes, dtype_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    torch_dtype, numpy_dtype = PLAIN_DTYPES[dtype_name]
    array = np.frombuffer(data, dtype=numpy_dtype)
    tensor = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    return tensor.view(torch_dtype).reshape(shape)


class _Payload:
    """Accumulates the binary payload; ``add`` returns the index entry of one array."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> dict[str, int]:
        entry = {"offset": self.size, "length": len(data)}
        self.chunks.append(data)
        self.size += len(data)
        return entry


def _float32_bytes(tensor: torch.Tensor, what: str) -> bytes:
    if tensor.dtype != torch.float32:
        raise ValueError(f"{what} must be float32, got {tensor.dtype}")
    return tensor_bytes(tensor)[1]


def _checked_levels(name: str, qt: QuantizedFields) -> np.ndarray:
    """The levels as a flat uint8 array, after the checks a reader will make."""
    validate_bits(qt.bits)
    validate_bucket_size(qt.bucket_size)
    numel = math.prod(qt.shape)
    if numel == 0:
        raise ValueError(f"{name}: a quantized tensor cannot be empty")
    if qt.levels.dtype != torch.uint8 or qt.levels.numel() != numel:
        raise ValueError(f"{name}: levels must be {numel} uint8 values")
    if qt.alpha.numel() != -(-numel // qt.bucket_size) or qt.beta.numel() != qt.alpha.numel():
        raise ValueError(f"{name}: need one alpha and one beta per bucket of {qt.bucket_size}")
    levels = qt.levels.detach().cpu().reshape(-1).numpy()
    if not 1 <= qt.points.numel() <= 2 ** qt.bits or levels.max() >= qt.points.numel():
        raise ValueError(f"{name}: levels must index at most 2**bits points")
    return levels


def _table_bytes(table: np.ndarray, coder: Coder) -> bytes:
    return np.asarray(table).astype(coder.table_dtype, copy=False).tobytes()


def _quantized_entry(name: str, qt: QuantizedFields, encoded: EncodedLevels, coder: Coder,
                     payload: _Payload) -> Json:
    entry: Json = {"shape": [int(d) for d in qt.shape], "bits": int(qt.bits),
             "bucket_size": int(qt.bucket_size)}
    for field in ("alpha", "beta", "points"):
        entry[field] = payload.add(_float32_bytes(getattr(qt, field), f"{name}.{field}"))
    if encoded.shared_table is None:
        entry["table"] = payload.add(_table_bytes(encoded.tables[name], coder))
    entry["levels"] = payload.add(encoded.data[name])
    return entry


def _plain_entry(tensor: torch.Tensor, payload: _Payload) -> Json:
    dtype_name, data = tensor_bytes(tensor)
    return {"dtype": dtype_name, "shape": list(tensor.shape), "data": payload.add(data)}


def write_compressed(path: str | os.PathLike[str], meta: Json,
                     quantized: Mapping[str, QuantizedFields], plain: Mapping[str, torch.Tensor],
                     coder: str = "huffman", pooling: str = "auto") -> SizeReport:
    """Write the compressed file atomically and return its SizeReport.

    ``meta``: JSON-serializable dict; ``quantized``: name -> QuantizedTensor (or any
    object with its fields); ``plain``: name -> tensor stored as is; ``coder``:
    "huffman" or "ans"; ``pooling``: "per_tensor", "pooled" or "auto" (the smaller)."""
    if not isinstance(meta, dict):
        raise ValueError("meta must be a dict")
    entropy_coder = get_coder(coder)
    levels = {name: _checked_levels(name, qt) for name, qt in quantized.items()}
    n_points = {name: qt.points.numel() for name, qt in quantized.items()}
    encoded = encode_levels(levels, n_points, entropy_coder, pooling)
    payload = _Payload()
    shared_table = (None if encoded.shared_table is None
                    else payload.add(_table_bytes(encoded.shared_table, entropy_coder)))
    header = {
        "meta": meta, "coder": entropy_coder.name, "pooling": encoded.pooling,
        "shared_table": shared_table,
        "quantized": {name: _quantized_entry(name, qt, encoded, entropy_coder, payload)
                      for name, qt in quantized.items()},
        "plain": {name: _plain_entry(tensor, payload) for name, tensor in plain.items()},
    }
    header_json = json.dumps(header, ensure_ascii=False, allow_nan=False,
                             separators=(",", ":")).encode("utf-8")
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_json), payload.size)
    write_atomic(path, [prefix, header_json, *payload.chunks])
    size = FRAMING_BYTES + len(header_json) + payload.size  # what was written, even to a pipe
    return build_size_report(quantized, encoded, entropy_coder, plain, len(header_json),
                             FRAMING_BYTES, size)


def write_atomic(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> None:
    """Write the chunks plus their SHA-256 atomically (onmt_qd.fileio.atomic_output):
    a crash leaves either the old file or the new one, never half of one."""
    with atomic_output(path) as temporary, open(temporary, "wb") as f:
        digest = hashlib.sha256()
        for chunk in chunks:
            f.write(chunk)
            digest.update(chunk)
        f.write(digest.digest())


# --- reading -------------------------------------------------------------------------


def is_compressed_file(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_compressed(path: str | os.PathLike[str]) -> tuple[
        Json, dict[str, QuantizedTensor], dict[str, torch.Tensor]]:
    """(meta, name -> QuantizedTensor, name -> tensor), bit-identical to what was
    written, on the CPU. Raises CompressedFileError for anything but a sound file."""
    header, payload = _verified_sections(path, _read_bytes(path))
    try:
        return _decode(header, payload)
    except _InvalidHeader as exc:
        raise CompressedFileError(f"{path}: {exc}") from None
    except Exception as exc:  # a decoder choking on data the checks could not catch
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CompressedFileError(
            f"{path} is corrupted: cannot decode it ({detail})") from None


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CompressedFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _verified_sections(path: str | os.PathLike[str], blob: bytes) -> tuple[Json, bytes]:
    """(parsed JSON header, payload bytes) once magic, version, lengths and checksum
    are right."""
    if not blob.startswith(MAGIC):
        if blob and MAGIC.startswith(blob):
            raise CompressedFileError(f"{path} is truncated: {len(blob)} bytes")
        raise CompressedFileError(f"{path} is not an onmt_qd compressed model file")
    if len(blob) < PREFIX.size:
        raise CompressedFileError(f"{path} is truncated: {len(blob)} bytes")
    _, version, header_length, payload_length = PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise CompressedFileError(
            f"{path} has format version {version}, this onmt_qd reads version "
            f"{FORMAT_VERSION}" + (": upgrade onmt_qd" if version > FORMAT_VERSION else ""))
    expected = FRAMING_BYTES + header_length + payload_length
    body = memoryview(blob)[:-CHECKSUM_BYTES]
    intact = len(blob) >= FRAMING_BYTES and hashlib.sha256(body).digest() == blob[-CHECKSUM_BYTES:]
    if len(blob) != expected:
        # the checksum tells a truncated copy from a damaged length field
        raise CompressedFileError(
            f"{path} is inconsistent: {len(blob)} bytes where its header declares "
            f"{expected}, though its checksum matches" if intact else
            f"{path} is truncated or corrupted: {len(blob)} bytes where its header "
            f"declares {expected}, and its SHA-256 checksum does not match")
    if not intact:
        raise CompressedFileError(f"{path} is corrupted: its SHA-256 checksum does not match")
    header_end = PREFIX.size + header_length
    try:
        header = json.loads(bytes(body[PREFIX.size:header_end]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CompressedFileError(f"{path} has an unreadable header: "
                                  f"{type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise CompressedFileError(f"{path} has an unreadable header: not a JSON object")
    return header, bytes(body[header_end:])


def _field(entry: object, key: str, kind: type[FieldType], where: str) -> FieldType:
    if not isinstance(entry, dict) or key not in entry:
        raise _InvalidHeader(f"missing field '{key}' in {where}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _InvalidHeader(f"field '{key}' in {where} has the wrong type")
    return value


def _count(entry: object, key: str, where: str) -> int:
    value = _field(entry, key, int, where)
    if value < 0:
        raise _InvalidHeader(f"field '{key}' in {where} is {value}, out of range")
    return value


def _checked(entry: Json, key: str, where: str, rule: Callable[[int], None]) -> int:
    """``entry[key]`` under the rule the writer applied (``validate_bits``, ...)."""
    value = _field(entry, key, int, where)
    try:
        rule(value)
    except ValueError as exc:
        raise _InvalidHeader(f"field '{key}' in {where}: {exc}") from None
    return value


def _shape(entry: Json, where: str) -> tuple[int, ...]:
    shape = _field(entry, "shape", list, where)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _InvalidHeader(f"field 'shape' in {where} is not a list of sizes")
    return tuple(shape)


def _segment(payload: bytes, entry: Json, key: str, where: str,
             length: int | None = None) -> bytes:
    """The payload bytes ``entry[key]`` points to, checked against the payload bounds
    and, when given, the length the other fields imply."""
    spec = _field(entry, key, dict, where)
    offset = _count(spec, "offset", f"{where}.{key}")
    size = _count(spec, "length", f"{where}.{key}")
    if offset + size > len(payload):
        raise _InvalidHeader(f"{where}.{key} lies past the end of the payload")
    if length is not None and size != length:
        raise _InvalidHeader(f"{where}.{key} has {size} bytes, its shape implies {length}")
    return payload[offset:offset + size]


def _float32_array(payload: bytes, entry: Json, key: str, where: str,
                   n: int | None = None) -> torch.Tensor:
    data = _segment(payload, entry, key, where, None if n is None else 4 * n)
    if len(data) % 4:
        raise _InvalidHeader(f"{where}.{key} is not a whole number of float32 values")
    return tensor_from_bytes(data, "float32", (-1,))


def _table(payload: bytes, entry: Json, key: str, coder: Coder, where: str) -> np.ndarray:
    data = _segment(payload, entry, key, where)
    if len(data) % np.dtype(coder.table_dtype).itemsize:
        raise _InvalidHeader(f"{where}.{key} is not a whole {coder.name} table")
    return np.frombuffer(data, dtype=coder.table_dtype)


def _decode_quantized(name: str, entry: Json, payload: bytes, coder: Coder,
                      shared_table: np.ndarray | None) -> QuantizedTensor:
    where = f"quantized tensor '{name}'"
    shape = _shape(entry, where)
    bits = _checked(entry, "bits", where, validate_bits)
    bucket_size = _checked(entry, "bucket_size", where, validate_bucket_size)
    numel = math.prod(shape)
    if numel == 0:
        raise _InvalidHeader(f"{where} is empty")
    n_buckets = -(-numel // bucket_size)
    alpha = _float32_array(payload, entry, "alpha", where, n_buckets)
    beta = _float32_array(payload, entry, "beta", where, n_buckets)
    points = _float32_array(payload, entry, "points", where)
    if not 1 <= points.numel() <= 2 ** bits:
        raise _InvalidHeader(f"{where} has {points.numel()} points, {bits} bits allow "
                             f"1 to {2 ** bits}")
    table = shared_table if shared_table is not None else _table(
        payload, entry, "table", coder, where)
    levels = coder.decode(_segment(payload, entry, "levels", where), table, numel)
    if levels.max() >= points.numel():
        raise _InvalidHeader(f"{where} has levels beyond its {points.numel()} points")
    return QuantizedTensor(levels=torch.from_numpy(levels), alpha=alpha, beta=beta,
                           points=points, shape=shape, bucket_size=bucket_size, bits=bits)


def _decode_plain(name: str, entry: Json, payload: bytes) -> torch.Tensor:
    where = f"plain tensor '{name}'"
    dtype_name = _field(entry, "dtype", str, where)
    if dtype_name not in PLAIN_DTYPES:
        raise _InvalidHeader(f"{where} has unknown dtype {dtype_name!r}")
    shape = _shape(entry, where)
    itemsize = np.dtype(PLAIN_DTYPES[dtype_name][1]).itemsize
    data = _segment(payload, entry, "data", where, math.prod(shape) * itemsize)
    return tensor_from_bytes(data, dtype_name, shape)


def _decode(header: Json, payload: bytes) -> tuple[
        Json, dict[str, QuantizedTensor], dict[str, torch.Tensor]]:
    meta = _field(header, "meta", dict, "the header")
    coder_name = _field(header, "coder", str, "the header")
    try:
        coder = get_coder(coder_name)
    except ValueError:
        raise _InvalidHeader(f"unknown entropy coder {coder_name!r}") from None
    pooling = _field(header, "pooling", str, "the header")
    if pooling not in ("per_tensor", "pooled"):
        raise _InvalidHeader(f"unknown table pooling {pooling!r}")
    shared_table = (_table(payload, header, "shared_table", coder, "the header")
                    if pooling == "pooled" else None)
    quantized = {name: _decode_quantized(name, entry, payload, coder, shared_table)
                 for name, entry in _field(header, "quantized", dict, "the header").items()}
    plain = {name: _decode_plain(name, entry, payload)
             for name, entry in _field(header, "plain", dict, "the header").items()}
    return meta, quantized, plain
