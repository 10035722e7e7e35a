"""Differentiable quantization (Algorithm 2, docs/method.md §4): the weights of a trained
model stay frozen; only each tensor's quantization points are learned, with the
distillation loss against the teacher.

Each step assigns every scaled weight to its nearest point, runs forward/backward with
the quantized weights, and turns the weight gradients into point gradients
dL/dp_j = sum_{i -> j} alpha_bucket(i) dL/dq_i; points are kept sorted inside [0, 1]."""
import math

import torch
from onmt.constants import CorpusTask, DefaultTokens
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.inputters.inputter import dict_to_vocabs
from onmt.transforms import get_transforms_cls
from onmt.utils.logging import logger
from onmt.utils.parse import ArgumentParser

from onmt_qd.compat import load_checkpoint, save_atomic
from onmt_qd.distill import LiveTeacher, teacher_forced_logits
from onmt_qd.distill.rules import check_distill_opts, teacher_paths
from onmt_qd.evaluate.metrics import reference_perplexity
from onmt_qd.fileio import check_outputs
from onmt_qd.models import build_model_from_checkpoint, named_weights, tied_names
from onmt_qd.opts import policy_from_opts
from onmt_qd.quant import (MAX_BITS, allocate_bits, allocate_points, check_avg_bits,
                           get_quantizer, point_gradient, project_points, quantize_to_points)
from onmt_qd.quant_checkpoint import (DIFFQUANT_KEY, QUANT_KEY, SHADOW_KEY, VALID_KEY,
                                      attach_quantization, check_checkpoint_output,
                                      quantize_weights)
from onmt_qd.train.fakequant import ShadowWeights
from onmt_qd.train.schedule import PlateauHalving


class PointLearner:
    """Per-tensor points of a frozen model, and the quantized weights they give."""

    def __init__(self, model, policy, n_points, bits):
        params = dict(model.named_parameters())
        self.policy = policy
        self.params = {name: params[name] for name in n_points}
        self.weights = ShadowWeights(self.params, bits, policy.bucket_size)
        self.bits = bits
        initial = get_quantizer(policy.method).points
        self.points = {name: initial(self.weights[name], bits[name], policy.bucket_size, n)
                       for name, n in n_points.items()}
        self.quantized = {}

    def assign(self):
        """Nearest-point assignment; the model's parameters then hold Q(w)."""
        for name in self.params:
            qt = quantize_to_points(self.weights[name], self.points[name],
                                    self.policy.bucket_size, self.bits[name])
            self.quantized[name] = qt
            self.weights.write(name, qt.dequantize())

    def restore(self):
        """Put the full-precision weights back into the model."""
        self.weights.load()

    def point_gradients(self):
        return {name: point_gradient(self.quantized[name], param.grad.float())
                for name, param in self.params.items()}


def distill_step(model, teacher, batch, padding, weight, temperature):
    """Backward of the mean distillation loss of one batch; returns the loss."""
    logits = teacher_forced_logits(model, batch)
    target = batch["tgt"][:, 1:, 0].reshape(-1)
    loss, _ = teacher.distribution(batch).loss(logits, target, padding, weight, temperature)
    loss = loss / max(int(target.ne(padding).sum()), 1)
    loss.backward()
    return loss.item()


def gradient_norms(model, teacher, learner, batches, padding, opt):
    """Average norm of dL/dq per tensor over the given batches (at the initial points)."""
    totals = dict.fromkeys(learner.params, 0.0)
    learner.assign()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        distill_step(model, teacher, batch, padding, opt.distill_weight, opt.distill_temperature)
        for name, param in learner.params.items():
            totals[name] += param.grad.norm().item() / len(batches)
    return totals


