"""onmt_qd_data: fetch a dataset, train its SentencePiece model (options:
opts.data_parser)."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import data_parser, parse


def main():
    def run():
        from onmt_qd import datasets
        from onmt_qd.fileio import created_folder

        args = parse(data_parser())
        if args.command == "get":
            with created_folder(args.dest):  # a failed fetch leaves no empty folder
                source = datasets.get(args.name, args.dest, args.mirror)
            print(f"{args.name}: {args.dest} ready (from {source})")
        else:
            model = datasets.sentencepiece(args.name, args.dest, args.vocab_size,
                                           args.model_type)
            print(f"SentencePiece model: {model}")

    run_command(run, "onmt_qd_data")


if __name__ == "__main__":
    main()
