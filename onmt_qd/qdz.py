"""Bridge between OpenNMT-py checkpoints and the compressed ``.qdz`` model file (layout:
docs/formats.md): what goes into the file (model options, vocabularies, policy,
quantized and plain tensors) and the checkpoint that comes back out, bit for bit."""
import argparse

from onmt_qd.codec import (CompressedFileError, is_compressed_file, read_compressed,
                           write_compressed)
from onmt_qd.compat import load_checkpoint
from onmt_qd.models import built_buffers, meta_model, named_weights, rebuilt_buffers
from onmt_qd.quant import QuantPolicy
from onmt_qd.quant_checkpoint import attach_quantization, quantization_of


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted(_jsonable(v) for v in value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__set__"}:
            return set(value["__set__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def compress_checkpoint(checkpoint, output, coder="huffman", pooling="auto", source="checkpoint"):
    """Write a quantized checkpoint as a compressed file; returns the size report."""
    policy, quantized = quantization_of(checkpoint, source)
    weights = named_weights(checkpoint)
    rebuilt = rebuilt_buffers(checkpoint)
    plain = {k: v.float() for k, v in weights.items() if k not in quantized and k not in rebuilt}
    meta = {"opt": _jsonable(vars(checkpoint["opt"])), "vocab": _jsonable(checkpoint["vocab"]),
            "policy": policy.to_dict(), "order": list(weights), "rebuilt": list(rebuilt)}
    return write_compressed(output, meta, quantized, plain, coder=coder, pooling=pooling)


def checkpoint_from_compressed(path):
    """The quantized checkpoint a compressed file was made from (weights bit for bit).
    Its checksum only proves the file is as written: a header edited (and checksummed
    again) apart from its tensors is named here, not by OpenNMT-py's loader later."""
    meta, quantized, plain = read_compressed(path)
    try:
        rebuilt = meta.get("rebuilt", [])  # files of format 1 before Transformers: none
        if sorted(meta["order"]) != sorted([*quantized, *plain, *rebuilt]):
            raise ValueError("its tensor order does not list the tensors it holds")
        checkpoint = {"opt": argparse.Namespace(**_from_json(meta["opt"])),
                      "vocab": _from_json(meta["vocab"])}
        if rebuilt:
            plain = {**plain, **built_buffers(checkpoint, rebuilt)}
        weights = {name: quantized[name].dequantize() if name in quantized else plain[name]
                   for name in meta["order"]}
        checkpoint = attach_quantization(checkpoint, weights, quantized,
                                         QuantPolicy.from_dict(meta["policy"]))
        check_model_shapes(checkpoint)
    except Exception as exc:  # any field the edit made unusable
        detail = (str(exc).strip().splitlines() or [""])[0]
        if not isinstance(exc, ValueError):
            detail = f"{type(exc).__name__} {detail}".strip()
        raise CompressedFileError(f"{path} is damaged or inconsistent: its header does not "
                                  f"describe its tensors ({detail}); compress the model "
                                  "again from its checkpoint") from exc
    return checkpoint


def check_model_shapes(checkpoint):
    """The model the checkpoint's options and vocabulary describe has exactly its
    tensors, shape for shape (built on the meta device: no memory, no weights)."""
    expected = {name: tuple(t.shape) for name, t in meta_model(checkpoint).state_dict().items()}
    held = {name: tuple(t.shape) for name, t in named_weights(checkpoint).items()}
    for name in sorted(set(expected) | set(held)):
        if expected.get(name) != held.get(name):
            raise ValueError(f"its model options give '{name}' shape {expected.get(name)}, "
                             f"the file holds {held.get(name)}")


def load_any(path):
    """A checkpoint dictionary from a checkpoint or a compressed file."""
    if is_compressed_file(path):
        return checkpoint_from_compressed(path)
    return load_checkpoint(path)
