"""onmt_qd_teacher_cache: run the teacher once, teacher-forced, over the training corpora
as onmt_qd_train reads them (same transforms and vocabulary) and write its top-K
distribution per target position (format: onmt_qd.distill.cache)."""
import copy
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F
from onmt.constants import CorpusTask
from onmt.inputters import build_vocab
from onmt.inputters.dynamic_iterator import DynamicDatasetIter
from onmt.inputters.text_corpus import get_corpora
from onmt.transforms import get_specials, get_transforms_cls, make_transforms
from onmt.utils.logging import logger
from onmt.utils.parse import ArgumentParser

from onmt_qd.distill.cache import (FORMAT, VERSION, CacheWriter, NotACacheError, TeacherCache,
                                   check_deterministic, data_fingerprint, file_digest,
                                   first_difference, source_checksum)
from onmt_qd.distill.teacher import load_teacher, teacher_forced_logits
from onmt_qd.fileio import remove_stale_temporaries, temporary_name
from onmt_qd.distill.rules import DEFAULT_TOPK, check_teacher_model, check_topk
from onmt_qd.progress import Progress


def one_pass_batches(opt, transforms_cls, vocabs, device):
    """Every example of every training corpus once, in length-sorted batches, through
    OpenNMT-py's own reader, transforms and numericalization (tagged with corpus and
    line like training batches). The training corpora are read as a validation set is:
    a training iterator would repeat them forever, shuffle, and drop duplicate sources."""
    one_pass = copy.copy(opt)
    one_pass.valid_batch_size = opt.batch_size  # what from_opt batches a VALID task by
    one_pass.data = {name: dict(corpus, weight=1) for name, corpus in opt.data.items()}
    iterator = DynamicDatasetIter.from_opt(
        get_corpora(opt, CorpusTask.TRAIN), make_transforms(opt, transforms_cls, vocabs),
        vocabs, one_pass, CorpusTask.VALID, copy=False, device=device)
    iterator.num_workers = 0  # build_dynamic_dataset_iter's branch without workers
    iterator._init_datasets(0)
    for batch, _ in iterator:
        yield batch


def topk_rows(logits, topk):
    """(top-K ids, their log-probabilities, log of the mass of all other tokens)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    values, ids = logp.topk(topk, dim=-1)
    rest = logp.scatter_(1, ids, -float("inf")).logsumexp(-1)
    return ids, values, rest


def header_of(opt, vocabs, topk):
    return {"format": FORMAT, "version": VERSION, "topk": topk,
            "vocab_size": len(vocabs["tgt"]), "teacher_sha256": file_digest(opt.teacher_model)[0],
            "fingerprint": data_fingerprint(opt, vocabs)}


def check_existing(path, header):
    """True when ``path`` already holds this very cache, undamaged; raise when it holds
    another, an outdated or a damaged one."""
    try:
        cache = TeacherCache(path)
    except NotACacheError:
        raise ValueError(f"{path} exists and is not a teacher cache: remove it or choose "
                         "another -output") from None
    mine = {k: header[k] for k in ("topk", "teacher_sha256", "fingerprint")}
    theirs = {k: cache.header.get(k) for k in mine}
    difference = first_difference(theirs, mine)
    if difference:
        raise ValueError(f"{path} already holds a teacher cache of something else ({difference}): "
                         "remove it or choose another -output")
    cache.verify()
    return True


def verify_teacher_cache(path):
    """onmt_qd_teacher_cache -verify CACHE: every block against its checksum; returns
    the number of blocks."""
    blocks = TeacherCache(path).verify()
    logger.info(f"teacher cache {path}: all {blocks} blocks match their checksums")
    return blocks


def build_teacher_cache(opt):
    """Write the cache to opt.output (under a temporary name, renamed when complete);
    returns the number of rows written, 0 when an identical cache is already there."""
    check_teacher_model(opt.teacher_model, "the checkpoint whose outputs to cache")
    if not opt.output:
        raise ValueError("-output is required: the cache folder to write")
    opt.output = os.path.normpath(opt.output)  # "CACHE/": temporaries beside it, not inside
    topk = DEFAULT_TOPK if opt.topk is None else opt.topk
    ArgumentParser.validate_prepare_opts(opt)
    check_deterministic(opt)
    transforms_cls = get_transforms_cls(opt._all_transform)
    vocabs = build_vocab(opt, get_specials(opt, transforms_cls))
    check_topk(topk, vocabulary=len(vocabs["tgt"]))
    header = header_of(opt, vocabs, topk)
    remove_stale_temporaries(opt.output)  # the folders of builds that were killed
    if os.path.exists(opt.output) and check_existing(opt.output, header):
        logger.info(f"{opt.output} already holds this teacher cache; nothing to do")
        return 0
    device = torch.device(f"cuda:{opt.gpu_ranks[0]}" if opt.gpu_ranks else "cpu")
    teacher = load_teacher(opt.teacher_model, vocabs, device, other="-config's")
    corpus_lines = {name: c["lines"] for name, c in header["fingerprint"]["corpora"].items()}
    progress = Progress("onmt_qd_teacher_cache", sum(corpus_lines.values()),
                        "sentences through the teacher")
    tmp = temporary_name(opt.output)
    try:
        writer = CacheWriter(tmp, corpus_lines, topk, len(vocabs["tgt"]))
        for batch in one_pass_batches(opt, transforms_cls, vocabs, device):
            with torch.inference_mode():
                ids, logp, rest = topk_rows(teacher_forced_logits(teacher, batch), topk)
            lengths = batch["tgtlen"] - 1
            width = batch["tgt"].size(1) - 1
            real = (torch.arange(width, device=device).unsqueeze(0) < lengths.unsqueeze(1)).view(-1)
            rows = {"ids": ids[real], "logp": logp[real], "rest": rest[real],
                    "gold": batch["tgt"][:, 1:, 0].reshape(-1)[real]}
            checksums = source_checksum(batch["src"][:, :, 0], batch["srclen"])
            writer.add(batch["cid"], np.asarray(batch["cid_line_number"], dtype=np.int64),
                       checksums.cpu().numpy(), lengths.cpu().numpy(),
                       {k: v.cpu().numpy() for k, v in rows.items()})
            progress.advance(len(lengths))
        writer.finish(header)
        os.replace(tmp, opt.output)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    logger.info(f"wrote {opt.output}: {writer.sentences:,} sentences, {writer.rows:,} target "
                f"positions, top {topk}")
    return writer.rows
