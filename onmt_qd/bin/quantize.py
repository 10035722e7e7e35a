"""onmt_qd_quantize: post-training quantization (options: opts.quantize_parser)."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, policy_from_opts, quantize_parser


def requantization_note(checkpoint, path):
    """One line saying where re-quantizing an already quantized model starts from."""
    from onmt_qd.quant_checkpoint import QUANT_KEY, SHADOW_KEY

    if QUANT_KEY not in checkpoint:
        return None
    bits = checkpoint[QUANT_KEY]["policy"]["bits"]
    source = ("its full-precision shadow weights" if SHADOW_KEY in checkpoint else
              f"its {bits}-bit values (it keeps no full-precision weights)")
    return f"{path} is already quantized ({bits} bits): quantizing again from {source}"


def main():
    def run():
        from onmt_qd.compat import save_atomic
        from onmt_qd.fileio import check_input_file, check_outputs
        from onmt_qd.qdz import load_any
        from onmt_qd.quant_checkpoint import check_checkpoint_output, quantize_checkpoint

        opt = parse(quantize_parser())
        policy = policy_from_opts(opt, prefix="")
        check_input_file(opt.model, "-model")
        check_checkpoint_output(opt.output, "onmt_qd_quantize")
        check_outputs({"-output": opt.output}, {"-model": opt.model})
        checkpoint = load_any(opt.model)
        note = requantization_note(checkpoint, opt.model)
        if note:
            print(note)
        checkpoint = quantize_checkpoint(checkpoint, policy, opt.seed)
        n = len(checkpoint["qd_quant"]["tensors"])
        if not n:
            raise ValueError(f"the policy leaves no tensor of {opt.model} to quantize "
                             "(see -exclude and -skip_*): nothing written")
        save_atomic(checkpoint, opt.output)
        print(f"{opt.output}: {n} tensors quantized to {policy.bits} bits "
              f"(bucket {policy.bucket_size}, {policy.method}, {policy.rounding} rounding)")

    run_command(run, "onmt_qd_quantize")


if __name__ == "__main__":
    main()
