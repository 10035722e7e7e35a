"""onmt_qd_translate: onmt_translate, where -model may also be an onmt_qd compressed
file. Without -transforms, the model's own inference transforms (SentencePiece)
are used, so output is detokenized text."""
import contextlib

from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, translate_parser


def default_transforms(opt, checkpoint_opt):
    """Use the model's SentencePiece transform when the user named no transforms."""
    from onmt_qd.evaluate.metrics import valid_transforms

    if opt.transforms:
        return
    opt.transforms = valid_transforms(checkpoint_opt)
    for name in ("src_subword_model", "tgt_subword_model"):
        if not getattr(opt, name, None):
            setattr(opt, name, getattr(checkpoint_opt, name, None))


@contextlib.contextmanager
def translation_opts(opt):
    """opt with -model resolved to a loadable checkpoint and transforms defaulted."""
    from onmt_qd.compat import load_checkpoint
    from onmt_qd.compressed import as_checkpoint_file

    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(as_checkpoint_file(m)) for m in opt.models]
        default_transforms(opt, load_checkpoint(paths[0])["opt"])
        opt.models = paths
        yield opt


def translate(opt):
    from onmt.bin.translate import translate as onmt_translate

    from onmt_qd.compat import use_contiguous_rnn_decoders

    use_contiguous_rnn_decoders()  # beam search on cuDNN needs a contiguous state
    with translation_opts(opt):
        onmt_translate(opt)


def main():
    run_command(lambda: translate(parse(translate_parser())), "onmt_qd_translate")


if __name__ == "__main__":
    main()
