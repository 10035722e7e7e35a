"""onmt_qd_quantize -model IN.pt -bits B -bucket_size K [-method uniform|quantile]
[policy switches] -output OUT.pt: post-training ("PM") quantization of any
OpenNMT-py checkpoint. OUT.pt loads in stock OpenNMT-py translation."""
from onmt.utils.parse import ArgumentParser

from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, policy_from_opts, policy_opts


def parser():
    p = ArgumentParser(description=__doc__)
    p.add("-model", "--model", required=True, help="checkpoint to quantize")
    p.add("-output", "--output", required=True, help="quantized checkpoint to write")
    policy_opts(p, "")
    return p


def main():
    def run():
        from onmt_qd.compat import load_checkpoint, save_atomic
        from onmt_qd.quantized import quantize_checkpoint

        opt = parse(parser())
        policy = policy_from_opts(opt)
        if policy is None:
            raise ValueError("-bits is required (1 to 8)")
        checkpoint = quantize_checkpoint(load_checkpoint(opt.model), policy)
        save_atomic(checkpoint, opt.output)
        n = len(checkpoint["qd_quant"]["tensors"])
        print(f"{opt.output}: {n} tensors quantized to {policy.bits} bits "
              f"(bucket {policy.bucket_size}, {policy.method})")

    run_command(run, "onmt_qd_quantize")


if __name__ == "__main__":
    main()
