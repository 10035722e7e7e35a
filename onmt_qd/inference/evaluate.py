"""Evaluate one model on test sets: BLEU and chrF (sacrebleu, detokenized, with
signatures), reference perplexity, parameter count, size on disk and translation
speed. The model is loaded once by its engine (onmt_qd/inference/engines: OpenNMT-py,
its int8 variant, or CTranslate2 on an onmt_qd_export directory) and serves the
translation and the perplexity alike."""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from onmt_qd.inference.engine import (check_decoding, check_inference, check_model_input,
                                      non_blank, write_lines, write_translations)
from onmt_qd.inference.engines import Engine, Predictions, Scores, open_engine
from onmt_qd.progress import Progress


def check_args(models: Sequence[str], srcs: Sequence[str], tgts: Sequence[str], beam_size: int,
               batch_size: int, gpu: int, outputs: Mapping[str, str | None],
               subword_models: Mapping[str, str | None]) -> None:
    """Every check that can fail, before a model is loaded."""
    from onmt_qd.fileio import STDIN, check_input_file, check_one_stdin, check_outputs
    from onmt_qd.opts import check_devices

    check_devices([gpu], "-gpu")
    check_decoding(beam_size, batch_size)
    if len(srcs) != len(tgts):
        raise ValueError(f"{len(srcs)} -src files and {len(tgts)} -tgt files: give one "
                         "reference file per source file, in the same order")
    if len(srcs) > 1 and STDIN in (*srcs, *tgts):
        raise ValueError("- (standard input) names one test set: give files when "
                         "evaluating several")
    for model in models:
        check_model_input(model)
    texts = [*(("-src", s) for s in srcs), *(("-tgt", t) for t in tgts)]
    for option, path in texts:
        check_input_file(path, option, stdin=True)
    inputs = [*(("-model", m) for m in models), *texts]
    for name, subword_model in subword_models.items():
        if subword_model:
            check_input_file(subword_model, f"-{name}")
    check_one_stdin(inputs)
    check_outputs(outputs, inputs)


class TestSet(NamedTuple):
    src: str
    tgt: str
    sources: list[str]
    references: list[str]


def read_test_sets(srcs: Sequence[str], tgts: Sequence[str]) -> list[TestSet]:
    """Each -src file with its -tgt file, read and checked parallel."""
    from onmt_qd.fileio import read_text_lines

    sets = []
    for src, tgt in zip(srcs, tgts):
        sources, references = read_text_lines(src, "-src"), read_text_lines(tgt, "-tgt")
        if len(sources) != len(references):
            raise ValueError(f"-src {src} has {len(sources)} lines, -tgt {tgt} "
                             f"{len(references)}: they must be parallel")
        if not non_blank(sources):
            raise ValueError(f"-src {src} has no sentence to translate: nothing to evaluate")
        sets.append(TestSet(src, tgt, sources, references))
    return sets


class EngineRun(NamedTuple):
    """One engine's run over the test sets: its translations, the pooled references'
    perplexity, what the engine reports of its model, and how long each part took."""
    scores: Scores
    predictions: Predictions
    ppl: float
    n_params: int
    size_bytes: int
    settings: dict[str, Any]
    load_seconds: float
    warmup_seconds: float
    set_seconds: list[float]
    machine: dict[str, Any]


