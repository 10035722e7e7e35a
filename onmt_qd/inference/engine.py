"""Translate lines with one model: load it once (a .qdz decoded in memory), check
the decoding options first, run OpenNMT-py's own inference engine and translator
(beam search and all) on it, and give one output line (or -n_best) per source
line, in source order, blank for blank."""
from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from argparse import Namespace
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from onmt.inference_engine import InferenceEngine, InferenceEnginePY

from onmt_qd.progress import Progress

if TYPE_CHECKING:  # OpenNMT-py has no type information: to mypy NMTModel is Any, named
    from onmt.models import NMTModel

    from onmt_qd.inference.engines import Predictions, Scores


# Studies of beam width (Koehn and Knowles 2017) stop at 1000; past a few dozen, wider
# beams lower BLEU. A larger value is a typo, and beam search allocates per hypothesis.
MAX_BEAM_SIZE = 1000
# Hypotheses in flight (beam x sentences per batch): each holds decoder state and a
# vocabulary-sized row of scores per step; 100,000 rows of a 32k vocabulary are ~13 GB.
MAX_HYPOTHESES = 100_000


def check_decoding(beam_size: int, batch_size: int, n_best: int = 1,
                   max_length: int | None = None) -> None:
    """Decoding options that OpenNMT-py's beam search would fail on with a traceback,
    or that a typo makes large enough to exhaust memory."""
    for option, value in (("-beam_size", beam_size), ("-batch_size", batch_size),
                          ("-n_best", n_best), ("-max_length", max_length)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    if beam_size > MAX_BEAM_SIZE:
        raise ValueError(f"-beam_size {beam_size} is more than {MAX_BEAM_SIZE}: beam search "
                         "keeps that many hypotheses per sentence and would exhaust memory "
                         "(wider beams than a few dozen do not translate better)")
    if n_best > beam_size:
        raise ValueError(f"-n_best {n_best} is more than -beam_size {beam_size}: the search "
                         "keeps beam_size hypotheses; raise -beam_size or lower -n_best")


def check_files(opt: Namespace, outputs: Mapping[str, str | None]) -> None:
    """Inputs readable, outputs (option -> path) writable and none of the inputs,
    before any model is loaded."""
    from onmt_qd.fileio import check_input_file, check_one_stdin, check_outputs

    inputs = [("-src", opt.src), ("-tgt", opt.tgt)] + [("-model", m) for m in opt.models]
    for option, path in inputs:
        if option == "-model":
            check_model_input(path)
        elif path:
            check_input_file(path, option, stdin=True)
    check_one_stdin(inputs)
    check_outputs(outputs, inputs)


def check_model_input(path: str) -> None:
    """-model: what the engine that translates it can load (a checkpoint or .qdz file,
    or a directory written by onmt_qd_export)."""
    from onmt_qd.inference.engines import engine_for

    engine_for(path).check_model(path)


def check_inference(opt: Namespace, sentences: int) -> None:
    """Refuse, before the model is loaded, what its engine would not do as asked
    (Engine.check_options: options CTranslate2 does not take, -precision where it does
    not apply), an ensemble with a directory in it, several processes, OpenNMT-py's
    bitsandbytes -quant_type, and a search whose hypotheses in flight (beam x sentences
    per batch, a batch being at most the corpus) would exhaust memory. With -batch_type
    tokens, sentences per batch are known only once tokenized: -beam_size alone is
    bounded."""
    from onmt_qd.inference.engines import engine_for

    if len(opt.models) > 1 and any(os.path.isdir(model) for model in opt.models):
        raise ValueError(f"-model: {len(opt.models)} models with a directory among them; an "
                         "ensemble's members are checkpoints (CTranslate2 decodes no "
                         "ensemble): give a CTranslate2 directory alone")
    engine_for(opt.models[0], opt.precision).check_options(opt)
    if opt.world_size > 1:
        raise ValueError(f"-world_size {opt.world_size}: this translates in one process; "
                         "leave -world_size out")
    if getattr(opt, "quant_type", ""):
        raise ValueError(f"-quant_type {opt.quant_type}: OpenNMT-py's bitsandbytes/AWQ "
                         "quantization is not applied here; leave it out (onmt_qd models "
                         "are quantized by onmt_qd_quantize or training)")
    hypotheses = opt.beam_size * min(opt.batch_size, sentences)
    if opt.batch_type == "sents" and hypotheses > MAX_HYPOTHESES:
        raise ValueError(f"-beam_size {opt.beam_size} x -batch_size {opt.batch_size} is "
                         f"{hypotheses:,} hypotheses at once here, more than "
                         f"{MAX_HYPOTHESES:,} (memory): lower -beam_size or -batch_size")


class LoadedModel(NamedTuple):
    """A model built once, for translation and scoring alike."""
    model: NMTModel  # in eval mode on its device (an EnsembleModel for several)
    vocabs: dict[str, Any]  # OpenNMT-py's: "src", "tgt" vocabularies and settings
    model_opt: Namespace  # its checkpoint's options (data, transforms) as built


def load_model(path: str, opt: Namespace) -> LoadedModel:
    """``path`` (a checkpoint or a .qdz) read once and built on -gpu's device as
    OpenNMT-py's load_test_model builds a model to translate with: the translation's
    -self_attn_type, -precision fp16 as a cast, attention dropout off
    (build_model_from_checkpoint); -precision int8 as OpenNMT-py
    means it and does not do it (onmt_qd/deploy/int8.py)."""
    import torch

    from onmt_qd.deploy.int8 import apply_precision
    from onmt_qd.models import build_model_from_checkpoint, resolve_subword_models
    from onmt_qd.qdz import load_any

    device = "cpu" if opt.gpu < 0 else f"cuda:{opt.gpu}"
    checkpoint = load_any(path)
    resolve_subword_models(checkpoint["opt"], path, opt)
    loaded = LoadedModel(*build_model_from_checkpoint(
        checkpoint, device, overrides={"self_attn_type": opt.self_attn_type}))
    if opt.precision == "fp16":
        loaded.model.to(torch.float16)
    apply_precision(loaded.model, opt.precision)
    return loaded


def load_models(paths: Sequence[str], opt: Namespace) -> LoadedModel:
    """-model's model, or its models averaged by OpenNMT-py's EnsembleModel as
    onmt_translate averages them (vocabularies must match)."""
    loaded = [load_model(path, opt) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    from onmt.decoders.ensemble import EnsembleModel

    for path, other in zip(paths[1:], loaded[1:]):
        if other.vocabs["src"].tokens_to_ids != loaded[0].vocabs["src"].tokens_to_ids:
            raise ValueError(f"-model {path} has another vocabulary than {paths[0]}: the "
                             "models of an ensemble must share theirs")
    ensemble = EnsembleModel([one.model for one in loaded], opt.avg_raw_probs).eval()
    return loaded[0]._replace(model=ensemble)


def default_transforms(opt: Namespace, model_opt: Namespace) -> None:
    """Use the model's SentencePiece transform when the user named no transforms."""
    from onmt_qd.evaluate.metrics import valid_transforms

    if opt.transforms:
        return
    opt.transforms = valid_transforms(model_opt)
    for name in ("src_subword_model", "tgt_subword_model"):
        if not getattr(opt, name, None):
            setattr(opt, name, getattr(model_opt, name, None))


class ModelEngine(InferenceEnginePY):
    """OpenNMT-py's inference engine around a model built already.
    InferenceEnginePY.__init__ builds its translator with build_translator, which loads
    and builds opt.models itself; this sets what that __init__ sets for one process,
    with OpenNMT-py's Translator.from_opt on ``loaded``."""

    def __init__(self, opt: Namespace, loaded: LoadedModel) -> None:
        from onmt.transforms import get_transforms_cls
        from onmt.translate import GNMTGlobalScorer, Translator
        from onmt.utils.logging import init_logger

        InferenceEngine.__init__(self, opt)
        self.logger = init_logger(opt.log_file)
        self.device_id = opt.gpu
        self.vocabs = loaded.vocabs
        self.transforms_cls = get_transforms_cls(opt._all_transform)
        self.translator = Translator.from_opt(
            loaded.model, loaded.vocabs, opt, loaded.model_opt,
            global_scorer=GNMTGlobalScorer.from_opt(opt), out_file=_Discard(),
            report_align=opt.report_align, report_score=True, logger=self.logger)

    def infer_file_counted(self, progress: Progress | None = None
                           ) -> tuple[list[list[float]], list[list[str]]]:
        """infer_file, each batch counted into ``progress`` once it is translated."""
        from onmt.constants import CorpusTask
        from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter

        batches = build_dynamic_dataset_iter(self.opt, self.transforms_cls, self.vocabs,
                                             task=CorpusTask.INFER, device_id=self.device_id)
        return self._translate(batches if progress is None else
                               _CountedBatches(batches, progress))


class _Discard(io.TextIOBase):
    """The translator's out_file: it writes every prediction there, and the caller
    writes the re-aligned output itself. No file is opened, so none is left open."""

    def write(self, text: str) -> int:
        return len(text)


class _CountedBatches:
    """An OpenNMT-py inference iterator that counts each batch's sentences into
    ``progress`` when the translator asks for the next batch (it has translated this
    one then). One pass, one iterator: batches and output exactly as without it."""

    def __init__(self, batches: Iterable[tuple[dict[str, Any], Any]],
                 progress: Progress) -> None:
        self._batches, self._progress = batches, progress

    def __getattr__(self, name: str) -> Any:  # transforms, bucket_size: what the translator reads
        return getattr(self._batches, name)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Any]]:
        for batch, bucket in self._batches:
            yield batch, bucket
            self._progress.advance(len(batch["srclen"]))


