"""CTranslate2 translator directories onmt_qd did not export: an Argos Translate or
LibreTranslate package's model, an OPUS-MT (Marian) model converted by CTranslate2's
converters, any ``ct2-*-converter`` output. ``inspect_translator`` finds what such a
directory is and how it tokenizes, cheaply and with one-line refusals (the spec in
model.bin's header, the vocabularies, the SentencePiece models in or beside it);
``import_translator`` copies it, tokenizers included, into an onmt_qd export directory
(manifest with checksums), which every onmt_qd command then takes as it takes an
``onmt_qd_export`` directory: translate, eval, the recipe's stages.

model.bin is read as CTranslate2's writer lays it out (ctranslate2/specs/model_spec.py,
``ModelSpec._serialize``): a version, the spec's name, a revision, then each variable's
name, shape, type and bytes."""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import struct
from dataclasses import dataclass

# a sequence-to-sequence Transformer: what ctranslate2.Translator runs
TRANSLATOR_SPEC = "TransformerSpec"
DECODER_ONLY_SPECS = ("TransformerDecoderSpec", "TransformerDecoderModelSpec")
# CTranslate2's DataType enum, in its order (include/ctranslate2/types.h)
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
# where packages keep their SentencePiece models: one shared model, or a pair
SHARED_SPM_NAMES = ("sentencepiece.model", "spm.model", "sentencepiece.bpe.model")
SPM_PAIR_NAMES = (("source.spm", "target.spm"), ("source.spm.model", "target.spm.model"))
# share of the pieces of a side's SentencePiece model (or of that side's vocabulary) the
# other holds: the model's own tokenizer gives nearly all; another language's few
MIN_PIECE_COVERAGE = 0.9


@dataclass(frozen=True)
class TranslatorDirectory:
    """What a CTranslate2 translator directory is, found by ``inspect_translator``."""

    path: str
    source_spm: str
    target_spm: str
    spec: str
    n_params: int
    quantization: str  # the type most weights in model.bin have (int8, float16, ...)


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
                        handle.read().split("\n")[:-1]
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


def find_tokenizers(path: str, option: str, source_spm: str | None = None,
                    target_spm: str | None = None) -> tuple[str, str]:
    """The (source, target) SentencePiece models of the directory: those given, else
    one shared or a source/target pair in the directory or the folder above it (an
    Argos Translate package keeps its sentencepiece.model beside model/)."""
    if source_spm or target_spm:
        if not (source_spm and target_spm):
            raise ValueError(f"{option} {path}: give both the source and the target "
                             "SentencePiece model (the same file twice for a shared one)")
        for spm in (source_spm, target_spm):
            if not os.path.isfile(spm):
                raise ValueError(f"SentencePiece model {spm} does not exist")
        return source_spm, target_spm
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        for name in SHARED_SPM_NAMES:
            if os.path.isfile(os.path.join(folder, name)):
                return (os.path.join(folder, name),) * 2
        for pair in SPM_PAIR_NAMES:
            files = tuple(os.path.join(folder, name) for name in pair)
            if all(os.path.isfile(f) for f in files):
                return files
    looked = ", ".join([*SHARED_SPM_NAMES, *(f"{s} + {t}" for s, t in SPM_PAIR_NAMES)])
    naming = "-src_subword_model and -tgt_subword_model" if option.startswith("-") else \
        "sentencepiece_model, or source_sentencepiece_model and target_sentencepiece_model"
    raise ValueError(f"{option} {path}: cannot tell how it tokenizes, no SentencePiece model "
                     f"in it or the folder above ({looked}): name it with {naming}")


def _special(token: str) -> bool:
    """Control tokens (<unk>, <s>, </s>, <blank>, <pad>...), in no tokenizer's pieces."""
    return token.startswith("<") and token.endswith(">")


def piece_coverage(spm: str, vocabulary: list[str]) -> float:
    """How well a SentencePiece model and a vocabulary fit each other: the larger of
    the share of its pieces in the vocabulary (a joint vocabulary holds both languages'
    pieces, as OPUS-MT's) and the share of the vocabulary among its pieces (a vocabulary
    built on its pieces)."""
    import sentencepiece

    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=spm)
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{spm} is not a SentencePiece model "
                         f"({str(exc).splitlines()[0]})") from None
    pieces = {processor.id_to_piece(i) for i in range(processor.get_piece_size())} - \
        {processor.id_to_piece(i) for i in range(processor.get_piece_size())
         if processor.is_control(i) or processor.is_unknown(i)}
    tokens = {t for t in vocabulary if not _special(t)}
    if not pieces or not tokens:
        return 0.0
    return max(len(pieces & tokens) / len(pieces), len(pieces & tokens) / len(tokens))


def inspect_translator(path: str, option: str = "-teacher_model",
                       source_spm: str | None = None,
                       target_spm: str | None = None) -> TranslatorDirectory:
    """What the CTranslate2 directory ``path`` is and how it tokenizes; a one-line
    ValueError naming what to give for anything that is not a translator onmt_qd can
    feed (no model.bin, a checkpoint folder, a decoder-only model, no tokenizer, a
    tokenizer that is not the model's)."""
    variables = check_translator_spec(path, option)
    source_spm, target_spm = find_tokenizers(path, option, source_spm, target_spm)
    for side, spm, vocabulary in zip(("source", "target"), (source_spm, target_spm),
                                     read_vocabularies(path)):
        covered = piece_coverage(spm, vocabulary)
        if covered < MIN_PIECE_COVERAGE:
            raise ValueError(f"{option} {path}: {spm} is not its {side} tokenizer (only "
                             f"{covered:.0%} of its pieces match the {side} vocabulary; the "
                             "other language's model?): name the SentencePiece model the "
                             f"{side} side was trained with")
    weights = [(shape, dtype) for name, shape, dtype in variables
               if not name.endswith("_scale")]  # int8's per-row scales: not weights
    elements = {dtype: sum(math.prod(s) for s, d in weights if d == dtype)
                for dtype in {d for _, d in weights}}
    return TranslatorDirectory(os.path.abspath(path), os.path.abspath(source_spm),
                               os.path.abspath(target_spm), TRANSLATOR_SPEC,
                               sum(elements.values()),
                               max(elements, key=elements.get, default="float32"))


def import_translator(found: TranslatorDirectory, output: str) -> dict:
    """Copy the translator ``found`` into ``output`` as an onmt_qd export directory
    (its SentencePiece models inside, a manifest with each file's checksum): written
    whole or not at all, as onmt_qd_export writes. Returns the manifest."""
    from onmt_qd.deploy.ct2 import MANIFEST, SHARED_SPM, SOURCE_SPM, TARGET_SPM, write_export
    from onmt_qd.fileio import same_file, sha256

    def stage(staging):
        for name in os.listdir(found.path):
            source = os.path.join(found.path, name)
            if os.path.isfile(source) and name != MANIFEST:  # (an export's: rewritten)
                shutil.copyfile(source, os.path.join(staging, name))
        names = (SHARED_SPM,) * 2 if same_file(found.source_spm, found.target_spm) else \
            (SOURCE_SPM, TARGET_SPM)
        for name, spm in zip(names, (found.source_spm, found.target_spm)):
            shutil.copyfile(spm, os.path.join(staging, name))
        return {"source": found.path,
                "source_sha256": sha256(os.path.join(found.path, "model.bin")),
                "quantization": found.quantization, "imported": True,
                "source_spm": names[0], "target_spm": names[1], "n_params": found.n_params}
    return write_export(output, stage)