def allocation(policy, selected, sizes, norms, opt):
    """name -> (points, bits) by the chosen redistribution rule."""
    names = list(selected)
    if opt.redistribute == "none":
        return {n: (2 ** selected[n], selected[n]) for n in names}
    size_list, norm_list = [sizes[n] for n in names], [norms[n] for n in names]
    if opt.redistribute == "points":
        counts = allocate_points(size_list, norm_list, policy.bits)
        return {n: (c, max(1, math.ceil(math.log2(c)))) for n, c in zip(names, counts)}
    bits = allocate_bits(size_list, norm_list,
                         policy.bits if opt.avg_bits is None else opt.avg_bits)
    return {n: (2 ** b, b) for n, b in zip(names, bits)}


def data_iterator(opt, vocabs, device_id):
    ArgumentParser.validate_prepare_opts(opt)
    return build_dynamic_dataset_iter(opt, get_transforms_cls(opt._all_transform), vocabs,
                                      task=CorpusTask.TRAIN, device_id=device_id)


class FrozenStudent:
    """The model whose points are learned: its checkpoint, vocabularies and weights, its
    teacher, and the tensors the policy quantizes, on ``device``."""

    def __init__(self, opt, policy):
        device_id = opt.gpu_ranks[0] if opt.gpu_ranks else -1
        self.device_id = device_id
        self.device = "cpu" if device_id < 0 else f"cuda:{device_id}"
        self.checkpoint = load_checkpoint(opt.model)
        self.vocabs = dict_to_vocabs(self.checkpoint["vocab"])
        self.model, _, _ = build_model_from_checkpoint(self.checkpoint, self.device)
        self.teacher = LiveTeacher.from_checkpoint(opt.teacher_model, self.vocabs, self.device)
        self.weights = named_weights(self.checkpoint)
        # parameters, not buffers (a Transformer's ``pe``): what the policy chooses from
        self.selected = policy.select({name: tuple(p.shape)
                                       for name, p in self.model.named_parameters()})
        self.sizes = {name: self.weights[name].numel() for name in self.selected}
        self.padding = self.vocabs["tgt"][DefaultTokens.PAD]
        # Weights are frozen: no dropout noise in the point gradients. Training mode
        # stays on because cuDNN's RNN backward refuses eval mode.
        self.model.update_dropout(0.0, 0.0)
        self.model.train()
        for param in self.model.parameters():
            param.requires_grad_(True)

    def batches(self, opt):
        return (batch for batch, _ in data_iterator(opt, self.vocabs, self.device_id))


def plan_points(student, policy, batches, opt):
    """(points and bits per tensor, the gradient norms that redistributed them)."""
    norms = {}
    if opt.redistribute != "none":
        probe = PointLearner(student.model, policy,
                             {n: 2 ** b for n, b in student.selected.items()}, student.selected)
        norms = gradient_norms(student.model, student.teacher, probe,
                               [next(batches) for _ in range(opt.grad_norm_batches)],
                               student.padding, opt)
        probe.restore()
    alloc = allocation(policy, student.selected, student.sizes, norms, opt)
    for name, (n_points, bits) in alloc.items():
        logger.info(f"{name}: {student.sizes[name]} weights, {n_points} points ({bits} bits)"
                    + (f", gradient norm {norms[name]:.4g}" if norms else ""))
    return alloc, norms