def evaluate(model: str | Sequence[str], src: str | Sequence[str], tgt: str | Sequence[str],
             beam_size: int = 5, batch_size: int = 64, gpu: int = -1, output: str | None = None,
             json_path: str | None = None, precision: str | None = None,
             subword_models: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """Scores of ``model`` on ``src``/``tgt`` (its translations kept in ``output``, the
    scores in ``json_path``); several checkpoints are an ensemble (engine.load_models).
    ``src`` and ``tgt`` may be lists of parallel test sets: each set is translated in a
    run of its own, so its scores under ``test_sets`` are exactly what evaluating it
    alone gives, and bleu, chrf, ppl and speed are over all of them pooled (``output``
    holds their translations in order).
    ``translate_seconds`` times the translations alone, after one untimed batch of the
    first set has warmed the device up (reading and building the model is
    ``load_seconds``, the warm-up ``warmup_seconds``, all three ``total_seconds``);
    ``words_per_second`` counts output words (sacrebleu's tokenization), beside
    ``words_per_sentence`` and ``length_ratio`` (output words over reference words);
    ``machine`` says how busy the machine was meanwhile (onmt_qd/machine.py).
    ``subword_models``: {src_subword_model, tgt_subword_model} overriding the
    checkpoint's (models.resolve_subword_models)."""
    # src and tgt come alike: one path each, or parallel lists
    srcs, tgts = ([src], [cast(str, tgt)]) if isinstance(src, str) else (list(src), list(tgt))
    models = [model] if isinstance(model, str) else list(model)
    subword_models = subword_models or {}
    check_args(models, srcs, tgts, beam_size, batch_size, gpu,
               {"-json": json_path, "-output": output}, subword_models)
    sets = read_test_sets(srcs, tgts)
    given: dict[str, Any] = {name: path for name, path in subword_models.items() if path}
    if precision:  # None: the model's own
        given["precision"] = precision
    run = _run_engine(sets, models=models, beam_size=beam_size, batch_size=batch_size,
                      gpu=gpu, **given)
    if output:
        write_translations(output, run.scores, run.predictions)
    result = _result(" ".join(models), sets, run, beam_size, batch_size)
    if json_path:
        write_json(result, json_path)
    return result


def _pooled(sets: Sequence[TestSet], lines: str) -> list[str]:
    """The ``lines`` ("sources" or "references") of every set, in order."""
    return [line for one in sets for line in getattr(one, lines)]


def _run_engine(sets: Sequence[TestSet], **given: Any) -> EngineRun:
    """``sets`` translated by the engine that onmt_qd_translate's options choose (their
    defaults, ``given`` over them), each set in a run of its own after one untimed
    warm-up batch; then the perplexity of the pooled references."""
    from onmt_qd.opts import options_of, translate_parser

    sources, references = _pooled(sets, "sources"), _pooled(sets, "references")
    with tempfile.TemporaryDirectory(prefix="onmt_qd_eval_") as tmp:
        # the perplexity reads files: the lines as read (standard input, several sets
        # pooled, a byte-order mark removed) written out again
        src_file = write_lines(os.path.join(tmp, "src"), sources)
        tgt_file = write_lines(os.path.join(tmp, "tgt"), references)
        opt = options_of(translate_parser(), src=src_file, output=os.devnull, **given)
        sentences = len(non_blank(sources))
        check_inference(opt, sentences)
        start = time.perf_counter()
        with open_engine(opt) as engine:
            load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            engine.warm_up(sets[0].sources, opt.batch_size)
            warmup_seconds = time.perf_counter() - start
            scores, predictions, set_seconds, machine = _translate_sets(engine, sets, sentences)
            ppl = engine.perplexity(src_file, tgt_file, sources, references)
    return EngineRun(scores, predictions, ppl, engine.n_params, engine.size_bytes,
                     engine.settings(), load_seconds, warmup_seconds, set_seconds, machine)


def _translate_sets(engine: Engine, sets: Sequence[TestSet], sentences: int
                    ) -> tuple[Scores, Predictions, list[float], dict[str, Any]]:
    """Each set translated in a run of its own and timed alone, while LoadMeter watches
    how busy the machine is: (scores, predictions, seconds per set, the load)."""
    from onmt_qd.machine import LoadMeter

    progress = Progress("onmt_qd_eval", sentences)
    scores: Scores = []
    predictions: Predictions = []
    set_seconds: list[float] = []
    with LoadMeter(engine.cpu_threads()) as load:
        for one in sets:
            start = time.perf_counter()
            set_scores, set_predictions = engine.translate(one.sources, progress)
            set_seconds.append(time.perf_counter() - start)
            scores += set_scores
            predictions += set_predictions
    return scores, predictions, set_seconds, load.as_dict()


def _result(model: str, sets: Sequence[TestSet], run: EngineRun, beam_size: int,
            batch_size: int) -> dict[str, Any]:
    """evaluate's result: the pooled scores and speeds of ``run``, each set's beside them."""
    from onmt_qd.evaluate.metrics import bleu_chrf, word_count

    references = _pooled(sets, "references")
    hypotheses = [best[0] for best in run.predictions]
    bleu, chrf, bleu_sig, chrf_sig = bleu_chrf(hypotheses, references)
    seconds = sum(run.set_seconds)
    words, reference_words = word_count(hypotheses), word_count(references)
    return {"model": model, "bleu": round(bleu, 2), "chrf": round(chrf, 2),
            "ppl": round(run.ppl, 3), "n_params": run.n_params, "size_bytes": run.size_bytes,
            "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
            "beam_size": beam_size, "batch_size": batch_size, "engine": run.settings,
            "sentences": len(references),
            "load_seconds": round(run.load_seconds, 2),
            "warmup_seconds": round(run.warmup_seconds, 2),
            "translate_seconds": round(seconds, 2),
            "sentences_per_second": round(len(references) / max(seconds, 1e-9), 1),
            # speed in output words too (a model that stops early is fast in sentences),
            # with its length beside it; and the whole wait, loading included
            "words_per_second": round(words / max(seconds, 1e-9), 1),
            "words_per_sentence": round(words / len(references), 2),
            "length_ratio": round(words / max(reference_words, 1), 3),
            "total_seconds": round(run.load_seconds + run.warmup_seconds + seconds, 2),
            "machine": run.machine, "test_sets": _set_scores(sets, hypotheses, run.set_seconds)}


def _set_scores(sets: Sequence[TestSet], hypotheses: list[str], set_seconds: list[float]
                ) -> list[dict[str, Any]]:
    """Each set's BLEU and chrF on its slice of the pooled translations, and its time."""
    from onmt_qd.evaluate.metrics import bleu_chrf

    results: list[dict[str, Any]] = []
    first = 0
    for one, seconds in zip(sets, set_seconds):
        last = first + len(one.references)
        bleu, chrf, _, _ = bleu_chrf(hypotheses[first:last], one.references)
        results.append({"src": one.src, "tgt": one.tgt, "sentences": len(one.references),
                        "bleu": round(bleu, 2), "chrf": round(chrf, 2),
                        "translate_seconds": round(seconds, 2)})
        first = last
    return results


def write_json(result: Mapping[str, Any], path: str) -> None:
    from onmt_qd.fileio import open_output

    with open_output(path) as handle:
        json.dump(result, handle, indent=1)
