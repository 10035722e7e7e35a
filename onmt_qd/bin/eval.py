"""onmt_qd_eval -model M -src S -tgt T [-json OUT.json]: BLEU and chrF (sacrebleu,
detokenized, with signatures), reference perplexity, parameter count and size on
disk of a checkpoint or compressed file. -src - (or -tgt -) reads standard input;
-json - or -output - writes standard output."""
import argparse
import json
import os
import tempfile
import time

from onmt_qd.bin.common import run_command
from onmt_qd.bin.translate import write_translations


def parser():
    p = argparse.ArgumentParser(prog="onmt_qd_eval", description=__doc__)
    p.add_argument("-model", required=True)
    p.add_argument("-src", required=True)
    p.add_argument("-tgt", required=True, help="reference translations (raw text)")
    p.add_argument("-json", default=None, help="write the results here as JSON")
    p.add_argument("-output", default=None, help="keep the translations here")
    p.add_argument("-beam_size", type=int, default=5)
    p.add_argument("-batch_size", type=int, default=64)
    p.add_argument("-gpu", type=int, default=-1)
    p.add_argument("-precision", choices=["fp32", "int8"], default="fp32",
                   help="int8: torch dynamic quantization of Linear and LSTM layers (CPU)")
    return p


def check_args(model, src, tgt, beam_size, batch_size, gpu, outputs):
    """Every check that can fail, before a model is loaded."""
    from onmt_qd.bin.translate import check_decoding
    from onmt_qd.fileio import check_input_file, check_one_stdin, check_outputs
    from onmt_qd.opts import check_devices

    check_devices([gpu], "-gpu")
    check_decoding(beam_size, batch_size)
    inputs = {"-model": model, "-src": src, "-tgt": tgt}
    for option, path in inputs.items():
        if option == "-model" and os.path.isdir(path):
            from onmt_qd.deploy.ct2 import read_manifest

            read_manifest(path)  # a CTranslate2 directory written by onmt_qd_export
        else:
            check_input_file(path, option, stdin=option != "-model")
    check_one_stdin(inputs)
    check_outputs(outputs, inputs)


def evaluate(model, src, tgt, beam_size=5, batch_size=64, gpu=-1, output=None,
             precision="fp32"):
    """Scores of ``model`` on ``src``/``tgt``; ``translate_seconds`` times the
    translation of the corpus alone, after one untimed batch of it has warmed the
    device up (model loading is ``load_seconds``, the warm-up ``warmup_seconds``)."""
    from onmt_qd.bin.translate import (_write_lines, inference_engine, non_blank,
                                       translate_aligned, warm_up)
    from onmt_qd.evaluate.metrics import reference_perplexity
    from onmt_qd.fileio import STDIN, read_text_lines
    from onmt_qd.deploy.int8 import apply_precision
    from onmt_qd.models import build_model_from_checkpoint
    from onmt_qd.opts import parse, translate_parser
    from onmt_qd.qdz import as_checkpoint_file

    check_args(model, src, tgt, beam_size, batch_size, gpu, {"-output": output})
    sources, references = read_text_lines(src, "-src"), read_text_lines(tgt, "-tgt")
    if len(sources) != len(references):
        raise ValueError(f"-src {src} has {len(sources)} lines, -tgt {tgt} "
                         f"{len(references)}: they must be parallel")
    if not non_blank(sources):
        raise ValueError(f"-src {src} has no sentence to translate: nothing to evaluate")
    if os.path.isdir(model):
        return evaluate_deployed(model, sources, references, beam_size, batch_size, gpu,
                                 output, precision)
    with as_checkpoint_file(model) as checkpoint_path, tempfile.TemporaryDirectory() as tmp:
        if src == STDIN:  # read once; the perplexity reads files
            src = _write_lines(os.path.join(tmp, "src"), sources)
        if tgt == STDIN:
            tgt = _write_lines(os.path.join(tmp, "tgt"), references)
        opt = parse(translate_parser(), ["-model", checkpoint_path, "-src", src, "-output",
                                         os.devnull, "-beam_size", str(beam_size),
                                         "-batch_size", str(batch_size), "-gpu", str(gpu),
                                         "-precision", precision, "-log_file", os.devnull])
        start = time.perf_counter()
        with inference_engine(opt, sources) as engine:
            load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            warm_up(engine, sources, batch_size)
            warmup_seconds = time.perf_counter() - start
            start = time.perf_counter()
            scores, predictions = translate_aligned(engine, sources)
            seconds = time.perf_counter() - start
        if output:
            write_translations(output, scores, predictions)
        hypotheses = [best[0] for best in predictions]
        device = "cpu" if gpu < 0 else f"cuda:{gpu}"
        net, vocabs, model_opt = build_model_from_checkpoint(checkpoint_path, device)
        apply_precision(net, precision)
        ppl = reference_perplexity(net, vocabs, model_opt, src, tgt, device)
        n_params = sum(p.numel() for p in net.parameters())
    return scores_of(model, hypotheses, references, ppl, n_params, os.path.getsize(model),
                     beam_size, (load_seconds, warmup_seconds, seconds))


