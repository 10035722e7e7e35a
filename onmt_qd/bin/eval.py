"""onmt_qd_eval -model M -src S -tgt T [-json OUT.json]: BLEU and chrF (sacrebleu,
detokenized, with signatures), reference perplexity, parameter count and size on
disk of a checkpoint or compressed file. -src - (or -tgt -) reads standard input;
-json - or -output - writes standard output."""
import argparse

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


def main():
    def run():
        from onmt_qd.inference.evaluate import evaluate

        args = parser().parse_args()
        result = evaluate(args.model, args.src, args.tgt, args.beam_size, args.batch_size,
                          args.gpu, args.output, args.json)
        print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ppl {result['ppl']:.2f}  "
              f"params {result['n_params']}  size {result['size_bytes']} bytes")
        print(f"  {result['bleu_signature']}\n  {result['chrf_signature']}")

    run_command(run, "onmt_qd_eval")


if __name__ == "__main__":
    main()
