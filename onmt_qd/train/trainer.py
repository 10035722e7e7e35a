"""onmt_qd_train: OpenNMT-py's training, assembled from its own pieces, plus the
distillation loss, quantized training and the per-epoch learning-rate rule."""
import contextlib
import copy
import glob
import itertools
import logging
import math
import os
import re
import shutil
import uuid

import torch
import yaml
from onmt.constants import CorpusTask
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.inputters import build_vocab
from onmt.inputters.inputter import vocabs_to_dict
from onmt.model_builder import build_model
from onmt.models.model_saver import ModelSaver
from onmt.train_single import _get_model_opts, _init_train, configure_process
from onmt.trainer import Trainer, build_trainer
from onmt.transforms import get_specials, get_transforms_cls
from onmt.utils.distributed import ErrorHandler, spawned_train
from onmt.utils.logging import init_logger, logger
from onmt.utils.parse import ArgumentParser

from onmt_qd.compat import load_checkpoint, save_atomic
from onmt_qd.distill import DistillLossCompute, check_same_vocabs, teacher_from_opts
from onmt_qd.fileio import (atomic_output, check_input_file, remove_stale_temporaries,
                            same_file)
from onmt_qd.models import model_weights, named_weights, split_weights
from onmt_qd.opts import (QUANT_OPTIONS, OptionError, policy_from_opts, policy_options,
                          train_parser, validate_distill_opts)
from onmt_qd.quant import QuantPolicy
from onmt_qd.quant.quantizer import MAX_BITS
from onmt_qd.quant_checkpoint import (QUANT_KEY, RUN_KEY, SHADOW_KEY, VALID_KEY,
                                      attach_quantization, quantize_weights)
from onmt_qd.train.fakequant import FakeQuantizer
from onmt_qd.train.precision import AUTOCAST_DTYPES, use_autocast
from onmt_qd.train.schedule import PlateauHalving, QDOptimizer


def corpus_units(opt):
    """What one pass over the training corpora holds in OpenNMT-py's batching units:
    sentences, or for token batches the sum over examples of max(source length,
    target length + 2) as its batcher counts them (pieces when the corpus goes through
    sentencepiece, BOS and EOS on the target). Padding to the longest example of each
    batch is not counted: a real pass takes up to a fifth more token batches."""
    corpora = yaml.safe_load(opt.data) if isinstance(opt.data, str) else opt.data
    units = 0
    for name, corpus in corpora.items():
        if name == CorpusTask.VALID:
            continue
        if opt.batch_type == "sents":
            with open(corpus["path_tgt"], encoding="utf-8") as handle:
                units += sum(1 for _ in handle)
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


