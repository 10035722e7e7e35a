"""Training's fake quantizer, tensor by tensor (the baseline: what FakeQuantizer did
before it packed tensors into one buffer) against one vectorised pass per bit width,
on the same student, the same real batches, in one process. Prints each one's time
and its share of a quantized training step, and the speed-up.

    python benchmarks/fake_quant.py -config DATA.yaml [-layers 1] [-hidden_size 256]
        [-bits 4] [-steps 20] [-gpu]

DATA.yaml is an onmt_qd_train data config with built vocabularies (the recipe's
data_config.yaml)."""
import argparse
import dataclasses
import statistics
import tempfile
import time

import torch

from common import device_of, model_opts, seeded_model, sync, training_batches, \
    training_config  # first: it sets the process up for OpenNMT-py
from onmt.constants import DefaultTokens
from onmt.train_single import prepare_transforms_vocabs
from onmt.transforms import get_transforms_cls

from onmt_qd.quant import QuantPolicy
from onmt_qd.train.fakequant import FakeQuantizer


def student_and_batches(args, config, device):
    opt = model_opts(config, "-layers", str(args.layers), "-hidden_size",
                     str(args.hidden_size), "-word_vec_size", str(args.hidden_size),
                     "-encoder_type", "brnn", "-global_attention", "general")
    vocabs = prepare_transforms_vocabs(opt, get_transforms_cls(opt._all_transform))
    student = seeded_model(opt, vocabs, device)
    batches = training_batches(opt, vocabs, args.steps, device)
    return student, vocabs["tgt"][DefaultTokens.PAD], batches


def step(student, fake, optimizer, batch, padding, device):
    """One quantized training step; returns (step seconds, quantizer seconds)."""
    sync(device)
    start = time.perf_counter()
    fake.quantize(stochastic=False)
    sync(device)
    quantized = time.perf_counter()
    out, _ = student(batch["src"], batch["tgt"], batch["srclen"])
    logits = student.generator(out.reshape(-1, out.size(-1)))
    target = batch["tgt"][:, 1:, 0].reshape(-1)
    loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=padding,
                                             reduction="sum")
    optimizer.zero_grad()
    (loss / target.ne(padding).sum()).backward()
    fake.restore()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 5)
    optimizer.step()
    sync(device)
    end = time.perf_counter()
    return end - start, quantized - start


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-config", required=True)
    p.add_argument("-layers", type=int, default=1)
    p.add_argument("-hidden_size", type=int, default=256)
    p.add_argument("-bits", type=int, default=4)
    p.add_argument("-steps", type=int, default=20)
    p.add_argument("-gpu", action="store_true")
    args = p.parse_args()
    device = device_of(args.gpu)
    with tempfile.TemporaryDirectory(prefix="fake_quant") as folder:
        # a recipe's config works as is
        student, padding, batches = student_and_batches(
            args, training_config(args.config, folder), device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    vectorised = FakeQuantizer(student, QuantPolicy(bits=args.bits))
    per_tensor = FakeQuantizer(student, QuantPolicy(bits=args.bits))
    per_tensor.quantizer = dataclasses.replace(per_tensor.quantizer, bucket_local=False)
    times = {"per tensor": [], "vectorised": []}
    student.train()
    for i, batch in enumerate(batches):  # alternate, so both see the same load
        for label, fake in (("per tensor", per_tensor), ("vectorised", vectorised)):
            timing = step(student, fake, optimizer, batch, padding, device)
            if i >= 2:  # warm-up
                times[label].append(timing)
    n_params = sum(p.numel() for p in student.parameters())
    print(f"device {device}, student {args.layers}x{args.hidden_size} ({n_params:,} params, "
          f"{len(vectorised.bits)} quantized tensors), {args.bits} bits, bucket 256, "
          f"{len(batches) - 2} steps of 64 sentences each, medians")
    quant = {}
    for label, rows in times.items():
        step_s = statistics.median(s for s, _ in rows)
        quant[label] = statistics.median(q for _, q in rows)
        print(f"{label:<11} step {step_s * 1000:7.1f} ms, quantizer {quant[label] * 1000:6.1f} ms"
              f" = {quant[label] / step_s:5.1%} of the step")
    print(f"vectorised quantizer: {quant['per tensor'] / quant['vectorised']:.2f}x faster "
          "than tensor by tensor")


if __name__ == "__main__":
    main()
