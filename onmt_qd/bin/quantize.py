"""onmt_qd_quantize: post-training quantization (options: opts.quantize_parser)."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, policy_from_opts, quantize_parser


def main():
    def run():
        from onmt_qd.compat import save_atomic
        from onmt_qd.fileio import check_input_file, check_outputs
        from onmt_qd.qdz import load_any
        from onmt_qd.quant_checkpoint import (QUANT_KEY, check_checkpoint_output,
                                              quantize_checkpoint, requantization_note)

        opt = parse(quantize_parser())
        policy = policy_from_opts(opt, prefix="")
        check_input_file(opt.model, "-model")
        check_checkpoint_output(opt.output, "onmt_qd_quantize")
        check_outputs({"-output": opt.output}, {"-model": opt.model})
        checkpoint = load_any(opt.model)
        note = requantization_note(checkpoint, opt.model)
        if note:
            print(note)
        checkpoint = quantize_checkpoint(checkpoint, policy, opt.seed, opt.model)
        save_atomic(checkpoint, opt.output)
        print(f"{opt.output}: {len(checkpoint[QUANT_KEY]['tensors'])} tensors quantized to "
              f"{policy.bits} bits (bucket {policy.bucket_size}, {policy.method}, "
              f"{policy.rounding} rounding)")

    run_command(run, "onmt_qd_quantize")


if __name__ == "__main__":
    main()