class QDModelSaver(ModelSaver):
    """Checkpoints in the stock layout, written atomically. With quantized training the
    stock keys hold Q(w) and ``qd_quant``/``qd_shadow`` what resuming and compression
    need; the best validation checkpoint is also kept as ``<save_model>_best.pt``.
    Every checkpoint records ``run`` (RUN_KEY), the run that wrote it."""

    fake_quant = None
    valid_ppl = None
    best_ppl = math.inf
    run = None

    @staticmethod
    def writes():
        """Only rank 0 writes (and removes) checkpoints."""
        return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0

    def _save(self, step, model):
        if not self.writes():
            return None, None
        if self.fake_quant is not None:
            self.fake_quant.restore()
        weights = model_weights(model)
        if not all(w.isfinite().all() for w in weights.values() if w.is_floating_point()):
            raise self.diverged(step, "the weights are not finite")
        checkpoint = {"vocab": vocabs_to_dict(self.vocabs), "opt": self.model_opt,
                      "optim": self.optim.state_dict(), RUN_KEY: self.run}
        if self.fake_quant is not None:
            shadow = {k: weights[k] for k in self.fake_quant.bits}
            weights, quantized = quantize_weights(weights, self.fake_quant.policy,
                                                  bits=self.fake_quant.bits)
            attach_quantization(checkpoint, weights, quantized, self.fake_quant.policy)
            checkpoint[SHADOW_KEY] = shadow
        else:
            checkpoint["model"], checkpoint["generator"] = split_weights(weights)
        if self.valid_ppl is not None:
            checkpoint[VALID_KEY] = {"ppl": self.valid_ppl, "step": step}
        path = f"{self.base_path}_step_{step}.pt"
        logger.info(f"Saving checkpoint {path}")
        with self.writing(path, self.last_checkpoint()):
            save_atomic(checkpoint, path)
        if self.valid_ppl is not None and self.valid_ppl < self.best_ppl:
            best = f"{self.base_path}_best.pt"
            with self.writing(best, path), atomic_output(best) as temporary:
                shutil.copyfile(path, temporary)
            self.best_ppl = self.valid_ppl
        return path, None

    def last_checkpoint(self):
        """The last step checkpoint this run wrote, or None."""
        if self.last_saved_step is None:
            return None
        return f"{self.base_path}_step_{self.last_saved_step}.pt"

    @staticmethod
    @contextlib.contextmanager
    def writing(path, last):
        """A failed write (full disk, permissions, read-only file system) is one line
        naming the checkpoint and ``last``, the last one written; atomic_output has
        removed the partial file."""
        try:
            yield
        except OSError as exc:
            kept = f"the last checkpoint written is {last}" if last else \
                "no checkpoint was written"
            raise ValueError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                             f"{kept}. Make room, or choose another -save_model") from exc

    def diverged(self, step, what):
        """The error that stops a diverged run; nothing of it is saved."""
        last = self.last_checkpoint()
        kept = f"the last good checkpoint is {last}" if last else "this run saved no checkpoint"
        return ValueError(f"training stopped at step {step}: {what} (training diverged); "
                          f"{kept}. Lower -learning_rate, or check the distillation and "
                          "quantization options")

    def begin(self, opt):
        """Remove what a killed run left half-written, and with -overwrite_model the
        checkpoints of other runs; when resuming, restore the best validation perplexity
        from ``<save_model>_best.pt`` (then this run's own), so that a worse model never
        replaces it."""
        if not self.writes():
            return
        for path in remove_stale_temporaries(self.base_path):
            logger.info(f"Removed {path}, left half-written by a killed run")
        # only with -overwrite_model: check_resume refused them otherwise
        for path in foreign_checkpoints(opt, self.run if opt.train_from else None):
            os.remove(path)
            logger.info(f"Removed {path}, written by another run (-overwrite_model)")
        best = f"{self.base_path}_best.pt"
        if opt.train_from and os.path.isfile(best):
            record = load_checkpoint(best).get(VALID_KEY)
            if record is not None:
                self.best_ppl = record["ppl"]
                logger.info(f"Resuming: {best} keeps validation perplexity "
                            f"{self.best_ppl:.3f} (step {record['step']}) until a better one")


class QDTrainer(Trainer):
    """Stock Trainer plus the per-epoch learning-rate rule.

    Validation sees the quantized weights (the fake quantizer's forward hook rounds
    deterministically in eval mode), so perplexity, halving and the best checkpoint
    are those of the quantized model."""

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
        step = self.optim.training_step
        super()._gradient_accumulation(batches, normalization, total_stats, report_stats)
        loss = float(total_stats.loss)
        if not math.isfinite(loss) and self.model_saver is not None:
            raise self.model_saver.diverged(step, f"the loss is {loss}")

    def _share_halving(self):
        """Only rank 0 validates: after each validation step every rank takes its
        learning-rate scale, so all GPUs keep stepping with the same rate."""
        plateau = self.optim.plateau
        if plateau is None or self.n_gpu <= 1 or self.parallel_mode != "data_parallel":
            return
        step = self.optim.training_step
        if step > 1 and (step - 1) % self.valid_steps == 0:
            scale = torch.tensor([plateau.scale], device=f"cuda:{torch.cuda.current_device()}")
            torch.distributed.broadcast(scale, 0)
            plateau.scale = scale.item()


def resume_from_shadow(checkpoint):
    """A quantized checkpoint resumes from its full-precision shadow weights."""
    if checkpoint is not None and SHADOW_KEY in checkpoint:
        weights = named_weights(checkpoint)
        weights.update(checkpoint[SHADOW_KEY])
        checkpoint["model"], checkpoint["generator"] = split_weights(weights)


def train_single(opt, device_id):
    configure_process(opt, device_id)
    init_logger(opt.log_file)
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
    del checkpoint
    # Before anything is written: a cache made from other data is refused here.
    teacher = teacher_from_opts(opt, vocabs, next(model.parameters()).device)

    saver = QDModelSaver(opt.save_model, model, model_opt, vocabs, optim,
                         opt.keep_checkpoint, opt.save_format, device_id)
    saver.run = run
    saver.begin(opt)
    policy = policy_from_opts(opt)
    if policy is not None:
        saver.fake_quant = FakeQuantizer(model, policy)
        saver.fake_quant.attach(model, optim)
        logger.info(f"Quantized training: {len(saver.fake_quant.bits)} tensors, "
                    f"{policy.bits} bits, bucket {policy.bucket_size}, {policy.method}")
    os.makedirs(os.path.dirname(os.path.abspath(opt.save_model)), exist_ok=True)

    trainer = QDTrainer.adopt(build_trainer(opt, device_id, model, vocabs, optim,
                                            model_saver=saver))
    trainer.valid_steps = opt.valid_steps
    if teacher is not None:
        loss = DistillLossCompute.from_opts(opt, model, vocabs["tgt"])
        loss.set_teacher(teacher, opt.distill_weight, opt.distill_temperature)
        trainer.train_loss = loss
        logger.info(f"Distilling from {opt.teacher_model or opt.teacher_cache}: "
                    f"lambda={opt.distill_weight}, "
                    f"T={opt.distill_temperature}")

    parallel = opt.parallel_mode == "data_parallel"
    train_iter = build_dynamic_dataset_iter(
        opt, transforms_cls, vocabs, task=CorpusTask.TRAIN, copy=opt.copy_attn,
        stride=max(1, len(opt.gpu_ranks)) if parallel else 1,
        offset=max(0, device_id) if parallel else 0, device_id=device_id)
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


