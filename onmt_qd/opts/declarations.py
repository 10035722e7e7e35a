"""Every option onmt_qd adds to OpenNMT-py, and every command's parser, declared in
one place.

Parsers are OpenNMT-py's own (``onmt.utils.parse.ArgumentParser``) plus our groups,
so ``-config file.yaml`` and every stock option keep working. Unlike ``onmt_train``,
our parsers reject unknown options and unknown YAML keys (opts/parsing.py: typos must
not pass silently)."""
import argparse

import torch
from onmt.opts import config_opts, train_opts, translate_opts
from onmt.utils.parse import ArgumentParser

from onmt_qd.constants import CT2_QUANTIZATIONS, DEFAULT_TOPK, TEACHER_CHUNK_LINES
from onmt_qd.quant import MAX_BITS, QUANTIZERS
from onmt_qd.quant.policy import ROUNDINGS


def distill_opts(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Distillation (onmt_qd)")
    group.add("-teacher_model", "--teacher_model", default=None, nargs="+",
              help="the teacher: an OpenNMT-py checkpoint, or a CTranslate2 translator "
              "directory (its distribution read at each gold token); several checkpoints "
              "are an ensemble, which teaches the mean of their distributions. When set, "
              "the loss is (1-lambda)*CE + lambda*T^2*KL(teacher||student) per target word.")
    group.add("-distill_weight", "--distill_weight", type=float, default=0.7,
              help="lambda: weight of the KL term, in [0, 1].")
    group.add("-distill_temperature", "--distill_temperature", type=float, default=1.0,
              help="T > 0: softmax temperature of teacher and student in the KL term.")
    group.add("-teacher_cache", "--teacher_cache", default=None,
              help="Folder written by onmt_qd_teacher_cache: distill from the teacher's "
              "cached top-K distribution instead of running -teacher_model (T must be 1).")
    group.add("-topk", "--topk", type=int, default=None,
              help="onmt_qd_teacher_cache: tokens kept per position (default "
              f"{DEFAULT_TOPK}). "
              "onmt_qd_train: the K the -teacher_cache must hold (default: any).")


def teacher_cache_opts(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Teacher cache (onmt_qd)")
    group.add("-output", "--output", default=None, help="The cache folder to write.")


def schedule_opts(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Epochs and learning-rate halving (onmt_qd)")
    group.add("-epochs", "--epochs", type=int, default=0,
              help="Train this many epochs; steps per epoch are computed from the "
              "training corpus, and validation/saving happen once per epoch. "
              "0 keeps OpenNMT-py's step-based -train_steps/-valid_steps.")
    group.add("-lr_halving", "--lr_halving", choices=["none", "plateau"], default="none",
              help="plateau: halve the learning rate at every validation from the "
              "first one whose perplexity did not decrease (paper appendix A.3). "
              "Replaces OpenNMT-py's step-based decay.")
    group.add("-start_decay_at_epoch", "--start_decay_at_epoch", type=int, default=0,
              help="With -lr_halving plateau: also halve at every validation from "
              "this epoch on (the 2017 code's start_decay_at); 0 = off.")


# -autocast's values and the dtype each means (train/precision.py applies it)
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16}


def precision_opts(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Precision (onmt_qd)")
    group.add("-autocast", "--autocast", choices=list(AUTOCAST_DTYPES), default="none",
              help="bf16: the model's forward runs under torch.autocast in bfloat16 "
              "(no loss scaling needed); losses, the KL and the quantizers stay fp32. "
              "Faster on GPUs with bf16 tensor cores at large batches; measure with "
              "benchmarks/epoch_time.py. Not with -model_dtype fp16.")


def checkpoint_opts(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Checkpoints (onmt_qd)")
    group.add("-overwrite_model", "--overwrite_model", action="store_true",
              help="Let this run replace the checkpoints another run left under "
              "-save_model (PREFIX_step_*.pt, PREFIX_best.pt: removed when training "
              "starts); without it such a run is refused. OpenNMT-py's -overwrite is "
              "about -save_data (vocabulary, transforms) and data configs set it, so it "
              "does not allow this.")


def distributed_help(parser: ArgumentParser) -> None:
    """What -world_size and -gpu_backend do in onmt_qd_train (OpenNMT-py declares them;
    its help says nothing of CPU processes)."""
    helps = {
        "world_size": "Number of data-parallel processes: one per -gpu_ranks entry, or, "
        "without -gpu_ranks and with -gpu_backend gloo, that many CPU processes on this "
        "machine (ranks 0..N-1, each with batch -batch_size and its share of the cores; "
        "gradients are summed, so N processes step as one with N times the batch).",
        "gpu_backend": "torch.distributed backend: nccl for GPUs; gloo for -world_size CPU "
        "processes (no -gpu_ranks)."}
    for action in parser._actions:
        if action.dest in helps:
            action.help = helps[action.dest]
    group = parser.add_argument_group("Distributed (onmt_qd)")
    group.add("-cpu_ranks", "--cpu_ranks", type=int, nargs="+", default=[],
              help="The ranks (of -world_size) that this machine runs as CPU processes "
              "(gloo, no -gpu_ranks); default: all of them. On several machines, each "
              "runs the same command with its own ranks, e.g. -world_size 4 -cpu_ranks 2 3 "
              "-master_ip HOST_OF_RANK_0 -master_port PORT; rank 0's machine writes the "
              "checkpoints.")


def policy_opts(parser: ArgumentParser, prefix: str) -> None:
    """Quantization policy options; ``prefix`` is "quant_" for training and "" for
    the stand-alone commands (``onmt_qd_quantize -bits 4``)."""
    group = parser.add_argument_group("Quantization (onmt_qd)")

    def add(name, **kw):
        group.add(f"-{prefix}{name}", f"--{prefix}{name}", dest=f"quant_{name}", **kw)

    add("bits", type=int, default=0 if prefix else None,
        help=f"Bits per quantized weight (1-{MAX_BITS})." +
        (" 0 = no quantization." if prefix else ""))
    add("bucket_size", type=int, default=256, help="Bucket size k for min-max scaling.")
    # the registry itself, not a copy: a method registered later is accepted too
    add("method", choices=QUANTIZERS, default="uniform",
        help="uniform: grid of 2^b points; quantile: points at the quantiles of each "
        "tensor; more methods register in onmt_qd/quant/methods.py.")
    add("rounding", choices=ROUNDINGS, default="deterministic",
        help="Rounding to the points. Training: of the forward pass (validation and "
        "saving always round deterministically, so reported numbers are those of the "
        "saved model). onmt_qd_quantize: of the weights it writes (see -seed).")
    add("skip_embeddings", action="store_true", help="Keep embeddings in fp32.")
    add("skip_generator", action="store_true", help="Keep the output layer in fp32.")
    add("biases", action="store_true", help="Also quantize biases (default: fp32).")
    add("include", nargs="*", default=[], help="Regexes of parameter names to quantize too.")
    add("exclude", nargs="*", default=[], help="Regexes of parameter names to keep in fp32.")
    add("bits_override", nargs="*", default=[],
        help="Mixed precision: PATTERN=BITS pairs, e.g. generator=8.")


def command_parser(prog: str, description: str, stock_opts=config_opts,
                   **kwargs) -> ArgumentParser:
    """The parser every command starts from: OpenNMT-py's, so that ``-config FILE.yaml``
    (and ``-save_config``) work alike for all of them. ``stock_opts``: the OpenNMT-py
    options it starts with (train_opts and translate_opts declare -config themselves)."""
    parser = ArgumentParser(prog=prog, description=description, **kwargs)
    stock_opts(parser)
    return parser


def teacher_cache_parser() -> ArgumentParser:
    """onmt_qd_teacher_cache reads the data config onmt_qd_train reads (training keys in
    it are accepted and ignored)."""
    parser = train_parser()
    parser.prog = "onmt_qd_teacher_cache"
    parser.description = ("onmt_qd_teacher_cache: run the teacher once over the training "
                          "corpora and store its top-K distribution per target position "
                          "(onmt_qd_teacher_cache -verify CACHE checks a cache)")
    teacher_cache_opts(parser)
    for action in parser._actions:
        if action.dest == "world_size":
            action.help = ("Build with this many processes on this machine, each running the "
                           "teacher on every N-th batch (the cache is the same bytes as one "
                           "process's): one per -gpu_ranks entry, or CPU processes with "
                           "-gpu_backend gloo.")
    return parser


def teacher_cache_verify_parser() -> ArgumentParser:
    """onmt_qd_teacher_cache -verify CACHE reads no data config, hence a parser of its own."""
    parser = command_parser("onmt_qd_teacher_cache", "onmt_qd_teacher_cache -verify CACHE: "
                            "check every block of a teacher cache against its checksum "
                            "(onmt_qd_train -teacher_cache does so too, before its first step)")
    parser.add("-verify", "--verify", required=True, help="The cache folder to check.")
    return parser


def train_parser() -> ArgumentParser:
    parser = command_parser("onmt_qd_train", "onmt_qd_train: onmt_train plus distillation, "
                            "quantized training and the paper's learning-rate rule",
                            stock_opts=train_opts)
    distributed_help(parser)
    distill_opts(parser)
    schedule_opts(parser)
    precision_opts(parser)
    policy_opts(parser, "quant_")
    checkpoint_opts(parser)
    return parser


def translate_parser() -> ArgumentParser:
    return command_parser("onmt_qd_translate", "onmt_qd_translate: onmt_translate that also "
                          "reads onmt_qd compressed model files", stock_opts=translate_opts)


def teacher_translate_parser() -> ArgumentParser:
    parser = command_parser(
        "onmt_qd_teacher_translate", "onmt_qd_teacher_translate -model TEACHER -src TRAIN.SRC "
        "-output TRAIN.TEACHER [-beam_size 5]: the teacher's translation of a training source "
        "(sequence-level distillation data), one line per source line, in chunks a rerun "
        "after a kill continues from. TEACHER: a checkpoint, or a CTranslate2 directory "
        "(onmt_qd_export's, or a converter's with its SentencePiece models in or beside it).",
        stock_opts=translate_opts)
    parser.add("-chunk_lines", "--chunk_lines", type=int, default=TEACHER_CHUNK_LINES,
               help="sentences translated and written at a time (a kill loses at most one "
               "chunk)")
    parser.add("-scores", "--scores", default=None,
               help="also write each translation's score, one per line: the teacher's "
               "log-probability of it per token (0 for a blank line)")
    return parser


def quantize_parser() -> ArgumentParser:
    parser = command_parser("onmt_qd_quantize", "onmt_qd_quantize -model IN.pt -bits B "
                            "-bucket_size K [-method uniform|quantile] [policy switches] "
                            "-output OUT.pt: post-training (\"PM\") quantization of any "
                            "OpenNMT-py checkpoint. OUT.pt loads in stock OpenNMT-py "
                            "translation.")
    parser.add("-model", "--model", required=True, help="checkpoint to quantize")
    parser.add("-output", "--output", required=True, help="quantized checkpoint to write")
    parser.add("-seed", "--seed", type=int, default=0,
               help="seed of -rounding stochastic (the same seed gives the same weights)")
    policy_opts(parser, "")
    return parser


def diffquant_parser() -> ArgumentParser:
    # -bucket_size is the quantization bucket here, as in onmt_qd_quantize; the data
    # loader's bucket (OpenNMT-py's -bucket_size) is set from -data_bucket_size.
    parser = command_parser("onmt_qd_diffquant", "onmt_qd_diffquant -config DATA.yaml -model "
                            "FP.pt -teacher_model T.pt -bits B -bucket_size K -output OUT.pt: "
                            "learn the quantization points of a trained model (differentiable "
                            "quantization) against a teacher; OUT.pt loads in stock "
                            "translation and compresses with onmt_qd_compress.",
                            stock_opts=train_opts, conflict_handler="resolve")
    distill_opts(parser)
    policy_opts(parser, "")
    group = parser.add_argument_group("Differentiable quantization")
    group.add("-model", "--model", required=True, help="trained full-precision checkpoint")
    group.add("-output", "--output", required=True, help="quantized checkpoint to write")
    group.add("-init", "--init", choices=QUANTIZERS, default="quantile",
              help="initial points of every tensor (a quantization method's points)")
    group.add("-redistribute", "--redistribute", choices=["none", "points", "bits"],
              default="bits", help="bits across tensors by gradient norm: 'points' is the "
              "2017 rule (conserve the number of points), 'bits' a budget in total bits "
              "weighted by tensor size (-avg_bits, default -bits)")
    group.add("-avg_bits", "--avg_bits", type=float, default=None,
              help="average bits per quantized weight for -redistribute bits")
    group.add("-grad_norm_batches", "--grad_norm_batches", type=int, default=10,
              help="batches over which gradient norms are averaged")
    group.add("-data_bucket_size", "--data_bucket_size", type=int, default=10000,
              help="examples the data loader sorts at a time")
    parser.set_defaults(train_steps=300, valid_steps=100, optim="adam", learning_rate=1e-3,
                        report_every=50, num_workers=0, save_model="unused")
    return parser


def compress_parser() -> ArgumentParser:
    from onmt_qd.codec.entropy import CODERS
    from onmt_qd.codec.levelcoding import POOLINGS

    parser = command_parser("onmt_qd_compress", "onmt_qd_compress -model IN.pt -output "
                            "OUT.qdz [-coder huffman|ans]: pack a quantized checkpoint into "
                            "one compressed file and print where its bytes go. -report_only "
                            "prints the report without keeping a file.")
    parser.add("-model", "--model", required=True, help="quantized checkpoint (onmt_qd_train "
               "-quant_bits, onmt_qd_quantize or onmt_qd_diffquant), or a compressed file to "
               "pack again (e.g. with another -coder)")
    parser.add("-output", "--output", default=None, help="compressed file to write")
    parser.add("-coder", "--coder", choices=CODERS, default="huffman")
    parser.add("-pooling", "--pooling", choices=POOLINGS, default="auto",
               help="one code table per tensor, one for all, or whichever is smaller")
    parser.add("-report_only", "--report_only", action="store_true")
    parser.add("-report_json", "--report_json", default=None,
               help="also write the report as JSON")
    return parser


def data_parser() -> ArgumentParser:
    """Two subcommands, each with its own -config (the top parser takes none: configargparse
    would put a subcommand's keys before the subcommand's name)."""
    parser = ArgumentParser(
        prog="onmt_qd_data", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="onmt_qd_data get NAME -dest D [-from MIRROR]\n"
        "   onmt_qd_data spm NAME -dest D [-vocab_size 8000]: joint SentencePiece model.")
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get", help="fetch a dataset")
    config_opts(get)
    get.add("name")
    get.add("-dest", "--dest", required=True)
    get.add("-from", "--from", dest="mirror", default=None,
            help="copy from this local folder instead of downloading")
    spm = sub.add_parser("spm", help="train a joint SentencePiece model on a fetched dataset")
    config_opts(spm)
    spm.add("name")
    spm.add("-dest", "--dest", required=True, help="folder the dataset was fetched into")
    spm.add("-vocab_size", "--vocab_size", type=int, default=8000)
    spm.add("-model_type", "--model_type", default="unigram", choices=["unigram", "bpe"])
    return parser


def recipe_parser() -> ArgumentParser:
    parser = command_parser("onmt_qd_recipe", "onmt_qd_recipe NAME [-profile P] [-data_dir D] "
                            "[-work_dir W] [-stages S ...] [-jobs N]: run a recipe's stages; "
                            "finished stages are skipped, unless their settings changed. One "
                            "run at a time per work folder; its commands stop with it.")
    parser.add("name", help="multi30k, integ200k or wmt13, or the path of your own recipe "
               "file (docs/architecture.md, \"A user's recipe file\")")
    parser.add("-profile", "--profile", default="quick",
               help="a profile of the recipe; multi30k has quick (2 CPU cores, under 30 "
               "minutes), transformer (its Transformer twin), gpu and gpu_transformer (the "
               "paper's sizes, fast settings, one GPU), paper (the paper's settings, GPU), "
               "mini (tests)")
    parser.add("-data_dir", "--data_dir", default=None,
               help="where the dataset is (fetched if absent)")
    parser.add("-work_dir", "--work_dir", default=None, help="default: runs/NAME_PROFILE")
    parser.add("-from", "--from", dest="mirror", default=None, help="local dataset mirror")
    parser.add("-stages", "--stages", nargs="*", default=None, help="run only these stages")
    parser.add("-gpu", "--gpu", action="store_true", help="train and evaluate on GPU 0")
    parser.add("-jobs", "--jobs", type=int, default=None,
               help="stages run side by side, up to this many (default: the profile's jobs, "
               "else 1); evaluation and compression run their models so too")
    return parser


def eval_parser() -> ArgumentParser:
    parser = command_parser("onmt_qd_eval", "onmt_qd_eval -model M -src S [S2 ...] -tgt T "
                            "[T2 ...] [-json OUT.json]: BLEU and chrF (sacrebleu, detokenized, "
                            "with signatures), reference perplexity, parameter count and size "
                            "on disk of a checkpoint, compressed file or onmt_qd_export "
                            "directory. -src - (or -tgt -) reads standard input; -json - or "
                            "-output - writes standard output.")
    parser.add("-model", "--model", required=True, nargs="+",
               help="the model; several checkpoints are an ensemble, decoded as "
               "onmt_translate decodes one and scored (perplexity) by the mean of their "
               "distributions")
    parser.add("-src", "--src", required=True, nargs="+",
               help="source text; several files are several test sets, each translated in "
               "its own run and scored alone (test_sets in -json) and pooled")
    parser.add("-tgt", "--tgt", required=True, nargs="+",
               help="reference translations (raw text), one file per -src file")
    parser.add("-json", "--json", default=None, help="write the results here as JSON")
    parser.add("-output", "--output", default=None, help="keep the translations here")
    parser.add("-beam_size", "--beam_size", type=int, default=5)
    parser.add("-batch_size", "--batch_size", type=int, default=64)
    parser.add("-gpu", "--gpu", type=int, default=-1)
    for side in ("src", "tgt"):
        parser.add(f"-{side}_subword_model", f"--{side}_subword_model", default=None,
                   help=f"the {side} SentencePiece model, when the one the checkpoint names "
                   "is neither where it says nor beside the checkpoint")
    parser.add("-precision", "--precision", choices=["fp32", "int8"], default=None,
               help="default: the model's own; int8: torch dynamic quantization of Linear "
               "and LSTM layers (CPU only); refused with an onmt_qd_export directory, which "
               "has its own quantization (as onmt_qd_translate)")
    return parser


def export_parser() -> ArgumentParser:
    """onmt_qd_export: a CTranslate2 model directory from a Transformer model."""
    parser = command_parser("onmt_qd_export", "onmt_qd_export: write a CTranslate2 model "
                            "directory (with the model's SentencePiece models and a manifest) "
                            "for an OpenNMT-py Transformer checkpoint or onmt_qd compressed "
                            "model; onmt_qd_translate and onmt_qd_eval take the directory as "
                            "-model")
    group = parser.add_argument_group("Export (onmt_qd)")
    group.add("-model", "--model", required=True,
              help="Transformer checkpoint (.pt, quantized or not) or compressed model (.qdz).")
    group.add("-output", "--output", required=True,
              help="The directory to write (new, or an earlier export, which is replaced).")
    group.add("-quantization", "--quantization", choices=CT2_QUANTIZATIONS, default="int8",
              help="CTranslate2's weight type: int8 (one scale per output row; the fastest "
              "on the CPU), int8_float32, int16, float16 (GPU) or float32.")
    return parser
