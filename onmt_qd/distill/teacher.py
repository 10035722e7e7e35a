"""One way to ask a teacher: ``teacher.distribution(batch)`` gives its distribution over
the batch's target positions, whether a live model computes it (LiveTeacher) or a cache
holds it (CachedTeacher); the distribution computes the distillation loss against the
student's logits. A new kind of teacher is one class with ``distribution``."""
from __future__ import annotations

import math
import os
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from onmt.decoders.ensemble import EnsembleModel
from onmt.inputters.inputter import vocabs_to_dict

from onmt_qd.compat import load_checkpoint
from onmt_qd.distill.cache import (Vocabs, TeacherCache, corpus_line, data_fingerprint,
                                   source_checksum)
from onmt_qd.distill.ct2_teacher import TranslatorTeacher
from onmt_qd.distill.loss import Batch, distillation_loss, topk_distillation_loss
from onmt_qd.distill.rules import check_cached_loss, teacher_paths
from onmt_qd.models import build_model_from_checkpoint

if TYPE_CHECKING:  # OpenNMT-py has no type information: to mypy this is Any, named
    from onmt.models import NMTModel


class VocabMismatchError(ValueError):
    pass


def check_same_vocabs(teacher_vocab: Mapping[str, Sequence[str]],
                      student_vocab: Mapping[str, Sequence[str]], other: str = "student",
                      this: str = "teacher",
                      remedy: str = "build both from the same vocab files") -> None:
    """Word-level KL compares distributions position by position, so both models
    must index the same tokens: raise on the first difference. ``this`` and ``other``
    name the two vocabularies (the teacher and the student, or the data config's
    vocabulary; a resumed checkpoint and the config's), ``remedy`` what to do."""
    for side in ("src", "tgt"):
        t, s = teacher_vocab[side], student_vocab[side]
        for i, (a, b) in enumerate(zip(t, s)):
            if a != b:
                raise VocabMismatchError(
                    f"{this} and {other} {side} vocabularies differ at index {i}: "
                    f"{this} has '{a}', {other} has '{b}'; {remedy}")
        if len(t) != len(s):
            raise VocabMismatchError(
                f"{this} {side} vocabulary has {len(t)} tokens, {other} has {len(s)}; "
                f"{remedy}")


def load_teacher(path: str | Sequence[str], student_vocabs: Vocabs, device: torch.device | str,
                 other: str = "student") -> NMTModel | TranslatorTeacher:
    """Frozen teacher model whose vocabularies match ``student_vocabs``, or a
    CTranslate2 directory's translator asked teacher-forced (ct2_teacher.py). Several
    checkpoints: their ensemble, OpenNMT-py's EnsembleModel (which onmt_translate
    decodes), teaching the mean of its members' distributions (teacher_forced_logits)."""
    paths = teacher_paths(path)
    if len(paths) > 1:
        return EnsembleModel([load_teacher(one, student_vocabs, device, other)
                              for one in paths]).eval()
    path = paths[0]
    if os.path.isdir(path):
        return TranslatorTeacher(path, student_vocabs, device, other=other)
    checkpoint = load_checkpoint(path)
    check_same_vocabs(checkpoint["vocab"], vocabs_to_dict(student_vocabs), other)
    # Building the model draws initial weights; keep that off the student's random
    # stream, so a teacher changes the student's training through the loss alone.
    with torch.random.fork_rng(devices=[]):
        teacher, _, _ = build_model_from_checkpoint(checkpoint, device)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def teacher_forced_logits(model: NMTModel, batch: Batch) -> torch.Tensor:
    """Logits at every target position given the gold prefix: [batch * positions, vocab],
    rows in the order of ``batch["tgt"][:, 1:]`` flattened (OpenNMT-py's loss order);
    a CTranslate2 teacher gives its log-probabilities, which are logits too, and an
    ensemble the log of its members' mean probabilities (mean_distribution)."""
    if isinstance(model, TranslatorTeacher):
        return model.forced_logits(batch)
    if isinstance(model, EnsembleModel):
        return mean_distribution([teacher_forced_logits(member, batch)
                                  for member in model.models])
    output, _ = model(batch["src"], batch["tgt"], batch["srclen"])
    return model.generator(output.reshape(-1, output.size(-1)))


