"""onmt_qd_diffquant: differentiable quantization (options: opts.diffquant_parser)."""
from onmt_qd.bin.common import run_command
from onmt_qd.distill.rules import check_distill_opts
from onmt_qd.opts import diffquant_parser, parse, policy_from_opts


def main():
    def run():
        from onmt_qd.fileio import check_outputs
        from onmt_qd.quant import MAX_BITS
        from onmt_qd.quant_checkpoint import check_checkpoint_output
        from onmt_qd.train import diffquant

        opt = parse(diffquant_parser())
        opt.quant_method = opt.init
        opt.bucket_size = opt.data_bucket_size
        check_distill_opts(opt, "points are learned with the distillation loss against the "
                           "live teacher" + (" (a teacher cache is for onmt_qd_train)"
                                             if opt.teacher_cache else ""))
        if opt.grad_norm_batches < 1:
            raise ValueError(f"-grad_norm_batches must be at least 1, got "
                             f"{opt.grad_norm_batches}")
        if opt.avg_bits is not None and opt.avg_bits > MAX_BITS:
            # (allocate_bits would fill every tensor to 8 bits, under the budget asked)
            raise ValueError(f"-avg_bits {opt.avg_bits} is more than the {MAX_BITS}-bit "
                             "maximum for each quantized weight")
        policy = policy_from_opts(opt, prefix="")
        check_checkpoint_output(opt.output, "onmt_qd_diffquant")
        check_outputs({"-output": opt.output},
                      {"-model": opt.model, "-teacher_model": opt.teacher_model})
        diffquant.run(opt, policy)

    run_command(run, "onmt_qd_diffquant")


if __name__ == "__main__":
    main()
