"""CTranslate2 translator directories onmt_qd did not export: an Argos Translate or
LibreTranslate package's model, an OPUS-MT (Marian) model converted by CTranslate2's
converters, any ``ct2-*-converter`` output. ``inspect_translator`` finds what such a
directory is and how it tokenizes, cheaply and with one-line refusals (the spec in
model.bin's header, the vocabularies, the SentencePiece models in or beside it);
``import_translator`` copies it, tokenizers included, into an onmt_qd export directory
(manifest with checksums), which every onmt_qd command then takes as it takes an
``onmt_qd_export`` directory: translate, eval, the recipe's stages.

The directory's files are read by onmt_qd/ct2_format.py."""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass

from onmt_qd.ct2_format import TRANSLATOR_SPEC, check_translator_spec, read_vocabularies

# where packages keep their SentencePiece models: one shared model, or a pair
SHARED_SPM_NAMES = ("sentencepiece.model", "spm.model", "sentencepiece.bpe.model")
SPM_PAIR_NAMES = (("source.spm", "target.spm"), ("source.spm.model", "target.spm.model"))
# share of the pieces of a side's SentencePiece model (or of that side's vocabulary) the
# other holds: the model's own tokenizer gives nearly all; another language's few (also
# the rule of a checkpoint teacher's sentencepiece_model: profile.check_teacher_subwords)
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


def is_special_token(token: str) -> bool:
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
    tokens = {t for t in vocabulary if not is_special_token(t)}
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
    # int8's per-row scales, the sinusoidal position table and the configuration
    # scalars are not weights (onmt_qd_eval counts those of the model it builds)
    weights = [(shape, dtype) for name, shape, dtype in variables
               if shape and not name.endswith("_scale") and "position_encodings" not in name]
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
