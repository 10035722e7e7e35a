"""onmt_qd_eval -model M -src S -tgt T [-json OUT.json]: BLEU and chrF (sacrebleu,
detokenized, with signatures), reference perplexity, parameter count and size on
disk of a checkpoint or compressed file."""
import argparse
import json
import os
import tempfile
import time

from onmt_qd.bin.common import run_command


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
    return p


def evaluate(model, src, tgt, beam_size=5, batch_size=64, gpu=-1, output=None):
    from onmt_qd.bin.translate import translate
    from onmt_qd.compressed import as_checkpoint_file
    from onmt_qd.evaluate.metrics import bleu_chrf, read_lines, reference_perplexity
    from onmt_qd.models import build_model_from_checkpoint
    from onmt_qd.opts import parse, translate_parser

    for path in (model, src, tgt):
        if not os.path.isfile(path):
            raise ValueError(f"{path} does not exist")
    references = read_lines(tgt)
    with tempfile.TemporaryDirectory(prefix="onmt_qd_eval_") as tmp, \
            as_checkpoint_file(model) as checkpoint_path:
        hyp_path = output or os.path.join(tmp, "hyp.txt")
        opt = parse(translate_parser(), ["-model", checkpoint_path, "-src", src, "-output", hyp_path,
                                         "-beam_size", str(beam_size), "-batch_size",
                                         str(batch_size), "-gpu", str(gpu), "-log_file", os.devnull])
        start = time.perf_counter()
        translate(opt)
        seconds = time.perf_counter() - start
        hypotheses = read_lines(hyp_path)
        bleu, chrf, bleu_sig, chrf_sig = bleu_chrf(hypotheses, references)
        device = "cpu" if gpu < 0 else f"cuda:{gpu}"
        net, vocabs, model_opt = build_model_from_checkpoint(checkpoint_path, device)
        ppl = reference_perplexity(net, vocabs, model_opt, src, tgt, device)
        n_params = sum(p.numel() for p in net.parameters())
    return {"model": model, "bleu": round(bleu, 2), "chrf": round(chrf, 2), "ppl": round(ppl, 3),
            "n_params": n_params, "size_bytes": os.path.getsize(model),
            "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
            "beam_size": beam_size, "sentences": len(references),
            "translate_seconds": round(seconds, 2),
            "sentences_per_second": round(len(references) / seconds, 1)}


def write_json(result, path):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(result, handle, indent=1)
    os.replace(tmp, path)


def main():
    def run():
        args = parser().parse_args()
        result = evaluate(args.model, args.src, args.tgt, args.beam_size, args.batch_size,
                          args.gpu, args.output)
        if args.json:
            write_json(result, args.json)
        print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ppl {result['ppl']:.2f}  "
              f"params {result['n_params']}  size {result['size_bytes']} bytes")
        print(f"  {result['bleu_signature']}\n  {result['chrf_signature']}")

    run_command(run, "onmt_qd_eval")


if __name__ == "__main__":
    main()
