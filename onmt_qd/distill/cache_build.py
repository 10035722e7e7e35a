"""onmt_qd_teacher_cache: run the teacher once, teacher-forced, over the training corpora
as onmt_qd_train reads them (same transforms and vocabulary) and write its top-K
distribution per target position (format: onmt_qd.distill.cache)."""
from __future__ import annotations

import copy
import functools
import hashlib
import os
import shutil
from argparse import Namespace
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from onmt.constants import CorpusTask
from onmt.inputters import build_vocab
from onmt.inputters.dynamic_iterator import DynamicDatasetIter
from onmt.inputters.text_corpus import get_corpora
from onmt.transforms import get_specials, get_transforms_cls, make_transforms
from onmt.utils.logging import logger
from onmt.utils.parse import ArgumentParser

from onmt_qd.distill.cache import (FORMAT, ROW_ARRAYS, VERSION, CacheWriter, Json,
                                   NotACacheError, TeacherCache, Vocabs, check_deterministic,
                                   corpus_bases, data_fingerprint, file_digest,
                                   first_difference, index_positions, row_dtypes,
                                   source_checksum)
from onmt_qd.distill.loss import Batch
from onmt_qd.distill.teacher import load_teacher, teacher_forced_logits
from onmt_qd.fileio import check_corpora_no_bom, remove_stale_temporaries, temporary_name
from onmt_qd.constants import DEFAULT_TOPK
from onmt_qd.distill.rules import check_teacher_model, check_topk, teacher_paths
from onmt_qd.opts import OptionError
from onmt_qd.progress import Progress
from onmt_qd.processes import check_cpu_backend, run_processes

if TYPE_CHECKING:  # OpenNMT-py has no type information: to mypy these are Any, named
    from onmt.models import NMTModel
    from onmt.transforms import Transform

# What teacher_rows gives per batch: corpus ids, line numbers, source checksums, row
# counts, and the rows (ids, logp, rest, gold) of all its sentences.
TeacherRows = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]


def one_pass_batches(opt: Namespace, transforms_cls: dict[str, type[Transform]], vocabs: Vocabs,
                     device: torch.device) -> Iterator[Batch]:
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


def topk_rows(logits: torch.Tensor, topk: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-K ids, their log-probabilities, log of the mass of all other tokens)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    values, ids = logp.topk(topk, dim=-1)
    rest = logp.scatter_(1, ids, -float("inf")).logsumexp(-1)
    return ids, values, rest


def header_of(opt: Namespace, vocabs: Vocabs, topk: int) -> Json:
    return {"format": FORMAT, "version": VERSION, "topk": topk,
            "vocab_size": len(vocabs["tgt"]),
            "teacher_sha256": teacher_digest(opt.teacher_model),
            "fingerprint": data_fingerprint(opt, vocabs)}


def teacher_digest(teacher_model: str | list[str]) -> str:
    """SHA-256 of the teacher's file (a CTranslate2 directory's model.bin); of an
    ensemble, of its members' digests in order."""
    digests = [file_digest(os.path.join(path, "model.bin") if os.path.isdir(path) else path)[0]
               for path in teacher_paths(teacher_model)]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


def check_existing(path: str, header: Json) -> bool:
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


def verify_teacher_cache(path: str) -> int:
    """onmt_qd_teacher_cache -verify CACHE: every block against its checksum; returns
    the number of blocks."""
    blocks = TeacherCache(path).verify()
    logger.info(f"teacher cache {path}: all {blocks} blocks match their checksums")
    return blocks