def mean_distribution(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """log(mean_i softmax(logits_i)): the ensemble's distribution (the mean of its
    members' probabilities) as log-probabilities. onmt_translate's beam search averages
    the members' logits instead (a normalised geometric mean), where one member's low
    probability vetoes a token; the arithmetic mean keeps every member's alternatives,
    which is what a student learns from."""
    logp = torch.stack([F.log_softmax(one.float(), dim=-1) for one in logits])
    return torch.logsumexp(logp, dim=0) - math.log(len(logits))


class DenseDistribution:
    """The teacher's logits over the whole vocabulary."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def loss(self, student_logits: torch.Tensor, target: torch.Tensor, padding_idx: int,
             weight: float, temperature: float, criterion: torch.nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        ce = criterion(student_logits.float(), target) if criterion is not None else None
        return distillation_loss(student_logits, self.logits, target, padding_idx, weight,
                                 temperature, ce_loss=ce)


class TopKDistribution:
    """The teacher's K most probable tokens per position, their log-probabilities and
    the log of the remaining mass (see topk_distillation_loss)."""

    def __init__(self, ids: torch.Tensor, logp: torch.Tensor, rest_logp: torch.Tensor) -> None:
        self.ids, self.logp, self.rest_logp = ids, logp, rest_logp

    def loss(self, student_logits: torch.Tensor, target: torch.Tensor, padding_idx: int,
             weight: float, temperature: float, criterion: torch.nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        check_cached_loss(temperature, getattr(criterion, "label_smoothing", 0.0))
        return topk_distillation_loss(student_logits, self.ids, self.logp, self.rest_logp,
                                      target, padding_idx, weight)


class LiveTeacher:
    """A teacher model run teacher-forced on each batch, without gradients."""

    def __init__(self, model: NMTModel) -> None:
        self.model = model

    @classmethod
    def from_checkpoint(cls, path: str | Sequence[str], student_vocabs: Vocabs,
                        device: torch.device | str) -> LiveTeacher:
        return cls(load_teacher(path, student_vocabs, device))

    def distribution(self, batch: Batch) -> DenseDistribution:
        with torch.no_grad():
            return DenseDistribution(teacher_forced_logits(self.model, batch))


def process_stride(opt: Namespace) -> int:
    """How many data-parallel processes share the training lines: all -world_size of
    them, on every machine (GPUs or CPU processes), else one. OpenNMT-py 3.5 strides by
    this machine's -gpu_ranks alone, so on several machines each would read the lines
    the others read."""
    if opt.parallel_mode != "data_parallel":
        return 1
    return max(1, opt.world_size)


def loader_stride(opt: Namespace) -> int:
    """The line stride of OpenNMT-py's training reader: data-loader workers times
    data-parallel processes (see onmt_qd_train's iterator and DynamicDatasetIter)."""
    return process_stride(opt) * max(1, opt.num_workers)


class CachedTeacher:
    """Entries of a teacher cache, found by each example's (corpus, line) and checked
    against the batch: row count, gold target tokens and source checksum must match."""

    def __init__(self, cache: TeacherCache, stride: int, device: torch.device | str) -> None:
        self.cache, self.stride, self.device = cache, stride, device

    @classmethod
    def from_opts(cls, opt: Namespace, vocabs: Vocabs, device: torch.device | str
                  ) -> CachedTeacher:
        """The cache named by -teacher_cache, refused unless it was made from this run's
        corpora, transforms and vocabulary (and holds -topk tokens when that is set) and
        is undamaged: checked whole here, since a failure inside OpenNMT-py's training
        step would come with its traceback and after the first checkpoints."""
        cache = TeacherCache(opt.teacher_cache)
        cache.check(data_fingerprint(opt, vocabs), opt.topk)
        cache.verify()
        return cls(cache, loader_stride(opt), device)

    def _fail(self, cid: str, line: int, what: str) -> NoReturn:
        raise ValueError(f"teacher cache {self.cache.path}: corpus '{cid}' line {line + 1} "
                         f"{what}; the cache was made from other data: rebuild it with "
                         "onmt_qd_teacher_cache")

    def distribution(self, batch: Batch) -> TopKDistribution:
        cids = batch["cid"]
        lines = corpus_line(batch["cid_line_number"], self.stride)
        offsets, lengths, checksums = self.cache.lookup(cids, lines)
        positions = (batch["tgtlen"] - 1).cpu().numpy()
        for b in np.flatnonzero(lengths != positions):
            self._fail(cids[b], lines[b], "is not in the cache" if lengths[b] < 0 else
                       f"has {lengths[b]} cached positions, the batch {positions[b]}")
        for b in np.flatnonzero(checksums != source_checksum(batch["src"][:, :, 0],
                                                             batch["srclen"]).cpu().numpy()):
            self._fail(cids[b], lines[b], "has another source sentence in the cache")
        width = batch["tgt"].size(1) - 1
        rows = self.cache.gather(offsets, lengths, width)
        target = batch["tgt"][:, 1:, 0].cpu().numpy()
        real = np.arange(width)[None, :] < lengths[:, None]
        wrong = (rows["gold"].reshape(-1, width).astype(np.int64) != target) & real
        for b in np.flatnonzero(wrong.any(1)):
            self._fail(cids[b], lines[b], "has another target sentence in the cache")
        return TopKDistribution(
            torch.from_numpy(rows["ids"].astype(np.int64)).to(self.device),
            torch.from_numpy(rows["logp"]).to(self.device, torch.float32),
            torch.from_numpy(rows["rest"]).to(self.device, torch.float32))


def teacher_from_opts(opt: Namespace, vocabs: Vocabs, device: torch.device | str
                      ) -> LiveTeacher | CachedTeacher | None:
    """The teacher -teacher_model or -teacher_cache names, or None."""
    if opt.teacher_model:
        return LiveTeacher.from_checkpoint(opt.teacher_model, vocabs, device)
    if opt.teacher_cache:
        return CachedTeacher.from_opts(opt, vocabs, device)
    return None
