"""onmt_qd_train's option checks, all before any process starts or file is written:
what the options allow, what a resumed run keeps, and which files under -save_model
this run may replace."""
import copy
import glob
import logging
import os
import re

from onmt.inputters import build_vocab
from onmt.inputters.inputter import vocabs_to_dict
from onmt.transforms import get_specials, get_transforms_cls
from onmt.utils.logging import logger
from onmt.utils.parse import ArgumentParser

from onmt_qd.compat import load_checkpoint
from onmt_qd.distill import check_same_vocabs
from onmt_qd.distill.rules import check_distill_opts
from onmt_qd.fileio import check_corpora_no_bom, check_input_file, same_file
from onmt_qd.opts import QUANT_OPTIONS, OptionError, policy_from_opts, policy_options, train_parser
from onmt_qd.quant import MAX_BITS, QuantPolicy
from onmt_qd.quant_checkpoint import QUANT_KEY, RUN_KEY
from onmt_qd.processes import check_cpu_backend, cpu_processes


def check_opts(opt):
    """Every option check that can fail, before any process starts or file is written;
    returns the quantization policy the options describe (None: full precision)."""
    check_cpu_backend(opt, "trains")
    if cpu_processes(opt) and opt.parallel_mode != "data_parallel":
        raise OptionError(f"-parallel_mode {opt.parallel_mode} on CPU processes is not "
                          "supported: use -parallel_mode data_parallel, or -gpu_ranks")
    ArgumentParser.validate_train_opts(opt)
    check_corpora_no_bom(opt.data)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    check_distill_opts(opt)
    policy = policy_from_opts(opt)
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
    if opt.lr_halving == "plateau":
        for option in ("decay_method", "start_decay_steps", "decay_steps",
                       "learning_rate_decay", "warmup_steps"):
            if getattr(opt, option) != defaults.get_default(option):
                raise OptionError(f"-lr_halving plateau replaces OpenNMT-py's step-based "
                                  f"learning-rate schedule, which -{option} "
                                  f"{getattr(opt, option)} sets: drop -{option}, or set "
                                  "-lr_halving none to keep OpenNMT-py's schedule")
    if opt.save_format != "pytorch":
        raise OptionError(f"-save_format {opt.save_format} is not supported: OpenNMT-py's "
                          "safetensors saver drops the quantization state and validation "
                          "record; use -save_format pytorch (onmt_qd_compress makes the "
                          "compact file)")
    return policy


# options that shape the model, of every OpenNMT-py encoder-decoder (rnn/brnn with LSTM
# or GRU, transformer): with -train_from, OpenNMT-py builds the checkpoint's model and
# would ignore them
MODEL_SHAPE = (
    "model_type", "encoder_type", "decoder_type", "layers", "enc_layers", "dec_layers",
    "hidden_size", "enc_hid_size", "dec_hid_size", "word_vec_size", "src_word_vec_size",
    "tgt_word_vec_size", "share_embeddings", "share_decoder_embeddings", "feat_merge",
    # recurrent
    "rnn_type", "global_attention", "input_feed", "bridge", "context_gate",
    "coverage_attn", "copy_attn",
    # transformer
    "heads", "transformer_ff", "position_encoding", "position_encoding_type",
    "max_relative_positions", "rotary_interleave", "rotary_theta", "rotary_dim",
    "num_kv", "add_qkvbias", "add_ffnbias", "layer_norm", "pos_ffn_activation_fn",
    "parallel_residual", "shared_layer_norm", "aan_useffn")


def check_resume(opt, policy):
    """What a run keeps and what it may replace, settled before anything is written;
    returns the quantization policy it trains with: ``policy`` (check_opts's), or the
    resumed checkpoint's.

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
        policy = keep_model(opt, checkpoint) or policy
    foreign = foreign_checkpoints(opt, checkpoint)
    if foreign and not opt.overwrite_model:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        resumed = " nor by the run -train_from continues" if opt.train_from else ""
        raise OptionError(f"-save_model {opt.save_model}: {foreign[0]}{more} was not "
                          f"written by this run{resumed}; choose another -save_model, move "
                          "it away, or give -overwrite_model to replace it")
    return policy


def keep_model(opt, checkpoint):
    """check_resume's checks of the -train_from ``checkpoint``; sets the quantization
    options to the checkpoint's and returns its policy (None: not quantized)."""
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
    return policy


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
