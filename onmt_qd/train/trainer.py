"""onmt_qd_train: OpenNMT-py's training, assembled from its own pieces, plus the
distillation loss, quantized training and the per-epoch learning-rate rule."""
import copy
import functools
import math
import os
import uuid

import torch
from onmt.constants import CorpusTask
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.model_builder import build_model
from onmt.train_single import _get_model_opts, _init_train, configure_process
from onmt.trainer import Trainer, build_trainer
from onmt.utils.logging import init_logger, logger

from onmt_qd.compat import keep_log_file, prepare_onmt
from onmt_qd.distill import DistillLossCompute, teacher_from_opts
from onmt_qd.distill.loss import PastTheStep
from onmt_qd.distill.rules import teacher_paths
from onmt_qd.fileio import remove_stale_temporaries
from onmt_qd.models import named_weights, split_weights
from onmt_qd.opts import AUTOCAST_DTYPES, QUANT_OPTIONS
from onmt_qd.processes import children_end_on_sigterm, ranks_here, run_processes
from onmt_qd.quant_checkpoint import RUN_KEY, SHADOW_KEY
from onmt_qd.train.checks import check_opts, check_resume
from onmt_qd.train.distributed import (collective_device, data_shard, in_lockstep, sum_gradients,
                                       sum_over_processes)
from onmt_qd.train.epochs import apply_epochs
from onmt_qd.train.fakequant import FakeQuantizer
from onmt_qd.train.loading import choose_loading
from onmt_qd.train.precision import use_autocast
from onmt_qd.train.saver import QDModelSaver
from onmt_qd.train.schedule import PlateauHalving, QDOptimizer


class QDTrainer(Trainer):
    """Stock Trainer plus the per-epoch learning-rate rule, and the sums that keep CPU
    processes in lockstep (``cpu_ranks``; OpenNMT-py's own sums are for GPUs).

    Validation sees the quantized weights (the fake quantizer's forward hook rounds
    deterministically in eval mode), so perplexity, halving and the best checkpoint
    are those of the quantized model."""

    cpu_ranks = False

    @classmethod
    def adopt(cls, trainer):
        """Take over a Trainer built by OpenNMT-py's build_trainer (which wires its
        many options) instead of repeating that wiring here."""
        adopted = cls.__new__(cls)
        adopted.__dict__.update(trainer.__dict__)
        return adopted

    def validate(self, valid_iter, moving_average=None):
        stats = super().validate(valid_iter, moving_average)
        ppl = stats.ppl()
        plateau = self.optim.plateau
        if plateau is not None and plateau.observe(ppl):
            logger.info(f"Epoch {plateau.epoch}: validation perplexity {ppl:.3f} "
                        f"(best {plateau.best_ppl:.3f}); learning rate halved to "
                        f"{self.optim.learning_rate():g}")
        if self.model_saver is not None:
            self.model_saver.valid_ppl = ppl
        return stats

    def _gradient_accumulation(self, batches, normalization, total_stats, report_stats):
        self._share_halving()
        if self.cpu_ranks:
            normalization = sum_over_processes(normalization)
        step = self.optim.training_step
        try:
            super()._gradient_accumulation(batches, normalization, total_stats, report_stats)
        except PastTheStep as carried:
            raise carried.error from None
        loss = float(total_stats.loss)
        if not math.isfinite(loss) and self.model_saver is not None:
            raise self.model_saver.diverged(step, f"the loss is {loss}")

    def _share_halving(self):
        """Rank 0 decides: after each validation step every rank takes its learning-rate
        scale, so all processes keep stepping with the same rate (only rank 0 validates
        on GPUs; every CPU process validates, as OpenNMT-py's CPU trainer does)."""
        plateau = self.optim.plateau
        if plateau is None or not in_lockstep(self.parallel_mode):
            return
        step = self.optim.training_step
        if step > 1 and (step - 1) % self.valid_steps == 0:
            scale = torch.tensor([plateau.scale], device=collective_device())
            torch.distributed.broadcast(scale, 0)
            plateau.scale = scale.item()


def resume_from_shadow(checkpoint):
    """A quantized checkpoint resumes from its full-precision shadow weights."""
    if checkpoint is not None and SHADOW_KEY in checkpoint:
        weights = named_weights(checkpoint)
        weights.update(checkpoint[SHADOW_KEY])
        checkpoint["model"], checkpoint["generator"] = split_weights(weights)