def non_blank(lines: Sequence[str]) -> list[int]:
    """Indices of the lines OpenNMT-py translates (it drops blank ones)."""
    return [i for i, line in enumerate(lines) if line.strip()]


def write_lines(path: str, lines: Iterable[str]) -> str:
    from onmt_qd.fileio import named_write_errors

    with named_write_errors(path), open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    return path


@contextlib.contextmanager
def inference_engine(opt: Namespace, lines: Sequence[str], loaded: LoadedModel
                     ) -> Iterator[ModelEngine]:
    """OpenNMT-py's inference engine on the ``loaded`` model, validated and seeded as
    onmt_translate builds it, set to translate the non-blank ``lines`` (and their -tgt
    lines, for gold scores). It writes nothing: the caller writes the re-aligned output."""
    from onmt.utils.misc import set_random_seed, use_gpu
    from onmt.utils.parse import ArgumentParser

    from onmt_qd.fileio import read_text_lines

    keep = non_blank(lines)
    with tempfile.TemporaryDirectory(prefix="onmt_qd_translate_") as tmp:
        engine_opt = copy.copy(opt)
        default_transforms(engine_opt, loaded.model_opt)
        engine_opt.src = write_lines(os.path.join(tmp, "src"), [lines[i] for i in keep])
        if opt.tgt:
            references = read_text_lines(opt.tgt, "-tgt")
            if len(references) != len(lines):
                raise ValueError(f"-tgt {opt.tgt} has {len(references)} lines, -src "
                                 f"{opt.src} {len(lines)}: they must be parallel")
            engine_opt.tgt = write_lines(os.path.join(tmp, "tgt"),
                                         [references[i] for i in keep])
        engine_opt.output, engine_opt.with_score = os.devnull, False
        ArgumentParser.validate_translate_opts(engine_opt)
        ArgumentParser._get_all_transform_translate(engine_opt)
        ArgumentParser._validate_transforms_opts(engine_opt)
        ArgumentParser.validate_translate_opts_dynamic(engine_opt)
        set_random_seed(engine_opt.seed, use_gpu(engine_opt))
        engine = ModelEngine(engine_opt, loaded)
        try:
            yield engine
        finally:
            engine.terminate()


