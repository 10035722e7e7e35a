"""Step time of plain training, distillation (live teacher and teacher cache), quantized
training and quantized distillation (live and cached) of the same student on the same
real batches, in one process, as ratios against plain training; the teacher cache's
build time as a fraction of one teacher training epoch and its bytes per target token;
and the time to quantize a 79M-parameter model.

    python benchmarks/step_time.py -config DATA.yaml -teacher T.pt [-student brnn]
        [-layers 1] [-hidden_size 256] [-heads 4] [-bits 4] [-steps 30] [-topk 8]
        [-train_lines N] [-gpu]

-student transformer times a Transformer student (-heads heads, feed-forward 4 x
hidden, sinusoidal position encoding) instead of the brnn LSTM one; the teacher may be
of either family.

DATA.yaml is a data config (a recipe's data_config.yaml too) whose vocabulary matches
the teacher's; the cache is built over its whole training corpus (in a temporary folder),
or over its first -train_lines sentences: the step ratios need only the cache of the
timed batches, and the build's fraction of a teacher epoch is of the same sentences."""
import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time

import torch

from common import device_of, model_opts, seeded_model, sync, training_batches, \
    training_config  # first: it sets the process up for OpenNMT-py
from onmt.constants import DefaultTokens
from onmt.inputters.inputter import dict_to_vocabs

from onmt_qd.compat import load_checkpoint
from onmt_qd.distill import CachedTeacher, LiveTeacher, load_teacher, teacher_forced_logits
from onmt_qd.distill.cache_build import build_teacher_cache
from onmt_qd.opts import parse, teacher_cache_parser
from onmt_qd.quant import QuantPolicy
from onmt_qd.train.fakequant import FakeQuantizer
from onmt_qd.train.epochs import steps_per_epoch


def student_options(args):
    """onmt_qd_train options of the -student family."""
    if args.student == "transformer":
        return ["-encoder_type", "transformer", "-decoder_type", "transformer",
                "-heads", str(args.heads), "-transformer_ff", str(4 * args.hidden_size),
                "-position_encoding"]
    return ["-encoder_type", "brnn", "-global_attention", "general"]


def student_and_batches(args, device):
    opt = model_opts(args.config, "-layers", str(args.layers), "-hidden_size",
                     str(args.hidden_size), "-word_vec_size", str(args.hidden_size),
                     *student_options(args))
    vocabs = dict_to_vocabs(load_checkpoint(args.teacher)["vocab"])
    student = seeded_model(opt, vocabs, device)
    return student, vocabs, training_batches(opt, vocabs, args.steps + 3, device), opt


def run_mode(student, teacher, batches, padding, quant_bits, device):
    """Seconds per step (median over the timed steps, 3 warm-up steps)."""
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    fake = FakeQuantizer(student, QuantPolicy(bits=quant_bits)) if quant_bits else None
    times, quant_times = [], []
    student.train()
    for i, batch in enumerate(batches):
        sync(device)
        start = time.perf_counter()
        if fake:
            fake.quantize(stochastic=False)
            sync(device)
            quant_times.append(time.perf_counter() - start)
        logits = teacher_forced_logits(student, batch)
        target = batch["tgt"][:, 1:, 0].reshape(-1)
        if teacher is not None:
            loss, _ = teacher.distribution(batch).loss(logits, target, padding, 0.7, 1.0)
        else:
            loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=padding,
                                                     reduction="sum")
        optimizer.zero_grad()
        (loss / target.ne(padding).sum()).backward()
        if fake:
            fake.restore()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5)
        optimizer.step()
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    quant = statistics.median(quant_times[3:]) if quant_times else 0.0
    return statistics.median(times), quant