def check_opts(opt):
    """Every option check that can fail, before any process starts or file is written."""
    if opt.world_size > 1 and not opt.gpu_ranks:
        raise OptionError(f"-world_size {opt.world_size} without -gpu_ranks would start no "
                          "training process: distributed CPU training is not supported "
                          "yet; drop -world_size to train in one process, or give one "
                          "-gpu_ranks index per GPU on a GPU machine")
    ArgumentParser.validate_train_opts(opt)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    validate_distill_opts(opt)
    policy_from_opts(opt)
    defaults = train_parser()
    for dest in QUANT_OPTIONS[1:] if not opt.quant_bits else ():
        if getattr(opt, dest) != defaults.get_default(dest):
            raise OptionError(f"-{dest} applies to quantized training, and -quant_bits is "
                              f"not set: add -quant_bits (1 to {MAX_BITS}), or drop -{dest}")
    if opt.autocast != "none" and opt.model_dtype == "fp16":
        raise OptionError(f"-autocast {opt.autocast} and -model_dtype fp16 are two mixed "
                          "precisions: choose one")
    if opt.epochs and opt.single_pass:
        raise OptionError("-epochs and -single_pass both say how long to train: choose one")
    if opt.epochs < 0:
        raise OptionError(f"-epochs must be >= 0, got {opt.epochs}")
    if opt.epochs:
        for option in ("train_steps", "valid_steps", "save_checkpoint_steps"):
            if getattr(opt, option) != defaults.get_default(option):
                raise OptionError(f"-epochs {opt.epochs} sets -{option} itself (training, "
                                  "validation and saving go by epochs): leave -"
                                  f"{option} out, or set -epochs 0 to count steps")
    if opt.save_format != "pytorch":
        raise OptionError(f"-save_format {opt.save_format} is not supported: OpenNMT-py's "
                          "safetensors saver drops the quantization state and validation "
                          "record; use -save_format pytorch (onmt_qd_compress makes the "
                          "compact file)")
    if (opt.teacher_model or opt.teacher_cache) and opt.truncated_decoder:
        raise OptionError("distillation needs whole targets: set -truncated_decoder 0")
    if opt.topk is not None and not opt.teacher_cache:
        raise OptionError("-topk applies to -teacher_cache: set both or neither")
    if opt.teacher_cache and opt.distill_temperature != 1.0:
        raise OptionError("a cached teacher distills at temperature 1 (it stores T = 1 "
                          "log-probabilities): set -distill_temperature 1 or use -teacher_model")
    if opt.teacher_cache and opt.label_smoothing:
        raise OptionError("the cached-teacher loss uses plain cross-entropy: unset "
                          "-label_smoothing or use -teacher_model")


# options that shape the model: with -train_from, OpenNMT-py builds the checkpoint's
MODEL_SHAPE = ("layers", "hidden_size", "word_vec_size", "encoder_type", "decoder_type",
               "rnn_type", "global_attention", "input_feed")


def check_resume(opt):
    """What a run keeps and what it may replace, settled before anything is written.

    With -train_from, the resumed model keeps its shape, its quantization and its
    vocabulary: an option set to something else is refused, an unset quantization option
    takes the checkpoint's value (said in the log), and a checkpoint already at
    -train_steps (after -epochs has set it) is refused, as is a truncated or foreign
    file. Any run: the checkpoints another run left under -save_model are refused
    unless -overwrite_model (foreign_checkpoints)."""
    checkpoint = None
    if opt.train_from:
        check_input_file(opt.train_from, "-train_from")
        checkpoint = load_checkpoint(opt.train_from)
        keep_model(opt, checkpoint)
    foreign = foreign_checkpoints(opt, checkpoint)
    if foreign and not opt.overwrite_model:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        resumed = " nor by the run -train_from continues" if opt.train_from else ""
        raise OptionError(f"-save_model {opt.save_model}: {foreign[0]}{more} was not "
                          f"written by this run{resumed}; choose another -save_model, move "
                          "it away, or give -overwrite_model to replace it")


