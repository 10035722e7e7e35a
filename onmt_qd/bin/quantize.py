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
    p.add("-seed", "--seed", type=int, default=0,
          help="seed of -rounding stochastic (the same seed gives the same weights)")
    policy_opts(p, "")
    return p


def requantization_note(checkpoint, path):
    """One line saying where re-quantizing an already quantized model starts from."""
    from onmt_qd.quant_checkpoint import QUANT_KEY, SHADOW_KEY

    if QUANT_KEY not in checkpoint:
        return None
    bits = checkpoint[QUANT_KEY]["policy"]["bits"]
    source = ("its full-precision shadow weights" if SHADOW_KEY in checkpoint else
              f"its {bits}-bit values (it keeps no full-precision weights)")
    return f"{path} is already quantized ({bits} bits): quantizing again from {source}"


def check_model_output(path):
    """The output is an OpenNMT-py checkpoint: not under the compressed file's name."""
    if path.lower().endswith(".qdz"):
        raise ValueError(f"-output {path}: onmt_qd_quantize writes an OpenNMT-py checkpoint "
                         "(.pt), not a compressed .qdz; write OUT.pt, then onmt_qd_compress "
                         f"-model OUT.pt -output {path}")


def main():
    def run():
        from onmt_qd.compat import save_atomic
        from onmt_qd.fileio import check_input_file, check_not_stdout, check_outputs
        from onmt_qd.qdz import load_any
        from onmt_qd.quant_checkpoint import quantize_checkpoint

        opt = parse(parser())
        policy = policy_from_opts(opt)
        if policy is None:
            raise ValueError("-bits is required (1 to 8)" if opt.quant_bits is None else
                             f"-bits must be 1 to 8, got {opt.quant_bits}")
        check_input_file(opt.model, "-model")
        check_model_output(opt.output)
        check_not_stdout("-output", opt.output, "a model")
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
