"""How OpenNMT-py reads a training corpus, chosen from its size when the user did not
choose: its defaults suit corpora of millions of lines. A training reader fills a
bucket of -bucket_size examples (262,144 by default) before its first batch, cycling
the corpus to fill it: a 4,000-line corpus was read and tokenized 65 times per bucket,
each -num_workers worker (2 by default) doing so for its share, and no training step
came in the first 105 s. A bucket larger than a reader's share only repeats its
examples (the same sentence several times in one length-sorted batch)."""
import math

from onmt.utils.logging import logger

from onmt_qd.train.epochs import line_count, training_corpora

# below this many training lines the training process reads them itself: on 2,000 lines
# its first step came 13.8x sooner than with OpenNMT-py's two workers and bucket
# (docs/results.md, issue 36); the threshold itself is a judgment, not a measurement
SMALL_CORPUS_LINES = 100_000


def training_lines(opt) -> int:
    """Lines of the training corpora (every corpus but the validation one)."""
    return sum(line_count(corpus["path_src"]) for _, corpus in training_corpora(opt))


def choose_loading(opt, given=frozenset()):
    """For the options ``given`` does not hold (the user did not set them): -num_workers
    0 for a small corpus, -bucket_size at most one reader's share of the corpus; say so.
    A bucket the user set larger than that share is kept, with a warning: with the same
    options onmt_qd_train reads exactly as onmt_train does."""
    lines = training_lines(opt)
    if "num_workers" not in given and opt.num_workers > 0 and lines < SMALL_CORPUS_LINES:
        logger.info(f"{lines:,} training lines: reading them in this process "
                    f"(-num_workers 0, not {opt.num_workers}); set -num_workers to choose")
        opt.num_workers = 0
    readers = max(1, opt.num_workers) * max(1, opt.world_size)
    share = max(1, math.ceil(lines / readers))
    if opt.bucket_size > share and "bucket_size" in given:
        logger.warning(f"-bucket_size {opt.bucket_size:,} is more than a reader's "
                       f"{share:,} training lines: each bucket repeats the corpus before "
                       f"the first step; {share:,} would do")
    elif opt.bucket_size > share:
        logger.info(f"-bucket_size {opt.bucket_size:,} (OpenNMT-py's default) is more than "
                    f"a reader's {share:,} training lines: using {share:,} (a larger bucket "
                    "only repeats the corpus before the first step); set -bucket_size to "
                    "choose")
        opt.bucket_size = share