def scores_of(model, hypotheses, references, ppl, n_params, size_bytes, beam_size, seconds):
    """The result every engine gives: ``seconds`` are (load, warm-up, translation)."""
    from onmt_qd.evaluate.metrics import bleu_chrf

    bleu, chrf, bleu_sig, chrf_sig = bleu_chrf(hypotheses, references)
    return {"model": model, "bleu": round(bleu, 2), "chrf": round(chrf, 2), "ppl": round(ppl, 3),
            "n_params": n_params, "size_bytes": size_bytes,
            "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
            "beam_size": beam_size, "sentences": len(references),
            "load_seconds": round(seconds[0], 2), "warmup_seconds": round(seconds[1], 2),
            "translate_seconds": round(seconds[2], 2),
            "sentences_per_second": round(len(references) / max(seconds[2], 1e-9), 1)}


def evaluate_deployed(model_dir, sources, references, beam_size, batch_size, gpu, output,
                      precision):
    """evaluate() for an onmt_qd_export directory: CTranslate2 translates, and its
    scores of the references give the perplexity."""
    from onmt_qd.deploy.ct2 import DeployedModel, directory_size

    if precision != "fp32":
        raise ValueError(f"-precision {precision} does not apply to a CTranslate2 directory "
                         f"({model_dir}): its quantization was chosen by onmt_qd_export")
    start = time.perf_counter()
    deployed = DeployedModel(model_dir, "cpu" if gpu < 0 else "cuda", max(gpu, 0))
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    deployed.translate(sources[:batch_size], beam_size, batch_size)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores, predictions = deployed.translate(sources, beam_size, batch_size)
    seconds = time.perf_counter() - start
    if output:
        write_translations(output, scores, predictions)
    return scores_of(model_dir, [best[0] for best in predictions], references,
                     deployed.perplexity(sources, references, batch_size),
                     deployed.manifest["n_params"], directory_size(model_dir), beam_size,
                     (load_seconds, warmup_seconds, seconds))


def write_json(result, path):
    from onmt_qd.fileio import open_output

    with open_output(path) as handle:
        json.dump(result, handle, indent=1)


def main():
    def run():
        from onmt_qd.fileio import check_outputs

        args = parser().parse_args()
        check_outputs({"-json": args.json, "-output": args.output},
                      {"-model": args.model, "-src": args.src, "-tgt": args.tgt})
        result = evaluate(args.model, args.src, args.tgt, args.beam_size, args.batch_size,
                          args.gpu, args.output, args.precision)
        if args.json:
            write_json(result, args.json)
        print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ppl {result['ppl']:.2f}  "
              f"params {result['n_params']}  size {result['size_bytes']} bytes")
        print(f"  {result['bleu_signature']}\n  {result['chrf_signature']}")

    run_command(run, "onmt_qd_eval")


if __name__ == "__main__":
    main()
