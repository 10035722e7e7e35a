"""onmt_qd_diffquant: differentiable quantization (options: opts.diffquant_parser)."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import diffquant_parser, parse


def main():
    def run():
        from onmt_qd.train import diffquant

        opt = parse(diffquant_parser())
        diffquant.run(opt, diffquant.check_opts(opt))

    run_command(run, "onmt_qd_diffquant")


if __name__ == "__main__":
    main()