def train_single(opt, device_id, policy=None):
    """One training process; ``policy``: the quantization train() settled (None: fp32)."""
    prepare_onmt()  # _init_train loads -train_from with OpenNMT-py's own torch.load
    configure_process(opt, device_id)
    init_logger(opt.log_file)
    keep_log_file()
    checkpoint, vocabs, transforms_cls = _init_train(opt)
    resume_from_shadow(checkpoint)
    model_opt = _get_model_opts(opt, checkpoint=checkpoint)
    # checkpoints record the quantization trained (check_resume settled it), not the
    # resumed checkpoint's options
    vars(model_opt).update({dest: getattr(opt, dest) for dest in QUANT_OPTIONS})
    run = (checkpoint or {}).get(RUN_KEY) or uuid.uuid4().hex
    model = build_model(model_opt, opt, vocabs, checkpoint, device_id)
    model.count_parameters(log=logger.info)
    if AUTOCAST_DTYPES[opt.autocast] is not None:
        use_autocast(model, AUTOCAST_DTYPES[opt.autocast])
        logger.info(f"Mixed precision: forward under {opt.autocast} autocast, losses in fp32")
    optim = QDOptimizer.from_opt(model, opt, checkpoint=checkpoint)
    if opt.lr_halving == "plateau":
        optim.use_plateau(PlateauHalving(opt.start_decay_at_epoch))
    # what foreign_checkpoints needs of the resumed checkpoint, without its weights
    resumed = checkpoint and {k: checkpoint[k] for k in ("opt", RUN_KEY) if k in checkpoint}
    del checkpoint
    # Before anything is written: a cache made from other data is refused here.
    teacher = teacher_from_opts(opt, vocabs, next(model.parameters()).device)

    saver = QDModelSaver(opt.save_model, model, model_opt, vocabs, optim,
                         opt.keep_checkpoint, opt.save_format, device_id)
    saver.run = run
    saver.lockstep = in_lockstep(opt.parallel_mode)
    saver.begin(opt, resumed)
    if policy is not None:
        saver.fake_quant = FakeQuantizer(model, policy)
        saver.fake_quant.attach(model, optim)
        logger.info(f"Quantized training: {len(saver.fake_quant.bits)} tensors, "
                    f"{policy.bits} bits, bucket {policy.bucket_size}, {policy.method}")
    os.makedirs(os.path.dirname(os.path.abspath(opt.save_model)), exist_ok=True)

    trainer = QDTrainer.adopt(build_trainer(opt, device_id, model, vocabs, optim,
                                            model_saver=saver))
    trainer.valid_steps = opt.valid_steps
    if device_id < 0 and in_lockstep(opt.parallel_mode):
        trainer.cpu_ranks = True
        optim.before_step.insert(0, functools.partial(sum_gradients, model))
    if teacher is not None:
        loss = DistillLossCompute.from_opts(opt, model, vocabs["tgt"])
        loss.set_teacher(teacher, opt.distill_weight, opt.distill_temperature)
        trainer.train_loss = loss
        taught_by = " + ".join(teacher_paths(opt.teacher_model)) or opt.teacher_cache
        logger.info(f"Distilling from {taught_by}: "
                    f"lambda={opt.distill_weight}, "
                    f"T={opt.distill_temperature}")

    stride, offset = data_shard(opt)
    train_iter = build_dynamic_dataset_iter(
        opt, transforms_cls, vocabs, task=CorpusTask.TRAIN, copy=opt.copy_attn,
        stride=stride, offset=offset, device_id=device_id)
    valid_iter = build_dynamic_dataset_iter(
        valid_loading(opt), transforms_cls, vocabs, task=CorpusTask.VALID, copy=opt.copy_attn,
        device_id=device_id)
    trainer.train(train_iter, opt.train_steps, save_checkpoint_steps=opt.save_checkpoint_steps,
                  valid_iter=valid_iter, valid_steps=opt.valid_steps)
    if trainer.report_manager.tensorboard_writer is not None:
        trainer.report_manager.tensorboard_writer.close()


def valid_loading(opt):
    """The options the validation iterator is built with: no loader workers. The
    validation corpus is small and read once per validation, and OpenNMT-py's loader
    starts its workers anew for every pass: 11-15 s per validation measured on an H100
    machine with -num_workers 2 (docs/results.md, "GPU"), longer than the epoch itself."""
    valid_opt = copy.copy(opt)
    valid_opt.num_workers = 0
    return valid_opt


def train(opt, given=frozenset()):
    """onmt_qd_train; ``given``: the options the user set (opts.given_options), the
    others' defaults may be chosen from the corpus (train/loading.py)."""
    init_logger(opt.log_file)
    policy = check_opts(opt)
    apply_epochs(opt)
    process = functools.partial(train_single, policy=check_resume(opt, policy))
    choose_loading(opt, given)  # after every check: a refused run logs nothing first
    if opt.world_size > 1:
        # rank 0 writes the checkpoints: only its machine removes what it left half
        # written (another machine sharing the folder cannot tell its temporaries)
        cleanup = functools.partial(remove_stale_temporaries, opt.save_model) \
            if 0 in ranks_here(opt) else None
        run_processes(process, opt, "training", "the checkpoints written so far are whole "
                      "(resume from the last with -train_from)", cleanup)
    else:
        with children_end_on_sigterm():
            process(opt, 0 if len(opt.gpu_ranks) == 1 else -1)
