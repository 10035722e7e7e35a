"""Word-level distillation loss (method.md §5) as an OpenNMT-py LossCompute."""
import torch
import torch.nn.functional as F
from onmt.utils.loss import LossCompute


class WordKL(torch.autograd.Function):
    """Sum over the kept positions of KL(softmax(t/T) || softmax(s/T)).

    The gradient, (softmax(s/T) - softmax(t/T)) / T per position, is formed in the
    forward pass: a few passes over the (positions x vocabulary) tensors instead of
    autograd's chain through masking, log-softmax and kl_div (half of the extra cost
    of a distillation step on a small student)."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, keep, temperature):
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
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).to(ctx.logits_dtype), None, None, None


def distillation_loss(student_logits, teacher_logits, target, padding_idx, weight, temperature,
                      ce_loss=None):
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


class DistillLossCompute(LossCompute):
    """OpenNMT-py's loss with the teacher's KL term added during training.

    The teacher decodes the same batch teacher-forced, under no_grad. Statistics
    (perplexity, accuracy) stay those of the gold-token cross-entropy."""

    teacher = None
    distill_weight = 0.7
    distill_temperature = 1.0

    def set_teacher(self, teacher, weight, temperature):
        if self.copy_attn or self.lambda_align or self.lambda_coverage or \
                self.lm_generator is not None or self.lm_prior_model is not None:
            raise ValueError("distillation supports plain generators only: unset "
                             "copy_attn, lambda_align, lambda_coverage and lm_prior_model")
        # A plain attribute, not a submodule: nn.Module would file the teacher under
        # _modules, where the class attribute ``teacher = None`` shadows it (the loss
        # then silently trained on cross-entropy alone), and train() would switch the
        # frozen teacher's dropout on.
        object.__setattr__(self, "teacher", teacher)
        self.distill_weight = weight
        self.distill_temperature = temperature

    def forward(self, batch, output, attns, trunc_start=0, trunc_size=None):
        if self.teacher is None:
            return super().forward(batch, output, attns, trunc_start, trunc_size)
        if trunc_start != 0 or (trunc_size is not None and trunc_size < batch["tgt"].size(1)):
            raise ValueError("distillation needs whole targets: set -truncated_decoder 0")
        with torch.no_grad():
            teacher_out, _ = self.teacher(batch["src"], batch["tgt"], batch["srclen"])
            teacher_logits = self.teacher.generator(self._bottle(teacher_out))
        target = batch["tgt"][:, self.tgt_shift_index:, 0].contiguous().view(-1)
        student_logits = self.generator(self._bottle(output))
        ce = self.criterion(student_logits.float(), target)
        loss, ce = distillation_loss(student_logits, teacher_logits, target, self.padding_idx,
                                     self.distill_weight, self.distill_temperature, ce_loss=ce)
        stats = self._stats(len(batch["srclen"]), ce.item(), student_logits, target)
        return loss, stats
