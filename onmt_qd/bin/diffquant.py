"""onmt_qd_diffquant -config DATA.yaml -model FP.pt -teacher_model T.pt -bits B
-bucket_size K -output OUT.pt: learn the quantization points of a trained model
(differentiable quantization) against a teacher; OUT.pt loads in stock translation
and compresses with onmt_qd_compress."""
from onmt.opts import train_opts
from onmt.utils.parse import ArgumentParser

from onmt_qd.bin.common import run_command
from onmt_qd.opts import distill_opts, parse, policy_opts, policy_from_opts, validate_distill_opts
from onmt_qd.quant import QUANTIZERS


def parser():
    # -bucket_size is the quantization bucket here, as in onmt_qd_quantize; the data
    # loader's bucket (OpenNMT-py's -bucket_size) is set from -data_bucket_size.
    p = ArgumentParser(description=__doc__, conflict_handler="resolve")
    train_opts(p)
    distill_opts(p)
    policy_opts(p, "")
    group = p.add_argument_group("Differentiable quantization")
    group.add("-model", "--model", required=True, help="trained full-precision checkpoint")
    group.add("-output", "--output", required=True, help="quantized checkpoint to write")
    group.add("-init", "--init", choices=QUANTIZERS, default="quantile",
              help="initial points of every tensor (a quantization method's points)")
    group.add("-redistribute", "--redistribute", choices=["none", "points", "bits"],
              default="bits", help="bits across tensors by gradient norm: 'points' is the "
              "2017 rule (conserve the number of points), 'bits' a budget in total bits "
              "weighted by tensor size (-avg_bits, default -bits)")
    group.add("-avg_bits", "--avg_bits", type=float, default=None,
              help="average bits per quantized weight for -redistribute bits")
    group.add("-grad_norm_batches", "--grad_norm_batches", type=int, default=10,
              help="batches over which gradient norms are averaged")
    group.add("-data_bucket_size", "--data_bucket_size", type=int, default=10000,
              help="examples the data loader sorts at a time")
    p.set_defaults(train_steps=300, valid_steps=100, optim="adam", learning_rate=1e-3,
                   report_every=50, num_workers=0, save_model="unused")
    return p


def main():
    def run():
        from onmt_qd.fileio import check_outputs
        from onmt_qd.quant.quantizer import MAX_BITS
        from onmt_qd.train import diffquant

        opt = parse(parser())
        opt.quant_method = opt.init
        opt.bucket_size = opt.data_bucket_size
        if not opt.teacher_model:
            raise ValueError("-teacher_model is required: points are learned with the "
                             "distillation loss against the live teacher" +
                             (" (a teacher cache is for onmt_qd_train)"
                              if opt.teacher_cache else ""))
        if opt.grad_norm_batches < 1:
            raise ValueError(f"-grad_norm_batches must be at least 1, got "
                             f"{opt.grad_norm_batches}")
        if opt.avg_bits is not None and opt.avg_bits > MAX_BITS:
            # (allocate_bits would fill every tensor to 8 bits, under the budget asked)
            raise ValueError(f"-avg_bits {opt.avg_bits} is more than the {MAX_BITS}-bit "
                             "maximum for each quantized weight")
        validate_distill_opts(opt)
        policy = policy_from_opts(opt)
        if policy is None:
            raise ValueError("-bits is required (1 to 8)")
        check_outputs({"-output": opt.output},
                      {"-model": opt.model, "-teacher_model": opt.teacher_model})
        diffquant.run(opt, policy)

    run_command(run, "onmt_qd_diffquant")


if __name__ == "__main__":
    main()
