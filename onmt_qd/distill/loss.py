"""Word-level distillation loss (docs/method.md §5) as an OpenNMT-py LossCompute."""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from onmt.utils.loss import LossCompute

from onmt_qd.distill.rules import check_whole_targets

# An OpenNMT-py batch: "src", "tgt", "srclen", "tgtlen" tensors and, in training,
# "cid" and "cid_line_number" lists: values of several types, hence Any.
Batch = dict[str, Any]


class Distribution(Protocol):
    """The teacher's distribution over a batch's target positions (distill/teacher.py)."""

    def loss(self, student_logits: torch.Tensor, target: torch.Tensor, padding_idx: int,
             weight: float, temperature: float,
             criterion: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, plain cross-entropy) of the student against this distribution."""
        ...


class Teacher(Protocol):
    """What training asks of a teacher, live or cached (distill/teacher.py)."""

    def distribution(self, batch: Batch) -> Distribution:
        ...


class PastTheStep(BaseException):
    """Carries a user error (a ValueError) out of OpenNMT-py's training step, whose
    ``except Exception`` prints a traceback before re-raising; the trainer
    (train/trainer.py) raises the error itself again, for the command's one line."""

    def __init__(self, error: ValueError) -> None:
        super().__init__(str(error))
        self.error = error


class WordKL(torch.autograd.Function):
    """Sum over the kept positions of KL(softmax(t/T) || softmax(s/T)).

    The gradient, (softmax(s/T) - softmax(t/T)) / T per position, is formed in the
    forward pass: a few passes over the (positions x vocabulary) tensors instead of
    autograd's chain through masking, log-softmax and kl_div (half of the extra cost
    of a distillation step on a small student)."""

    @staticmethod
    def forward(ctx: Any, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                keep: torch.Tensor, temperature: float) -> torch.Tensor:
        scale = 1.0 / temperature
        student_logp = F.log_softmax(student_logits.float() * scale, dim=-1)
        teacher_logp = F.log_softmax(teacher_logits.float() * scale, dim=-1)
        teacher_p = teacher_logp.exp()
        mask = keep.unsqueeze(-1).float()
        kl = ((teacher_p * (teacher_logp - student_logp)).sum(-1, keepdim=True) * mask).sum()
        grad = student_logp.exp_().sub_(teacher_p).mul_(mask * scale)
        ctx.save_for_backward(grad)
        ctx.logits_dtype = student_logits.dtype
        return kl

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).to(ctx.logits_dtype), None, None, None


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      target: torch.Tensor, padding_idx: int, weight: float, temperature: float,
                      ce_loss: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(1-lambda)*CE + lambda*T^2*KL(p_teacher || p_student), summed over the
    non-padding positions (OpenNMT-py's trainer divides by its normalization).

    Returns (loss, ce): ``ce`` is the plain cross-entropy with the gold tokens that
    perplexity is reported from. ``ce_loss`` lets the caller supply its own criterion
    value (label smoothing); by default it is the summed cross-entropy."""
    if ce_loss is None:
        ce_loss = F.cross_entropy(student_logits.float(), target, ignore_index=padding_idx,
                                  reduction="sum")
    kl = WordKL.apply(student_logits, teacher_logits.detach(), target.ne(padding_idx),
                      temperature)
    loss = (1.0 - weight) * ce_loss + weight * temperature ** 2 * kl
    return loss, ce_loss


class TopKDistillation(torch.autograd.Function):
    """(1-lambda)*CE + lambda*KL over the teacher's top-K tokens plus one rest bucket,
    and the plain CE, from one pass over the vocabulary (see topk_distillation_loss).

    The gradient with respect to the student's logits s (P = softmax(s), P_r the
    student's mass outside the K ids, q_r the teacher's) is formed in the forward pass:
    P_j - lambda*q_j for the K ids, P_j*(1 - lambda*q_r/P_r) elsewhere, minus
    (1-lambda) at the gold token."""

    @staticmethod
    def forward(ctx: Any, student_logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor,
                topk_ids: torch.Tensor, topk_logp: torch.Tensor, rest_logp: torch.Tensor,
                weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = student_logits.float()
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = logits.sub(lse).exp_()
        topk_probs = probs.gather(1, topk_ids)
        probs.scatter_(1, topk_ids, 0.0)
        rest_probs = probs.sum(-1).clamp_min_(torch.finfo(torch.float32).tiny)
        teacher_probs, teacher_rest = topk_logp.exp(), rest_logp.exp()
        student_topk_logp = logits.gather(1, topk_ids) - lse
        kl_rows = ((teacher_probs * (topk_logp - student_topk_logp)).sum(-1)
                   + torch.xlogy(teacher_rest, teacher_rest)
                   - torch.xlogy(teacher_rest, rest_probs))
        ce_rows = lse.squeeze(1) - logits.gather(1, target.unsqueeze(1)).squeeze(1)
        kl = torch.where(keep, kl_rows, 0.0).sum()
        ce = torch.where(keep, ce_rows, 0.0).sum()
        grad = probs.mul_((1.0 - weight * teacher_rest / rest_probs).unsqueeze(1))
        grad.scatter_(1, topk_ids, topk_probs - weight * teacher_probs)
        grad.scatter_add_(1, target.unsqueeze(1),
                          torch.full_like(ce_rows, weight - 1.0).unsqueeze(1))
        grad.mul_(keep.unsqueeze(1))
        ctx.save_for_backward(grad)
        ctx.logits_dtype = student_logits.dtype
        ctx.mark_non_differentiable(ce)
        return (1.0 - weight) * ce + weight * kl, ce

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, grad_ce: torch.Tensor
                 ) -> tuple[torch.Tensor, None, None, None, None, None, None]:
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss).to(ctx.logits_dtype), None, None, None, None, None, None


def topk_distillation_loss(student_logits: torch.Tensor, topk_ids: torch.Tensor,
                           topk_logp: torch.Tensor, rest_logp: torch.Tensor,
                           target: torch.Tensor, padding_idx: int,
                           weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(1-lambda)*CE + lambda*KL(q || p) over K+1 buckets, summed over the non-padding
    positions; returns (loss, ce) like distillation_loss.

    q is the teacher's distribution at T = 1 as cached: q_k = exp(topk_logp[k]) for its K
    most probable tokens and q_r = exp(rest_logp), the mass of all other tokens. p is the
    student's softmax on the same buckets: p_k = softmax(s)[topk_ids[k]] and
    p_r = 1 - sum_k p_k. Per position

        KL = sum_k q_k (log q_k - log p_k) + q_r (log q_r - log p_r)

    (0 log 0 = 0). With K = vocabulary size, q_r = 0 and this is the full-vocabulary KL
    of distillation_loss. Temperature is not applied: the tail's mass at another
    temperature cannot be recovered from K cached log-probabilities."""
    return TopKDistillation.apply(student_logits, target, target.ne(padding_idx), topk_ids,
                                  topk_logp.float(), rest_logp.float(), weight)


