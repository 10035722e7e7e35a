from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, train_parser


def main():
    def run():
        from onmt_qd.train.trainer import train

        train(parse(train_parser()))

    run_command(run, "onmt_qd_train")


if __name__ == "__main__":
    main()