def translate_aligned(engine: ModelEngine, lines: Sequence[str], progress: Progress | None = None
                      ) -> tuple[Scores, Predictions]:
    """(scores, predictions), -n_best of each per source line and in source order;
    blank lines get empty predictions (score 0). ``progress`` (a Progress over the
    non-blank lines) is told as batches finish."""
    keep = non_blank(lines)
    scores, predictions = engine.infer_file_counted(progress) if keep else ([], [])
    if len(predictions) != len(keep):
        raise ValueError(f"the model's transforms dropped {len(keep) - len(predictions)} of "
                         f"{len(keep)} non-blank source lines (lines that tokenize to "
                         "nothing): remove or fix them, the output would not line up")
    n_best = engine.opt.n_best
    all_scores, all_predictions = [[0.0] * n_best for _ in lines], [[""] * n_best for _ in lines]
    for i, score, prediction in zip(keep, scores, predictions):
        all_scores[i], all_predictions[i] = [float(s) for s in score], prediction
    return all_scores, all_predictions


def warm_up(engine: ModelEngine, lines: Sequence[str], count: int) -> None:
    """Translate the first ``count`` non-blank ``lines`` and drop the result: a
    process's first translation pays one-time costs (on a GPU, loading kernels and
    planning cuDNN) that a speed measurement must not count."""
    sample = [lines[i] for i in non_blank(lines)[:count]]
    if not sample:
        return
    reports, engine.translator.report_score = engine.translator.report_score, False
    try:  # its score line would read like a result
        engine.infer_list(sample)
    finally:
        engine.translator.report_score = reports


def write_translations(path: str, scores: Sequence[Sequence[float]],
                       predictions: Sequence[Sequence[str]], with_score: bool = False) -> None:
    """onmt_translate's output format (n_best lines per source line, optionally
    "prediction<TAB>score"), written atomically (or to standard output)."""
    from onmt_qd.fileio import open_output

    with open_output(path) as out:
        for line_scores, line_predictions in zip(scores, predictions):
            for score, prediction in zip(line_scores, line_predictions):
                out.write(f"{prediction}\t{score}\n" if with_score else f"{prediction}\n")


def translate(opt: Namespace) -> None:
    """onmt_qd_translate: -src translated with -model into -output, one line (or
    -n_best) per source line; progress on standard error when it takes a while."""
    from onmt_qd.fileio import read_text_lines

    check_decoding(opt.beam_size, opt.batch_size, opt.n_best, opt.max_length)
    check_files(opt, {"-output": opt.output})
    lines = read_text_lines(opt.src, "-src")
    check_inference(opt, len(non_blank(lines)))
    progress = Progress("onmt_qd_translate", len(non_blank(lines)))
    from onmt_qd.inference.engines import open_engine

    with open_engine(opt) as engine:
        scores, predictions = engine.translate(lines, progress)
    write_translations(opt.output, scores, predictions, opt.with_score)
