"""Step time of plain training, distillation, quantized training and quantized
distillation of the same student on the same real batches, in one process, as ratios
against plain training; and the time to quantize a 79M-parameter model.

    python benchmarks/step_time.py -config DATA.yaml -teacher T.pt [-layers 1]
        [-hidden_size 256] [-bits 4] [-steps 30] [-gpu]

DATA.yaml is an onmt_qd_train data config whose vocabulary matches the teacher's."""
import argparse
import statistics
import time

import torch
from onmt.constants import CorpusTask, DefaultTokens
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.inputters.inputter import dict_to_vocabs
from onmt.model_builder import build_base_model
from onmt.transforms import get_transforms_cls
from onmt.utils.parse import ArgumentParser

from onmt_qd.compat import load_checkpoint
from onmt_qd.distill import distillation_loss, load_teacher
from onmt_qd.opts import parse, train_parser
from onmt_qd.quant import QuantPolicy
from onmt_qd.train.fakequant import FakeQuantizer


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def student_and_batches(args, device):
    opt = parse(train_parser(), ["-config", args.config, "-layers", str(args.layers),
                                 "-hidden_size", str(args.hidden_size), "-word_vec_size",
                                 str(args.hidden_size), "-encoder_type", "brnn", "-batch_size",
                                 "64", "-num_workers", "0", "-bucket_size", "10000",
                                 "-global_attention", "general"])
    ArgumentParser.validate_prepare_opts(opt)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    vocabs = dict_to_vocabs(load_checkpoint(args.teacher)["vocab"])
    torch.manual_seed(1)
    student = build_base_model(opt, vocabs).to(device)
    for p in student.parameters():
        torch.nn.init.uniform_(p, -0.1, 0.1)
    device_id = device.index if device.type == "cuda" else -1
    iterator = build_dynamic_dataset_iter(opt, get_transforms_cls(opt._all_transform), vocabs,
                                          task=CorpusTask.TRAIN, device_id=device_id)
    batches = []
    for batch, _ in iterator:
        batches.append(batch)
        if len(batches) == args.steps + 3:
            break
    return student, vocabs, batches


def run_mode(student, teacher, batches, padding, distill, quant_bits, device):
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
        out, _ = student(batch["src"], batch["tgt"], batch["srclen"])
        logits = student.generator(out.reshape(-1, out.size(-1)))
        target = batch["tgt"][:, 1:, 0].reshape(-1)
        if distill:
            with torch.no_grad():
                t_out, _ = teacher(batch["src"], batch["tgt"], batch["srclen"])
                t_logits = teacher.generator(t_out.reshape(-1, t_out.size(-1)))
            loss, _ = distillation_loss(logits, t_logits, target, padding, 0.7, 1.0)
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
    p.add_argument("-layers", type=int, default=1)
    p.add_argument("-hidden_size", type=int, default=256)
    p.add_argument("-bits", type=int, default=4)
    p.add_argument("-steps", type=int, default=30)
    p.add_argument("-gpu", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda:0" if args.gpu else "cpu")
    student, vocabs, batches = student_and_batches(args, device)
    teacher = load_teacher(args.teacher, vocabs, device)
    padding = vocabs["tgt"][DefaultTokens.PAD]
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    rows = []
    for label, distill, bits in (("plain", False, 0), ("distill", True, 0),
                                 (f"quant{args.bits}", False, args.bits),
                                 (f"quant{args.bits}+distill", True, args.bits)):
        torch.nn.Module.load_state_dict(student, initial)  # not OpenNMT-py's loader
        rows.append((label, *run_mode(student, teacher, batches, padding, distill, bits, device)))
    base = rows[0][1]
    n_params = sum(p.numel() for p in student.parameters())
    print(f"device {device}, student {args.layers}x{args.hidden_size} ({n_params:,} params), "
          f"{args.steps} steps of 64 sentences, median seconds per step")
    for label, seconds, quant in rows:
        share = f", quantization {quant * 1000:.1f} ms = {quant / seconds:.0%} of the step" if quant else ""
        print(f"{label:<18} {seconds * 1000:8.1f} ms   {seconds / base:5.2f}x plain{share}")
    n, seconds = quantize_large(device, args.bits)
    print(f"quantizing {n / 1e6:.1f}M parameters to {args.bits} bits (bucket 256): {seconds:.2f} s")


if __name__ == "__main__":
    main()
