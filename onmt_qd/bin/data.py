"""onmt_qd_data get NAME -dest D [-from MIRROR]
   onmt_qd_data spm NAME -dest D [-vocab_size 8000]: joint SentencePiece model."""
import argparse

from onmt_qd.bin.common import run_command


def parser():
    p = argparse.ArgumentParser(prog="onmt_qd_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get", help="fetch a dataset")
    get.add_argument("name")
    get.add_argument("-dest", required=True)
    get.add_argument("-from", dest="mirror", default=None,
                     help="copy from this local folder instead of downloading")
    spm = sub.add_parser("spm", help="train a joint SentencePiece model on a fetched dataset")
    spm.add_argument("name")
    spm.add_argument("-dest", required=True, help="folder the dataset was fetched into")
    spm.add_argument("-vocab_size", type=int, default=8000)
    spm.add_argument("-model_type", default="unigram", choices=["unigram", "bpe"])
    return p


def main():
    def run():
        import os

        from onmt_qd import datasets
        from onmt_qd.fileio import created_folder

        args = parser().parse_args()
        if args.command == "get":
            with created_folder(args.dest):  # a failed fetch leaves no empty folder
                source = datasets.get(args.name, args.dest, args.mirror)
            print(f"{args.name}: {args.dest} ready (from {source})")
        else:
            src, tgt = datasets.split_files(args.name, args.dest)["train"]
            for path in (src, tgt):
                if not os.path.isfile(path):
                    raise ValueError(f"{path} does not exist: fetch the dataset first with "
                                     f"onmt_qd_data get {args.name} -dest {args.dest}")
            model = datasets.train_sentencepiece(
                [src, tgt], os.path.join(args.dest, f"spm{args.vocab_size}"),
                args.vocab_size, args.model_type)
            print(f"SentencePiece model: {model}")

    run_command(run, "onmt_qd_data")


if __name__ == "__main__":
    main()
