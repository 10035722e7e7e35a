"""bf16 autocast in training: the model computes in bf16, while the losses (CE and the
KL) and the fake quantizer work in fp32, and a real run trains and saves."""
import dataclasses
import math

import torch
from onmt.utils.parse import ArgumentParser

from conftest import run_cli
from onmt_qd.compat import load_checkpoint
from onmt_qd.distill import teacher_forced_logits
from onmt_qd.distill.loss import distillation_loss
from onmt_qd.models import build_model_from_checkpoint
from onmt_qd.opts import parse, train_parser
from onmt_qd.quant import QuantPolicy
from onmt_qd.train.fakequant import FakeQuantizer
from onmt_qd.train.precision import use_autocast
from test_teacher_cache import training_batches


def test_bf16_autocast_computes_in_bf16_but_losses_and_quantizer_in_fp32(data, teacher):
    teacher_net, vocabs, _ = build_model_from_checkpoint(teacher)
    student, _, _ = build_model_from_checkpoint(teacher)
    student.train()
    fake = FakeQuantizer(student, QuantPolicy(bits=4, bucket_size=64))
    fake.attach(student, type("Optim", (), {"before_step": []})())
    seen = []
    rounding = fake.quantizer.fake
    fake.quantizer = dataclasses.replace(
        fake.quantizer, fake=lambda flat, *args: seen.append(flat.dtype) or rounding(flat, *args))
    attention_dtypes = []  # the attention's output layer: a matrix product autocast lowers
    student.decoder.attn.linear_out.register_forward_hook(
        lambda module, inputs, output: attention_dtypes.append(output.dtype))
    use_autocast(student, torch.bfloat16)

    opt = parse(train_parser(), ["-config", data["config"]])
    ArgumentParser.validate_prepare_opts(opt)
    batch = next(training_batches(opt, vocabs, 1))
    logits = teacher_forced_logits(student, batch)
    with torch.no_grad():
        teacher_logits = teacher_forced_logits(teacher_net, batch)
    target = batch["tgt"][:, 1:, 0].reshape(-1)
    loss, ce = distillation_loss(logits, teacher_logits, target, vocabs["tgt"]["<blank>"],
                                 0.7, 1.0)
    loss.backward()

    assert attention_dtypes and set(attention_dtypes) == {torch.bfloat16}
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert seen and set(seen) == {torch.float32}  # the quantizer rounds fp32 weights
    assert math.isfinite(loss.item()) and math.isfinite(ce.item())
    for name, param in student.named_parameters():
        assert param.dtype == torch.float32, name
        assert param.grad is not None and param.grad.isfinite().all(), name


def test_bf16_quantized_distillation_trains_and_saves(data, teacher, tmp_path):
    check_bf16_training(data, teacher, tmp_path)


def check_bf16_training(data, teacher, tmp_path, *device_args):
    """A real 4-bit quantized distillation run under bf16 autocast (also on CUDA, from
    tests/test_gpu.py): it trains, validates to a finite perplexity and saves fp32."""
    save = tmp_path / "bf16"
    result = run_cli("train", "-config", data["config"], "-save_model", save, "-train_steps", 4,
                     "-valid_steps", 4, "-save_checkpoint_steps", 4, "-teacher_model", teacher,
                     "-quant_bits", 4, "-autocast", "bf16", *device_args)
    assert "forward under bf16 autocast" in result.stderr + result.stdout
    checkpoint = load_checkpoint(f"{save}_step_4.pt")
    assert all(w.dtype == torch.float32 for w in checkpoint["model"].values()
               if w.is_floating_point())
    assert math.isfinite(checkpoint["qd_valid"]["ppl"])
