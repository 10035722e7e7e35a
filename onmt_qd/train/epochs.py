"""-epochs: the steps of one epoch, counted from the training corpus as OpenNMT-py's
iterator batches it, so that validation, checkpoints and the learning-rate rule fall
on epoch boundaries."""
import itertools
import math

import yaml
from onmt.constants import CorpusTask
from onmt.utils.logging import logger

REPORTS_PER_EPOCH = 10  # training's log says where it is at least this often an epoch


def training_corpora(opt):
    """(name, corpus) of every training corpus of the data options (not the validation
    one), whether OpenNMT-py has parsed its YAML text yet or not."""
    corpora = yaml.safe_load(opt.data) if isinstance(opt.data, str) else opt.data
    return [(name, corpus) for name, corpus in corpora.items() if name != CorpusTask.VALID]


def line_count(path):
    """Lines as OpenNMT-py's corpus reader splits them (bytes, on "\\n")."""
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def corpus_units(opt):
    """What one pass over the training corpora holds in OpenNMT-py's batching units:
    sentences, or for token batches the sum over examples of max(source length,
    target length + 2) as its batcher counts them (pieces when the corpus goes through
    sentencepiece, BOS and EOS on the target). Padding to the longest example of each
    batch is not counted: a real pass takes up to a fifth more token batches."""
    units = 0
    for _, corpus in training_corpora(opt):
        if opt.batch_type == "sents":
            units += line_count(corpus["path_tgt"])
            continue
        pieces = "sentencepiece" in (corpus.get("transforms") or opt.transforms or [])
        src = line_lengths(corpus["path_src"], opt.src_subword_model if pieces else None)
        tgt = line_lengths(corpus["path_tgt"], opt.tgt_subword_model if pieces else None)
        units += sum(max(s, t + 2) for s, t in zip(src, tgt))
    return units


def line_lengths(path, sentencepiece_model=None, chunk=20000):
    """Tokens per line: sentencepiece pieces when a model is given, else words."""
    encode = None
    if sentencepiece_model:
        import sentencepiece

        encode = sentencepiece.SentencePieceProcessor(model_file=sentencepiece_model).encode
    with open(path, encoding="utf-8", newline="\n") as handle:
        while lines := [line.rstrip("\n") for line in itertools.islice(handle, chunk)]:
            yield from (map(len, encode(lines)) if encode else
                        (len(line.split()) for line in lines))


def steps_per_epoch(opt):
    per_step = opt.batch_size * opt.accum_count[0] * max(1, opt.world_size)
    return max(1, math.ceil(corpus_units(opt) / per_step))


def apply_epochs(opt):
    """-epochs N: validate and save once per epoch, stop after N epochs. -single_pass
    is one epoch (OpenNMT-py 3.5.1 sets -train_steps 0 for it, and its training
    iterator starts the corpus again forever)."""
    if opt.single_pass:
        opt.epochs = 1
    if not opt.epochs:
        return
    steps = steps_per_epoch(opt)
    opt.valid_steps = opt.save_checkpoint_steps = steps
    opt.train_steps = opt.epochs * steps
    logger.info(f"{steps} steps per epoch; training {opt.epochs} epochs = {opt.train_steps} steps")
    report = max(1, steps // REPORTS_PER_EPOCH)
    if opt.report_every > report:  # an epoch of 32 steps logged nothing at every 50
        logger.info(f"-report_every {opt.report_every} is more than an epoch's steps / "
                    f"{REPORTS_PER_EPOCH}: reporting every {report} steps, so that progress "
                    "moves within each epoch")
        opt.report_every = report