class DistillLossCompute(LossCompute):
    """OpenNMT-py's loss with the teacher's KL term added during training.

    The teacher (onmt_qd.distill.teacher: live model or cache) gives its distribution
    for the batch. Statistics (perplexity, accuracy) stay those of the gold-token
    cross-entropy."""

    teacher: Teacher | None = None
    distill_weight = 0.7
    distill_temperature = 1.0

    def set_teacher(self, teacher: Teacher, weight: float, temperature: float) -> None:
        if self.copy_attn or self.lambda_align or self.lambda_coverage or \
                self.lm_generator is not None or self.lm_prior_model is not None:
            raise ValueError("distillation supports plain generators only: unset "
                             "copy_attn, lambda_align, lambda_coverage and lm_prior_model")
        # A plain attribute (teachers are not nn.Modules): train() must not switch the
        # frozen teacher's dropout on.
        object.__setattr__(self, "teacher", teacher)
        self.distill_weight = weight
        self.distill_temperature = temperature

    def forward(self, batch: Batch, output: torch.Tensor, attns: dict[str, torch.Tensor],
                trunc_start: int = 0, trunc_size: int | None = None) -> tuple[torch.Tensor, Any]:
        if self.teacher is None:
            return super().forward(batch, output, attns, trunc_start, trunc_size)
        check_whole_targets(trunc_start != 0 or (trunc_size is not None
                                                 and trunc_size < batch["tgt"].size(1)))
        try:
            distribution = self.teacher.distribution(batch)
        except ValueError as exc:  # a cache made from other data, found on this batch
            raise PastTheStep(exc) from None
        target = batch["tgt"][:, self.tgt_shift_index:, 0].contiguous().view(-1)
        student_logits = self.generator(self._bottle(output))
        loss, ce = distribution.loss(student_logits, target, self.padding_idx,
                                     self.distill_weight, self.distill_temperature,
                                     criterion=self.criterion)
        stats = self._stats(len(batch["srclen"]), ce.item(), student_logits, target)
        return loss, stats
