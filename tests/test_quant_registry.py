"""The quantizer registry (a method added in one place is usable from the command-line
options) and training's vectorised fake quantization, which must give exactly the
per-tensor results."""
import subprocess
import sys

import pytest
import torch

from onmt_qd.models import build_model_from_checkpoint
from onmt_qd.opts import parse, policy_from_opts, train_parser
from onmt_qd.quant import (QUANTIZERS, QuantizedTensor, QuantPolicy, Quantizer,
                           bucket_scales, register_quantizer, scaled_values)
from onmt_qd.train.fakequant import FakeQuantizer


def log_points(tensor, bits, bucket_size, n_points):
    """Toy logarithmic point set: dense near the bucket minimum."""
    return (torch.logspace(0, 1, n_points, base=2.0, device=tensor.device) - 1)


@pytest.fixture
def log_quantizer():
    quantizer = register_quantizer(Quantizer("log", log_points))
    yield quantizer
    del QUANTIZERS["log"]


def test_registered_quantizer_is_a_command_line_choice_and_quantizes(data, log_quantizer):
    opt = parse(train_parser(), ["-config", data["config"], "-quant_bits", "3",
                                 "-quant_method", "log"])
    policy = policy_from_opts(opt)
    assert policy.method == "log"
    tensor = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))
    qt = policy.quantize("w", tensor)
    assert torch.equal(qt.points, log_points(tensor, 3, 256, 8))
    scaled = scaled_values(tensor, *bucket_scales(tensor, 256), 256)
    nearest = (scaled[:, None] - qt.points[None, :]).abs().min(dim=1).values
    assert torch.allclose((scaled - qt.points[qt.levels.long()]).abs(), nearest)
    with pytest.raises(ValueError, match="stochastic rounding needs the uniform method"):
        QuantPolicy(method="log", rounding="stochastic")
    with pytest.raises(ValueError, match="already registered"):
        register_quantizer(Quantizer("log", log_points))


def test_unregistered_method_is_refused_by_the_options(data):
    with pytest.raises(ValueError, match="invalid choice: 'log'"):
        parse(train_parser(), ["-config", data["config"], "-quant_bits", "3",
                               "-quant_method", "log"])
    with pytest.raises(ValueError, match="must be one of uniform, quantile, got 'log'"):
        QuantPolicy(method="log")


def test_a_library_user_loads_and_quantizes_a_checkpoint_with_no_set_up(teacher):
    """From Python, as docs/architecture.md shows, in a fresh process: loading allow-lists
    OpenNMT-py's options for weights-only loading itself (compat.prepare_onmt)."""
    script = ("import sys\n"
              "from onmt_qd.models import build_model_from_checkpoint\n"
              "from onmt_qd.quant import QuantPolicy\n"
              "from onmt_qd.quant_checkpoint import quantize_\n"
              "model, _, _ = build_model_from_checkpoint(sys.argv[1])\n"
              "print(len(quantize_(model, QuantPolicy(bits=4, bucket_size=256))) > 0)")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script, teacher],
                            capture_output=True, text=True)
    assert result.stdout.split() == ["True"], result.stderr[-2000:]


def real_model(teacher):
    from onmt_qd.compat import load_checkpoint

    model, _, _ = build_model_from_checkpoint(load_checkpoint(teacher), "cpu")
    return model


# mixed precision, biases (odd sizes) and a bucket that divides no tensor: every
# tensor's last bucket is padded, and two bit widths make two buffers
POLICY = dict(bits=3, bucket_size=100, biases=True, bits_overrides={"generator": 5})


@pytest.mark.parametrize("method", ["uniform", "quantile"])
def test_fake_quantization_equals_per_tensor_quantization_bit_for_bit(teacher, method):
    model = real_model(teacher)
    policy = QuantPolicy(method=method, **POLICY)
    original = {k: p.detach().clone() for k, p in model.named_parameters()}
    fake = FakeQuantizer(model, policy)
    assert set(fake.bits.values()) == {3, 5} and any(p.dim() == 1 for p in fake.shadow.params.values())
    fake.quantize(stochastic=False)
    for name, param in model.named_parameters():
        if name in fake.bits:
            expected = policy.quantize(name, original[name], stochastic=False).dequantize()
            assert torch.equal(param, expected), name
        else:
            assert torch.equal(param, original[name]), name
    fake.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param, original[name]), name


def test_stochastic_fake_quantization_rounds_to_a_neighbour_without_bias(teacher):
    model = real_model(teacher)
    policy = QuantPolicy(rounding="stochastic", **POLICY)
    fake = FakeQuantizer(model, policy)
    params = dict(model.named_parameters())
    neighbours, fraction, up_counts = {}, {}, {}
    for name, bits in fake.bits.items():
        w = params[name].detach().clone()
        alpha, beta = bucket_scales(w, policy.bucket_size)
        grid = scaled_values(w, alpha, beta, policy.bucket_size) * (2 ** bits - 1)
        uniform = policy.quantize(name, w, stochastic=False)  # for points and scales

        def at(levels):
            return QuantizedTensor(levels.to(torch.uint8), alpha, beta, uniform.points,
                                   w.shape, policy.bucket_size, bits).dequantize()

        neighbours[name] = (at(grid.floor()), at(grid.ceil()))
        fraction[name] = (grid - grid.floor()).view(w.shape)
        up_counts[name] = torch.zeros_like(w)
    draws = 40
    for _ in range(draws):
        fake.quantize(stochastic=True)
        for name in fake.bits:
            low, high = neighbours[name]
            q = params[name].detach()
            assert torch.all((q == low) | (q == high)), name
            up_counts[name] += (q == high) & (high != low)
        fake.restore()
    # the rate of rounding up is the fractional part (E[Q(w)] = w), in every tenth
    fractions = torch.cat([f.reshape(-1) for f in fraction.values()])
    rates = torch.cat([c.reshape(-1) for c in up_counts.values()]) / draws
    for tenth in range(10):
        inside = (fractions >= tenth / 10) & (fractions < (tenth + 1) / 10) & (fractions > 0)
        assert inside.sum() > 1000
        assert abs(rates[inside].mean() - fractions[inside].mean()) < 0.01, tenth