def check_processes(opt: Namespace) -> None:
    """Refuse a parallel build its processes cannot run: CPU processes without gloo, or
    GPUs not one per process (the build runs on one machine)."""
    check_cpu_backend(opt, "builds the cache")
    check_corpora_no_bom(opt.data)
    if opt.world_size > 1 and opt.gpu_ranks and len(opt.gpu_ranks) != opt.world_size:
        raise OptionError(f"-world_size {opt.world_size} with -gpu_ranks "
                          f"{' '.join(map(str, opt.gpu_ranks))}: the cache is built on one "
                          "machine, one process per GPU; give -gpu_ranks 0 .. "
                          f"{opt.world_size - 1} (or drop -gpu_ranks for CPU processes)")
    if opt.cpu_ranks and sorted(opt.cpu_ranks) != list(range(opt.world_size)):
        raise OptionError(f"-cpu_ranks {' '.join(map(str, opt.cpu_ranks))}: the cache is "
                          "built on one machine, which runs every rank; drop -cpu_ranks")


def teacher_rows(opt: Namespace, transforms_cls: dict[str, type[Transform]], vocabs: Vocabs,
                 teacher: NMTModel, device: torch.device, topk: int,
                 shard: tuple[int, int] = (0, 1)) -> Iterator[TeacherRows]:
    """(cids, lines, source checksums, lengths, rows) of each batch of one_pass_batches
    whose number is congruent to ``shard`` = (rank, processes): a parallel build splits
    the very batches a single process makes (the same padding, hence the same values)."""
    rank, processes = shard
    for number, batch in enumerate(one_pass_batches(opt, transforms_cls, vocabs, device)):
        if number % processes != rank:
            continue
        with torch.inference_mode():
            ids, logp, rest = topk_rows(teacher_forced_logits(teacher, batch), topk)
        lengths = batch["tgtlen"] - 1
        width = batch["tgt"].size(1) - 1
        real = (torch.arange(width, device=device).unsqueeze(0) < lengths.unsqueeze(1)).view(-1)
        rows = {"ids": ids[real], "logp": logp[real], "rest": rest[real],
                "gold": batch["tgt"][:, 1:, 0].reshape(-1)[real]}
        checksums = source_checksum(batch["src"][:, :, 0], batch["srclen"])
        yield (batch["cid"], np.asarray(batch["cid_line_number"], dtype=np.int64),
               checksums.cpu().numpy(), lengths.cpu().numpy(),
               {k: v.cpu().numpy() for k, v in rows.items()})


PART_SENTENCE = np.dtype([("position", "<i8"), ("length", "<i4"), ("checksum", "<i8")])
PART_FILES = (*ROW_ARRAYS, "sentences", "batches")


def part_folder(parts: str, rank: int) -> str:
    return os.path.join(parts, f"part-{rank}")