def quantize_large(device, bits):
    """Seconds to quantize 79M parameters: three 50k x 500 matrices (embeddings and
    output layer of a 50k-vocabulary model) and four 2000 x 500 LSTM matrices."""
    shapes = [(50000, 500), (50000, 500), (2000, 500), (2000, 500), (2000, 500), (2000, 500),
              (50000, 500)]
    tensors = {f"t{i}": torch.randn(s, device=device) * 0.1 for i, s in enumerate(shapes)}
    n = sum(t.numel() for t in tensors.values())
    policy = QuantPolicy(bits=bits)
    for _ in range(2):
        sync(device)
        start = time.perf_counter()
        for name, t in tensors.items():
            policy.quantize(name, t).dequantize()
        sync(device)
    return n, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-config", required=True)
    p.add_argument("-teacher", required=True)
    p.add_argument("-student", choices=["brnn", "transformer"], default="brnn")
    p.add_argument("-heads", type=int, default=4, help="-student transformer's heads")
    p.add_argument("-layers", type=int, default=1)
    p.add_argument("-hidden_size", type=int, default=256)
    p.add_argument("-bits", type=int, default=4)
    p.add_argument("-steps", type=int, default=30)
    p.add_argument("-topk", type=int, default=8)
    p.add_argument("-train_lines", type=int, default=0,
                   help="cache only this many training sentences (default: all)")
    p.add_argument("-gpu", action="store_true")
    args = p.parse_args()
    device = device_of(args.gpu)
    workdir = tempfile.mkdtemp(prefix="step_time")
    # a recipe's config works as is
    args.config = training_config(args.config, workdir, args.train_lines)
    student, vocabs, batches, opt = student_and_batches(args, device)
    teacher = load_teacher(args.teacher, vocabs, device)
    padding = vocabs["tgt"][DefaultTokens.PAD]
    cache_path = os.path.join(workdir, "cache")
    cache_opt = parse(teacher_cache_parser(), [
        "-config", args.config, "-teacher_model", args.teacher, "-topk", str(args.topk),
        "-output", cache_path, "-batch_size", "64", "-num_workers", "0", "-bucket_size", "10000"]
        + (["-gpu_ranks", "0"] if args.gpu else []))
    sync(device)
    start = time.perf_counter()
    build_teacher_cache(cache_opt)
    sync(device)
    build_seconds = time.perf_counter() - start
    opt.teacher_cache = cache_path
    cached = CachedTeacher.from_opts(opt, vocabs, device)
    live = LiveTeacher(teacher)
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    rows = []
    for label, distill, bits in (("plain", None, 0), ("distill live", live, 0),
                                 ("distill cache", cached, 0),
                                 (f"quant{args.bits}", None, args.bits),
                                 (f"quant{args.bits}+distill live", live, args.bits),
                                 (f"quant{args.bits}+distill cache", cached, args.bits)):
        torch.nn.Module.load_state_dict(student, initial)  # not OpenNMT-py's loader
        rows.append((label, *run_mode(student, distill, batches, padding, bits, device)))
    trainable_teacher = copy.deepcopy(teacher)
    for param in trainable_teacher.parameters():
        param.requires_grad_(True)
    teacher_step, _ = run_mode(trainable_teacher, None, batches, padding, 0, device)
    base = rows[0][1]
    n_params = sum(p.numel() for p in student.parameters())
    print(f"device {device}, {args.student} student {args.layers}x{args.hidden_size} "
          f"({n_params:,} params), "
          f"{args.steps} steps of 64 sentences, median seconds per step")
    for label, seconds, quant in rows:
        share = (f", quantization {quant * 1000:.1f} ms = {quant / seconds:.0%} of the step"
                 if quant else "")
        print(f"{label:<26} {seconds * 1000:8.1f} ms   {seconds / base:5.2f}x plain{share}")
    header = cached.cache.header
    size = sum(os.path.getsize(os.path.join(cache_path, f)) for f in os.listdir(cache_path))
    epoch = teacher_step * steps_per_epoch(opt)
    print(f"teacher cache, top {args.topk}: built in {build_seconds:.1f} s over "
          f"{header['sentences']:,} sentences = {build_seconds / epoch:.2f} of one teacher "
          f"training epoch ({teacher_step * 1000:.1f} ms/step x {steps_per_epoch(opt)} steps = "
          f"{epoch:.1f} s); "
          f"{size:,} bytes for {header['rows']:,} target tokens = {size / header['rows']:.1f} "
          "bytes per target token")
    shutil.rmtree(workdir)
    n, seconds = quantize_large(device, args.bits)
    print(f"quantizing {n / 1e6:.1f}M parameters to {args.bits} bits (bucket 256): {seconds:.2f} s")


if __name__ == "__main__":
    main()