def keep_model(opt, checkpoint):
    """check_resume's checks of the -train_from ``checkpoint``; sets the quantization
    options to the checkpoint's."""
    path = opt.train_from
    defaults = train_parser()

    def keep(key, trained, what, remedy):
        asked = getattr(opt, key)
        if asked != defaults.get_default(key) and asked != trained:
            raise OptionError(f"-train_from {path} has -{key} {trained}, and this run sets "
                              f"-{key} {asked}: a resumed model keeps its {what}; drop "
                              f"-{key}, or {remedy}")

    for key in MODEL_SHAPE:
        trained = getattr(checkpoint["opt"], key, None)
        if trained is not None:
            keep(key, trained, "shape", "train from scratch")
    policy = (QuantPolicy.from_dict(checkpoint[QUANT_KEY]["policy"])
              if QUANT_KEY in checkpoint else None)
    kept = policy_options(policy) if policy is not None else {}
    for key, trained in kept.items():
        keep(key, trained, "quantization",
             "train from a full-precision checkpoint or from scratch")
    if not opt.update_vocab:
        check_same_vocabs(checkpoint["vocab"], configured_vocabs(opt),
                          this=f"-train_from {path}", other="the config's",
                          remedy="a resumed model keeps its vocabulary: name the vocab "
                          "files it was trained with, or train from scratch")
    optim = checkpoint.get("optim")
    step = optim.get("training_step", 1) - 1 if isinstance(optim, dict) else 0
    if opt.reset_optim != "all" and step >= opt.train_steps:
        raise OptionError(f"-train_from {path} is at step {step} and training "
                          f"stops at step {opt.train_steps}: nothing is left to train; "
                          "raise -train_steps (or -epochs)")
    if policy is not None:
        vars(opt).update(kept)
        logger.info(f"Resuming {path}: it keeps its quantization, {policy.bits} bits, "
                    f"bucket {policy.bucket_size}, {policy.method}")


def configured_vocabs(opt):
    """The vocabularies the data config names, built as OpenNMT-py builds a new run's
    (on a copy of the options: its checks parse -data in place, and log, again when
    training starts)."""
    probe = copy.deepcopy(opt)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        ArgumentParser.validate_prepare_opts(probe)
        specials = get_specials(probe, get_transforms_cls(probe._all_transform))
        return vocabs_to_dict(build_vocab(probe, specials))
    finally:
        logger.setLevel(level)


STEP_NAME = re.compile(r"_step_\d+\.pt")


def foreign_checkpoints(opt, checkpoint):
    """The checkpoints under -save_model that this run did not write: all of them for a
    new run; for a resumed run (``checkpoint``: its -train_from), the step checkpoints
    unless -train_from is one of them, and a _best.pt of another run (same_run)."""
    prefix = opt.save_model
    steps = sorted(path for path in glob.glob(f"{glob.escape(prefix)}_step_*.pt")
                   if STEP_NAME.fullmatch(path[len(prefix):]))
    best = f"{prefix}_best.pt"
    resumed = [path for path in [*steps, best] if opt.train_from and os.path.isfile(path)
               and same_file(path, opt.train_from)]
    foreign = [] if resumed else steps
    if os.path.isfile(best) and best not in resumed and not (
            checkpoint and same_run(load_checkpoint(best), checkpoint)):
        foreign.append(best)
    return foreign


def same_run(best, checkpoint):
    """Whether ``best`` was written by the run that wrote ``checkpoint``: the same run id;
    for two checkpoints written before runs had ids, the same model shape (a resumed
    older run keeps its _best.pt; another architecture's never counts as its best)."""
    if RUN_KEY in best or RUN_KEY in checkpoint:
        return best.get(RUN_KEY) == checkpoint.get(RUN_KEY)
    return all(getattr(best["opt"], key, None) == getattr(checkpoint["opt"], key, None)
               for key in MODEL_SHAPE)


def train(opt):
    init_logger(opt.log_file)
    check_opts(opt)
    apply_epochs(opt)
    check_resume(opt)
    if opt.world_size > 1:
        context = torch.multiprocessing.get_context("spawn")
        error_queue = context.SimpleQueue()
        error_handler = ErrorHandler(error_queue)
        procs = []
        for device_id in range(len(opt.gpu_ranks)):
            proc = context.Process(target=spawned_train,
                                   args=(train_single, opt, device_id, error_queue))
            proc.start()
            error_handler.add_child(proc.pid)
            procs.append(proc)
        for proc in procs:
            proc.join()
    else:
        train_single(opt, 0 if len(opt.gpu_ranks) == 1 else -1)
