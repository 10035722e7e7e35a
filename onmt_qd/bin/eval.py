"""onmt_qd_eval -model M -src S [S2 ...] -tgt T [T2 ...] [-json OUT.json]: BLEU and
chrF (sacrebleu, detokenized, with signatures), reference perplexity, parameter count
and size on disk of a checkpoint, compressed file or onmt_qd_export directory; several
test sets are each translated alone and also pooled. -src - (or -tgt -) reads standard
input; -json - or -output - writes standard output."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import eval_parser, parse


def main():
    def run():
        from onmt_qd.inference.evaluate import evaluate

        args = parse(eval_parser())
        result = evaluate(args.model, args.src, args.tgt, args.beam_size, args.batch_size,
                          args.gpu, args.output, args.json, args.precision,
                          {"src_subword_model": args.src_subword_model,
                           "tgt_subword_model": args.tgt_subword_model})
        print(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ppl {result['ppl']:.2f}  "
              f"params {result['n_params']}  size {result['size_bytes']} bytes")
        if len(result["test_sets"]) > 1:
            for one in result["test_sets"]:
                print(f"  {one['src']}: BLEU {one['bleu']:.2f}  chrF {one['chrf']:.2f}")
        print(f"  {result['bleu_signature']}\n  {result['chrf_signature']}")

    run_command(run, "onmt_qd_eval")


if __name__ == "__main__":
    main()
