"""onmt_qd_translate: onmt_translate, where -model may also be an onmt_qd compressed
file or an onmt_qd_export directory (translated by CTranslate2). Without -transforms,
the model's own inference transforms (SentencePiece) are used, so output is
detokenized text. Every source line gives -n_best output lines, in order; a blank
source line gives empty ones (onmt_translate drops blank lines, so its output no
longer lines up with the source). -src - reads standard input; -output - (or
/dev/stdout) writes standard output."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, translate_parser


def main():
    def run():
        from onmt_qd.inference.engine import translate

        translate(parse(translate_parser()))

    run_command(run, "onmt_qd_translate")


if __name__ == "__main__":
    main()
