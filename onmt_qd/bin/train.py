import sys

from onmt_qd.bin.common import run_command
from onmt_qd.opts import given_options, parse, train_parser


def main():
    def run():
        from onmt_qd.train.trainer import train

        parser, args = train_parser(), sys.argv[1:]
        opt = parse(parser, args)
        train(opt, given_options(parser, args))

    run_command(run, "onmt_qd_train")


if __name__ == "__main__":
    main()