def build_part(opt: Namespace, device_id: int, parts: str, header: Json) -> None:
    """One process of a parallel build (spawned_train's process function): its batches'
    rows, sentences (index position, rows, checksum) and sentences per batch, appended
    in the order made to PARTS/part-RANK."""
    rank, processes = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu" if device_id < 0 else f"cuda:{device_id}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    transforms_cls = get_transforms_cls(opt._all_transform)
    vocabs = build_vocab(opt, get_specials(opt, transforms_cls))
    teacher = load_teacher(opt.teacher_model, vocabs, device, other="-config's")
    corpus_lines = {name: c["lines"] for name, c in header["fingerprint"]["corpora"].items()}
    bases, dtypes = corpus_bases(corpus_lines), row_dtypes(header["vocab_size"])
    progress = Progress(f"onmt_qd_teacher_cache (rank 0 of {processes})",
                        -(-sum(corpus_lines.values()) // processes),
                        "sentences through the teacher") if rank == 0 else None
    folder = part_folder(parts, rank)
    os.makedirs(folder)
    files = {name: open(os.path.join(folder, f"{name}.bin"), "wb") for name in PART_FILES}
    for cids, lines, checksums, lengths, rows in teacher_rows(
            opt, transforms_cls, vocabs, teacher, device, header["topk"], (rank, processes)):
        sentences = np.empty(len(lengths), PART_SENTENCE)
        sentences["position"] = index_positions(bases, cids, lines)
        sentences["length"], sentences["checksum"] = lengths, checksums
        sentences.tofile(files["sentences"])
        np.array([len(lengths)], "<i8").tofile(files["batches"])
        for name in ROW_ARRAYS:
            np.ascontiguousarray(rows[name], dtype=dtypes[name]).tofile(files[name])
        if progress:
            progress.advance(len(lengths))
    for handle in files.values():
        handle.close()


def read_part(folder: str, name: str, dtype: np.dtype, width: int | None = None) -> np.ndarray:
    """A part's file as a read-only array (memory-mapped unless empty)."""
    path = os.path.join(folder, f"{name}.bin")
    rows = os.path.getsize(path) // (dtype.itemsize * (width or 1))
    shape = (rows, width) if width else (rows,)
    return np.memmap(path, dtype, "r", shape=shape) if rows else np.zeros(shape, dtype)


def merge_parts(parts: str, processes: int, writer: CacheWriter) -> None:
    """Write the parts' rows in the order one process makes them: batch i is batch
    i // processes of part i % processes."""
    shares: list[dict[str, Any]] = []  # per part: its arrays and how far they are read
    for rank in range(processes):
        folder = part_folder(parts, rank)
        shares.append({
            "batches": read_part(folder, "batches", np.dtype("<i8")),
            "sentences": read_part(folder, "sentences", PART_SENTENCE),
            "rows": {name: read_part(folder, name, np.dtype(writer.dtypes[name]),
                                     writer.topk if name in ("ids", "logp") else None)
                     for name in ROW_ARRAYS},
            "sentence": 0, "row": 0})
    for number in range(sum(len(share["batches"]) for share in shares)):
        share = shares[number % processes]
        first = share["sentence"]
        sentences = share["sentences"][first:first + share["batches"][number // processes]]
        start, end = share["row"], share["row"] + int(sentences["length"].sum())
        writer.add_at(sentences["position"], sentences["checksum"], sentences["length"],
                      {name: rows[start:end] for name, rows in share["rows"].items()})
        share["sentence"], share["row"] = first + len(sentences), end


def build_teacher_cache(opt: Namespace) -> int:
    """Write the cache to opt.output (under a temporary name, renamed when complete),
    in one process or, with -world_size N, N (the same bytes); returns the number of
    rows written, 0 when an identical cache is already there."""
    check_teacher_model(opt.teacher_model, "the teacher whose outputs to cache")
    if not opt.output:
        raise ValueError("-output is required: the cache folder to write")
    opt.output = os.path.normpath(opt.output)  # "CACHE/": temporaries beside it, not inside
    topk = DEFAULT_TOPK if opt.topk is None else opt.topk
    check_processes(opt)
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
    corpus_lines = {name: c["lines"] for name, c in header["fingerprint"]["corpora"].items()}
    tmp, parts = temporary_name(opt.output), temporary_name(f"{opt.output}.parts")
    try:
        writer = CacheWriter(tmp, corpus_lines, topk, len(vocabs["tgt"]))
        if opt.world_size > 1:
            run_processes(functools.partial(build_part, parts=parts, header=header), opt,
                          "teacher cache build", f"{opt.output} was not written")
            merge_parts(parts, opt.world_size, writer)
        else:
            device = torch.device(f"cuda:{opt.gpu_ranks[0]}" if opt.gpu_ranks else "cpu")
            teacher = load_teacher(opt.teacher_model, vocabs, device, other="-config's")
            progress = Progress("onmt_qd_teacher_cache", sum(corpus_lines.values()),
                                "sentences through the teacher")
            for cids, lines, checksums, lengths, rows in teacher_rows(
                    opt, transforms_cls, vocabs, teacher, device, topk):
                writer.add(cids, lines, checksums, lengths, rows)
                progress.advance(len(lengths))
        writer.finish(header)
        os.replace(tmp, opt.output)
    finally:
        for folder in (tmp, parts):
            if os.path.exists(folder):
                shutil.rmtree(folder)
    logger.info(f"wrote {opt.output}: {writer.sentences:,} sentences, {writer.rows:,} target "
                f"positions, top {topk}")
    return writer.rows