def learn_points(student, learner, batches, opt):
    """Algorithm 2's loop with plateau halving; (best validation perplexity, the
    points that gave it)."""
    model = student.model
    points = list(learner.points.values())  # plain tensors; their .grad is set by hand
    optimizer = (torch.optim.Adam(points, lr=opt.learning_rate) if opt.optim == "adam"
                 else torch.optim.SGD(points, lr=opt.learning_rate))
    plateau = PlateauHalving()
    valid = opt.data[CorpusTask.VALID]

    def validate():
        learner.assign()
        ppl = reference_perplexity(model, student.vocabs, opt, valid["path_src"],
                                   valid["path_tgt"], student.device)
        model.train()
        return ppl

    best_ppl = validate()
    best_points = {n: p.clone() for n, p in learner.points.items()}
    logger.info(f"initial points: validation perplexity {best_ppl:.3f}")
    for step in range(1, opt.train_steps + 1):
        learner.assign()
        model.zero_grad(set_to_none=True)
        loss = distill_step(model, student.teacher, next(batches), student.padding,
                            opt.distill_weight, opt.distill_temperature)
        for name, grad in learner.point_gradients().items():
            learner.points[name].grad = grad
        optimizer.step()
        for name in learner.points:
            learner.points[name].copy_(project_points(learner.points[name]))
        if step % opt.report_every == 0:
            logger.info(f"step {step}/{opt.train_steps}: distillation loss {loss:.4f}")
        if step % opt.valid_steps == 0 or step == opt.train_steps:
            ppl = validate()
            if plateau.observe(ppl):
                for group in optimizer.param_groups:
                    group["lr"] = opt.learning_rate * plateau.scale
            if ppl < best_ppl:
                best_ppl, best_points = ppl, {n: p.clone() for n, p in learner.points.items()}
            logger.info(f"step {step}: validation perplexity {ppl:.3f} (best {best_ppl:.3f}), "
                        f"lr {opt.learning_rate * plateau.scale:g}")
    return best_ppl, best_points


def quantized_checkpoint(student, policy, best_points, alloc, norms, best_ppl, opt):
    """The student's checkpoint with its weights quantized to the learned points, the
    allocation and the validation record; its optimizer and shadow weights dropped."""
    # a tied embedding is learned once and written under each of its names
    alias = {name: name for name in alloc}
    alias.update({a: name for a, name in tied_names(student.model).items() if name in alloc})
    weights, quantized = quantize_weights(
        student.weights, policy, {n: alloc[c][1] for n, c in alias.items()},
        points={n: best_points[c].cpu() for n, c in alias.items()})
    out = {k: v for k, v in student.checkpoint.items()
           if k not in ("optim", SHADOW_KEY, QUANT_KEY)}
    attach_quantization(out, weights, quantized, policy)
    out[VALID_KEY] = {"ppl": best_ppl, "step": opt.train_steps}
    out[DIFFQUANT_KEY] = {"allocation": {n: list(a) for n, a in alloc.items()},
                           "grad_norms": norms, "redistribute": opt.redistribute}
    return out


def check_opts(opt):
    """Every check of onmt_qd_diffquant's options, before any file is read; returns the
    quantization policy they describe. -init is the policy's method; the data loader's
    bucket is -data_bucket_size (-bucket_size is the quantization bucket)."""
    opt.quant_method = opt.init
    opt.bucket_size = opt.data_bucket_size
    check_distill_opts(opt, "points are learned with the distillation loss against the "
                       "live teacher" + (" (a teacher cache is for onmt_qd_train)"
                                         if opt.teacher_cache else ""))
    if opt.grad_norm_batches < 1:
        raise ValueError(f"-grad_norm_batches must be at least 1, got {opt.grad_norm_batches}")
    if opt.avg_bits is not None:
        check_avg_bits(opt.avg_bits, max_bits=MAX_BITS, name="-avg_bits")
    policy = policy_from_opts(opt, prefix="")
    check_checkpoint_output(opt.output, "onmt_qd_diffquant")
    check_outputs({"-output": opt.output},
                  [("-model", opt.model),
                   *(("-teacher_model", path) for path in teacher_paths(opt.teacher_model))])
    return policy


def run(opt, policy):
    torch.manual_seed(opt.seed)
    student = FrozenStudent(opt, policy)
    batches = student.batches(opt)
    alloc, norms = plan_points(student, policy, batches, opt)
    learner = PointLearner(student.model, policy, {n: a[0] for n, a in alloc.items()},
                           {n: a[1] for n, a in alloc.items()})
    best_ppl, best_points = learn_points(student, learner, batches, opt)
    save_atomic(quantized_checkpoint(student, policy, best_points, alloc, norms, best_ppl, opt),
                opt.output)
    logger.info(f"wrote {opt.output}: validation perplexity {best_ppl:.3f}")
    return best_ppl
