"""Evaluate one model on a test set: BLEU and chrF (sacrebleu, detokenized, with
signatures), reference perplexity, parameter count, size on disk and translation
speed. The model is read and built once and serves the translation and the
perplexity alike; an onmt_qd_export directory is measured the same way through
CTranslate2."""
import contextlib
import json
import os
import tempfile
import time
from typing import Callable, NamedTuple

from onmt_qd.inference.engine import (check_decoding, check_inference, check_model_input,
                                      inference_engine, load_model, non_blank,
                                      translate_aligned, warm_up, write_lines,
                                      write_translations)
from onmt_qd.progress import Progress


def check_args(model, src, tgt, beam_size, batch_size, gpu, outputs):
    """Every check that can fail, before a model is loaded."""
    from onmt_qd.fileio import check_input_file, check_one_stdin, check_outputs
    from onmt_qd.opts import check_devices

    check_devices([gpu], "-gpu")
    check_decoding(beam_size, batch_size)
    inputs = {"-model": model, "-src": src, "-tgt": tgt}
    check_model_input(model)
    for option in ("-src", "-tgt"):
        check_input_file(inputs[option], option, stdin=True)
    check_one_stdin(inputs)
    check_outputs(outputs, inputs)


class Backend(NamedTuple):
    """What evaluate() measures of a loaded model, whichever engine translates."""
    warm_up: Callable  # (count): translate the first ``count`` sentences, untimed
    translate: Callable  # (progress): (scores, predictions) of all sources
    perplexity: Callable  # (): of the references
    n_params: int
    size_bytes: int
    engine: dict  # which engine translated, and its settings (device, precision, threads)


@contextlib.contextmanager
def opennmt_backend(opt, sources, src, tgt):
    """OpenNMT-py's engine on the checkpoint or .qdz, built once for both uses."""
    from onmt_qd.evaluate.metrics import reference_perplexity

    loaded = load_model(opt.models[0], opt)
    device = "cpu" if opt.gpu < 0 else f"cuda:{opt.gpu}"
    with inference_engine(opt, sources, loaded) as engine:
        yield Backend(lambda count: warm_up(engine, sources, count),
                      lambda progress: translate_aligned(engine, sources, progress),
                      lambda: reference_perplexity(loaded.model, loaded.vocabs,
                                                   loaded.model_opt, src, tgt, device),
                      sum(p.numel() for p in loaded.model.parameters()),
                      os.path.getsize(opt.models[0]),
                      {"name": "OpenNMT-py", "precision": opt.precision or "fp32",
                       "device": device, "threads": _torch_threads(device)})


@contextlib.contextmanager
def ctranslate2_backend(opt, sources, references):
    """CTranslate2 on an onmt_qd_export directory; its scores of the references give
    the perplexity."""
    from onmt_qd.deploy.ct2 import deployed_model, directory_size

    deployed = deployed_model(opt)

    def translate(lines, progress=None):
        return deployed.translate(lines, opt.beam_size, opt.batch_size,
                                  progress=progress)

    yield Backend(lambda count: translate([sources[i] for i in non_blank(sources)[:count]]),
                  lambda progress: translate(sources, progress),
                  lambda: deployed.perplexity(sources, references, opt.batch_size),
                  deployed.manifest["n_params"], directory_size(opt.models[0]),
                  {"name": "CTranslate2", "precision": deployed.manifest["quantization"],
                   "device": deployed.device, "inter_threads": deployed.inter_threads,
                   "intra_threads": deployed.intra_threads})


def _torch_threads(device):
    """torch's intra-op threads on the CPU (None on a GPU, where they do not translate)."""
    import torch

    return torch.get_num_threads() if device == "cpu" else None


def evaluate(model, src, tgt, beam_size=5, batch_size=64, gpu=-1, output=None,
             json_path=None, precision=None):
    """Scores of ``model`` on ``src``/``tgt`` (its translations kept in ``output``, the
    scores in ``json_path``);
    ``translate_seconds`` times the translation of the corpus alone, after one untimed
    batch of it has warmed the device up (reading and building the model is
    ``load_seconds``, the warm-up ``warmup_seconds``)."""
    from onmt_qd.evaluate.metrics import bleu_chrf
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
        precision_args = ["-precision", precision] if precision else []  # None: the model's
        opt = parse(translate_parser(), ["-model", model, "-src", src, "-output", os.devnull,
                                         "-beam_size", str(beam_size), "-batch_size",
                                         str(batch_size), "-gpu", str(gpu), *precision_args])
        check_inference(opt, sentences)
        backend = ctranslate2_backend(opt, sources, references) if os.path.isdir(model) \
            else opennmt_backend(opt, sources, src, tgt)
        start = time.perf_counter()
        with backend as measured:
            load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            measured.warm_up(batch_size)
            warmup_seconds = time.perf_counter() - start
            start = time.perf_counter()
            scores, predictions = measured.translate(Progress("onmt_qd_eval", sentences))
            seconds = time.perf_counter() - start
            ppl = measured.perplexity()
        if output:
            write_translations(output, scores, predictions)
        hypotheses = [best[0] for best in predictions]
        bleu, chrf, bleu_sig, chrf_sig = bleu_chrf(hypotheses, references)
    result = {"model": model, "bleu": round(bleu, 2), "chrf": round(chrf, 2),
              "ppl": round(ppl, 3), "n_params": measured.n_params,
            "size_bytes": measured.size_bytes,
            "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
            "beam_size": beam_size, "batch_size": batch_size, "engine": measured.engine,
            "sentences": len(references),
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
