"""Quantized training (Algorithm 1): the straight-through step, and a real quantized
distillation run whose saved model is what validation measured."""
import glob

import torch

from conftest import run_cli
from onmt_qd.compat import load_checkpoint
from onmt_qd.evaluate.metrics import reference_perplexity
from onmt_qd.models import build_model_from_checkpoint
from onmt_qd.quant import QuantPolicy
from onmt_qd.quant_checkpoint import levels_per_bucket, quantization_of
from onmt_qd.train.fakequant import FakeQuantizer
from onmt_qd.train.schedule import QDOptimizer


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(300, 4)
        self.generator = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.generator(torch.tanh(self.layer(x)))


def test_straight_through_step_updates_shadow_by_the_gradient_at_quantized_weights():
    net = TinyNet()
    policy = QuantPolicy(bits=2, bucket_size=64)
    fake = FakeQuantizer(net, policy)
    lr = 0.1
    optim = QDOptimizer(torch.optim.SGD(net.parameters(), lr=lr), lr, max_grad_norm=0)
    fake.attach(net, optim)
    shadow_before = {k: p.detach().clone() for k, p in net.named_parameters()}
    x, y = torch.randn(8, 300), torch.randint(0, 3, (8,))

    # the reference: gradient of the same loss evaluated at Q(w), by hand
    reference = TinyNet()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            value = shadow_before[name]
            if name in fake.bits:
                value = policy.quantize(name, value, stochastic=False).dequantize()
            param.copy_(value)
    torch.nn.functional.cross_entropy(reference(x), y).backward()

    optim.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    for name in fake.bits:  # forward ran on quantized weights
        assert not torch.equal(dict(net.named_parameters())[name], shadow_before[name])
    optim.backward(loss)
    optim.step()
    for name, param in net.named_parameters():
        expected = shadow_before[name] - lr * dict(reference.named_parameters())[name].grad
        assert torch.allclose(param, expected, atol=1e-7), name


def test_quantized_distillation_run(data, teacher, tmp_path):
    save = tmp_path / "qd"
    run_cli("train", "-config", data["config"], "-save_model", save, "-epochs", 3,
            "-teacher_model", teacher, "-quant_bits", 2, "-quant_bucket_size", 64)
    steps = sorted(glob.glob(f"{save}_step_*.pt"), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    ppls = [load_checkpoint(p)["qd_valid"]["ppl"] for p in steps]
    assert ppls[-1] < ppls[0], ppls  # it learns

    best = load_checkpoint(f"{save}_best.pt")
    policy, tensors = quantization_of(best)
    assert policy.bits == 2 and tensors
    weights = {**best["model"], **{f"generator.{k}": v for k, v in best["generator"].items()}}
    for name, qt in tensors.items():
        assert levels_per_bucket(qt) <= 4
        assert torch.equal(weights[name], qt.dequantize())  # stock keys hold Q(w)
        buckets = weights[name].flatten()[: qt.bucket_size * (qt.levels.numel() // qt.bucket_size)]
        distinct = max(len(torch.unique(b)) for b in buckets.view(-1, qt.bucket_size))
        assert distinct <= 4
        assert not torch.equal(best["qd_shadow"][name], weights[name])  # shadow kept for resume

    # the perplexity validation reported is the perplexity of the saved quantized model
    model, vocabs, model_opt = build_model_from_checkpoint(best)
    ppl = reference_perplexity(model, vocabs, model_opt, data["valid.de"], data["valid.en"])
    assert abs(ppl - best["qd_valid"]["ppl"]) / ppl < 1e-4, (ppl, best["qd_valid"]["ppl"])
