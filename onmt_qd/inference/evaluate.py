"""Evaluate one model on a test set: BLEU and chrF (sacrebleu, detokenized, with
signatures), reference perplexity, parameter count, size on disk and translation
speed. The model is read and built once and serves the translation and the
perplexity alike."""
import json
import os
import tempfile
import time

from onmt_qd.inference.engine import (check_decoding, check_inference, inference_engine,
                                      load_model, non_blank, translate_aligned, warm_up,
                                      write_lines, write_translations)
from onmt_qd.inference.progress import Progress


def check_args(model, src, tgt, beam_size, batch_size, gpu, outputs):
    """Every check that can fail, before a model is loaded."""
    from onmt_qd.fileio import check_input_file, check_one_stdin, check_outputs
    from onmt_qd.opts import check_devices

    check_devices([gpu], "-gpu")
    check_decoding(beam_size, batch_size)
    inputs = {"-model": model, "-src": src, "-tgt": tgt}
    for option, path in inputs.items():
        check_input_file(path, option, stdin=option != "-model")
    check_one_stdin(inputs)
    check_outputs(outputs, inputs)


def evaluate(model, src, tgt, beam_size=5, batch_size=64, gpu=-1, output=None,
             json_path=None):
    """Scores of ``model`` on ``src``/``tgt`` (its translations kept in ``output``, the
    scores in ``json_path``);
    ``translate_seconds`` times the translation of the corpus alone, after one untimed
    batch of it has warmed the device up (reading and building the model is
    ``load_seconds``, the warm-up ``warmup_seconds``)."""
    from onmt_qd.evaluate.metrics import bleu_chrf, reference_perplexity
    from onmt_qd.fileio import STDIN, read_text_lines
    from onmt_qd.opts import parse, translate_parser

    check_args(model, src, tgt, beam_size, batch_size, gpu,
               {"-json": json_path, "-output": output})
    sources, references = read_text_lines(src, "-src"), read_text_lines(tgt, "-tgt")
    if len(sources) != len(references):
        raise ValueError(f"-src {src} has {len(sources)} lines, -tgt {tgt} "
                         f"{len(references)}: they must be parallel")
    sentences = len(non_blank(sources))
    if not sentences:
        raise ValueError(f"-src {src} has no sentence to translate: nothing to evaluate")
    with tempfile.TemporaryDirectory(prefix="onmt_qd_eval_") as tmp:
        if src == STDIN:  # read once; the perplexity reads files
            src = write_lines(os.path.join(tmp, "src"), sources)
        if tgt == STDIN:
            tgt = write_lines(os.path.join(tmp, "tgt"), references)
        opt = parse(translate_parser(), ["-model", model, "-src", src, "-output", os.devnull,
                                         "-beam_size", str(beam_size), "-batch_size",
                                         str(batch_size), "-gpu", str(gpu),
                                         "-log_file", os.devnull])
        check_inference(opt, sentences)
        start = time.perf_counter()
        loaded = load_model(model, opt)
        with inference_engine(opt, sources, loaded) as engine:
            load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            warm_up(engine, sources, batch_size)
            warmup_seconds = time.perf_counter() - start
            start = time.perf_counter()
            scores, predictions = translate_aligned(engine, sources,
                                                    Progress("onmt_qd_eval", sentences))
            seconds = time.perf_counter() - start
        if output:
            write_translations(output, scores, predictions)
        hypotheses = [best[0] for best in predictions]
        bleu, chrf, bleu_sig, chrf_sig = bleu_chrf(hypotheses, references)
        device = "cpu" if gpu < 0 else f"cuda:{gpu}"
        ppl = reference_perplexity(loaded.model, loaded.vocabs, loaded.model_opt, src, tgt,
                                   device)
    result = {"model": model, "bleu": round(bleu, 2), "chrf": round(chrf, 2),
              "ppl": round(ppl, 3), "n_params": sum(p.numel() for p in loaded.model.parameters()),
            "size_bytes": os.path.getsize(model),
            "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
            "beam_size": beam_size, "sentences": len(references),
            "load_seconds": round(load_seconds, 2), "warmup_seconds": round(warmup_seconds, 2),
            "translate_seconds": round(seconds, 2),
            "sentences_per_second": round(len(references) / max(seconds, 1e-9), 1)}
    if json_path:
        write_json(result, json_path)
    return result


def write_json(result, path):
    from onmt_qd.fileio import open_output

    with open_output(path) as handle:
        json.dump(result, handle, indent=1)
