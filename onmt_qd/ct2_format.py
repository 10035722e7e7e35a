"""The files of a CTranslate2 model directory, read without loading the model: the spec
and variables in model.bin's header, and the vocabularies. model.bin is read as
CTranslate2's writer lays it out (ctranslate2/specs/model_spec.py,
``ModelSpec._serialize``): a version, the spec's name, a revision, then each variable's
name, shape, type and bytes. Used by deploy/foreign.py (a teacher directory checked and
imported) and distill/ct2_teacher.py (its distribution for word-level distillation)."""
from __future__ import annotations

import glob
import json
import os
import struct

# a sequence-to-sequence Transformer: what ctranslate2.Translator runs
TRANSLATOR_SPEC = "TransformerSpec"
DECODER_ONLY_SPECS = ("TransformerDecoderSpec", "TransformerDecoderModelSpec")
# CTranslate2's DataType enum, in its order (include/ctranslate2/types.h)
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_model_header(path: str) -> tuple[str, list[tuple[str, tuple[int, ...], str]]]:
    """(spec name, [(variable, shape, type)]) of a CTranslate2 model.bin, reading the
    variables' headers only; a one-line ValueError for a file laid out otherwise."""
    def read(handle, layout):
        size = struct.calcsize(layout)
        data = handle.read(size)
        if len(data) != size:
            raise ValueError("ends early")
        return struct.unpack(layout, data)

    def read_string(handle):
        (length,) = read(handle, "H")
        raw = handle.read(length)
        if len(raw) != length or not raw.endswith(b"\0"):
            raise ValueError("a name is cut short")
        return raw[:-1].decode("utf-8")

    try:
        with open(path, "rb") as handle:
            (version,) = read(handle, "I")
            if not 1 <= version <= 64:
                raise ValueError(f"binary version {version}")
            spec = read_string(handle) if version >= 2 else ""
            if version >= 2:
                read(handle, "I")  # the spec's revision
            (count,) = read(handle, "I")
            variables = []
            for _ in range(count):
                name = read_string(handle)
                (rank,) = read(handle, "B")
                shape = read(handle, f"{rank}I")
                (type_id,) = read(handle, "B")
                (size,) = read(handle, "I")
                handle.seek(size, os.SEEK_CUR)
                variables.append((name, tuple(shape),
                                  DTYPES[type_id] if type_id < len(DTYPES) else "unknown"))
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"{path} is not a CTranslate2 model.bin ({exc})") from None
    return spec, variables


def check_translator_spec(path: str, option: str) -> list:
    """The variables of ``path``/model.bin, which must hold a sequence-to-sequence
    Transformer; each other case is one line saying what to give."""
    model_bin = os.path.join(path, "model.bin")
    if not os.path.isfile(model_bin):
        checkpoints = sorted(glob.glob(os.path.join(path, "*.pt")))
        if checkpoints:
            raise ValueError(f"{option} {path} is a directory holding OpenNMT-py checkpoints "
                             f"({os.path.basename(checkpoints[0])}...), not a CTranslate2 "
                             f"model (no model.bin): give the checkpoint file itself, e.g. "
                             f"{option} {checkpoints[0]}")
        raise ValueError(f"{option} {path} is not a CTranslate2 model directory (no "
                         "model.bin): give the folder a CTranslate2 converter or "
                         "onmt_qd_export wrote (in an Argos Translate package: its model/)")
    spec, variables = read_model_header(model_bin)
    if spec in DECODER_ONLY_SPECS:
        raise ValueError(f"{option} {path} is a decoder-only language model ({spec}), not "
                         "a translator: give a sequence-to-sequence (encoder-decoder) model")
    if spec != TRANSLATOR_SPEC:
        raise ValueError(f"{option} {path} is a CTranslate2 {spec or 'version 1'} model, not "
                         f"a Transformer translator ({TRANSLATOR_SPEC}): give a translation "
                         "model")
    return variables


def read_vocabularies(path: str) -> tuple[list[str], list[str]]:
    """(source, target) tokens of a CTranslate2 directory: shared_vocabulary, or
    source_ and target_vocabulary, as .json (CTranslate2 >= 3) or .txt (one per line)."""
    def read(stem):
        for suffix in (".json", ".txt"):
            file = os.path.join(path, stem + suffix)
            if os.path.isfile(file):
                with open(file, encoding="utf-8") as handle:
                    return json.load(handle) if suffix == ".json" else \
                        handle.read().splitlines()
        return None

    shared = read("shared_vocabulary")
    if shared is not None:
        return shared, shared
    source, target = read("source_vocabulary"), read("target_vocabulary")
    if source is None or target is None:
        raise ValueError(f"{path} has no vocabulary files (shared_vocabulary.json, or "
                         "source_ and target_vocabulary.json): convert the model again with "
                         "a CTranslate2 converter")
    return source, target


# what decides how a directory translates: the weights, the conventions (BOS/EOS
# added to the source, the decoder's start token...) and the vocabularies
MODEL_FILES = ("model.bin", "config.json", "shared_vocabulary.json", "shared_vocabulary.txt",
               "source_vocabulary.json", "source_vocabulary.txt", "target_vocabulary.json",
               "target_vocabulary.txt")


def directory_digest(path: str) -> str:
    """SHA-256 over the files of ``path`` that decide its translations (MODEL_FILES)."""
    import hashlib

    from onmt_qd.fileio import sha256

    digest = hashlib.sha256()
    for name in MODEL_FILES:
        if os.path.isfile(os.path.join(path, name)):
            digest.update(f"{name}:{sha256(os.path.join(path, name))}\n".encode())
    return digest.hexdigest()

