"""Quantizer properties of docs/method.md §1, §2, §4 and the paper's appendix B."""
import pytest
import scipy.stats
import torch

from onmt_qd.quant import (
    bucket_scales, bucket_view, point_gradient, project_points, quantile_points,
    quantize_to_points, quantize_uniform, scaled_values, uniform_points)

EPS = torch.finfo(torch.float32).eps


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def weights(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed)) * 0.1 + 0.02


def repeated_roundings(values, draws, bits, seed):
    """``draws`` independent stochastic quantizations of ``values`` (one bucket), as the
    rows of one call: each row is its own bucket with the same alpha and beta."""
    stacked = values.expand(draws, -1).contiguous()
    qt = quantize_uniform(stacked, bits, bucket_size=values.numel(), stochastic=True,
                          generator=gen(seed))
    return qt.dequantize().double(), qt


def rounding_variance(values, bits):
    """Exact Var[Q(v_i)] of stochastic rounding: (alpha/(s-1))^2 * f (1 - f)."""
    alpha, beta = bucket_scales(values, values.numel())
    grid = (scaled_values(values, alpha, beta, values.numel()) * (2 ** bits - 1)).double()
    frac = grid - grid.floor()
    return (alpha.double() / (2 ** bits - 1)) ** 2 * frac * (1 - frac)


# -- buckets -----------------------------------------------------------------------

def test_bucket_view_pads_short_bucket_without_moving_min_max():
    flat = torch.arange(10.0)
    view = bucket_view(flat, 4)
    assert view.shape == (3, 4)
    assert view[2].tolist() == [8.0, 9.0, 9.0, 9.0]
    alpha, beta = bucket_scales(flat, 4)
    assert alpha.tolist() == [3.0, 3.0, 1.0] and beta.tolist() == [0.0, 4.0, 8.0]


def test_tensor_smaller_than_bucket_is_one_bucket():
    tensor = weights(3, 5)
    qt = quantize_uniform(tensor, 4, bucket_size=256)
    assert qt.n_buckets == 1
    assert qt.alpha.item() == tensor.max().item() - tensor.min().item()
    assert qt.beta.item() == tensor.min().item()
    assert qt.dequantize().shape == (3, 5)


def test_short_last_bucket_uses_its_own_values_only():
    tensor = weights(300)
    qt = quantize_uniform(tensor, 4, bucket_size=256)
    assert qt.n_buckets == 2
    tail = tensor[256:]
    assert qt.beta[1].item() == tail.min().item()
    assert qt.alpha[1].item() == (tail.max() - tail.min()).item()


def test_constant_bucket_is_exact_and_level_zero():
    tensor = torch.cat([torch.full((256,), 0.37), weights(256)])
    for stochastic in (False, True):
        qt = quantize_uniform(tensor, 2, 256, stochastic=stochastic, generator=gen())
        assert qt.alpha[0].item() == 0.0
        assert (qt.levels[:256] == 0).all()
        assert torch.equal(qt.dequantize()[:256], tensor[:256])


def test_scaled_values_in_unit_interval():
    tensor = weights(1000) * 1e4
    scaled = scaled_values(tensor, *bucket_scales(tensor, 100), 100)
    assert scaled.shape == (1000,) and scaled.min() == 0 and scaled.max() == 1


# -- deterministic uniform quantization ----------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_deterministic_error_bound_and_levels(bits):
    tensor = weights(40, 37, seed=bits)  # 1480 elements: 5 full buckets and a short one
    qt = quantize_uniform(tensor, bits, bucket_size=256)
    assert qt.levels.dtype == torch.uint8 and qt.levels.shape == (tensor.numel(),)
    assert qt.points.tolist() == uniform_points(bits).tolist()
    error = bucket_view((qt.dequantize() - tensor).abs(), 256)
    bound = qt.alpha / (2 * (2 ** bits - 1))
    slack = 4 * EPS * (qt.alpha + qt.beta.abs() + tensor.abs().max())
    assert (error <= (bound + slack)[:, None]).all()
    levels = bucket_view(qt.levels, 256)
    assert int(qt.levels.max()) < 2 ** bits
    assert max(len(torch.unique(row)) for row in levels) <= 2 ** bits
    if bits <= 4:  # at few bits every level is used: the error bound is tight
        assert error.max() > 0.9 * bound.min()


def test_bucket_min_exact_and_max_within_one_ulp():
    """Q(min) = beta exactly. Q(max) = fl(fl(max - min) + min): alpha is a rounded
    float32, so the max is reproduced to within one ulp of max(alpha, |max|)."""
    tensor = weights(64, 64)
    qt = quantize_uniform(tensor, 4, 256)
    original, restored = bucket_view(tensor, 256), bucket_view(qt.dequantize(), 256)
    assert torch.equal(restored.amin(1), original.amin(1))
    top = original.amax(1)
    ulp = EPS * torch.maximum(qt.alpha, top.abs())
    assert ((restored.amax(1) - top).abs() <= ulp).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_requantizing_dequantized_changes_nothing(bits):
    tensor = weights(50, 50)
    first = quantize_uniform(tensor, bits, 256)
    second = quantize_uniform(first.dequantize(), bits, 256)
    assert torch.equal(second.levels, first.levels)
    assert torch.equal(second.dequantize(), first.dequantize())


def test_one_bit_gives_bucket_min_or_max():
    tensor = weights(512)
    restored = bucket_view(quantize_uniform(tensor, 1, 256).dequantize(), 256)
    low, high = restored.amin(1, keepdim=True), restored.amax(1, keepdim=True)
    assert ((restored == low) | (restored == high)).all()


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True, "4"])
def test_bad_bits_rejected(bad):
    with pytest.raises(ValueError, match="bits must be an integer from 1 to 8"):
        quantize_uniform(weights(10), bad)


@pytest.mark.parametrize("bad", [0, -3, 1.5, None])
def test_bad_bucket_size_rejected(bad):
    with pytest.raises(ValueError, match="bucket size must be an integer from 1 to 1048576"):
        quantize_uniform(weights(10), 4, bucket_size=bad)


def test_to_device_and_deterministic_dequantize():
    qt = quantize_uniform(weights(300), 3, 64)
    moved = qt.to("cpu")
    assert torch.equal(moved.dequantize(), qt.dequantize())
    assert moved.dequantize().dtype == torch.float32


# -- stochastic rounding: appendix B ------------------------------------------------

def test_stochastic_rounding_is_unbiased():
    values, draws, bits = weights(256, seed=3), 4000, 2
    restored, _ = repeated_roundings(values, draws, bits, seed=4)
    error = restored.mean(0) - values.double()
    standard_error = (rounding_variance(values, bits) / draws).sqrt()
    assert (error.abs() <= 5 * standard_error + 1e-6).all()
    # A biased rounding (to nearest) would fail the same check.
    nearest = quantize_uniform(values, bits, 256).dequantize().double()
    assert ((nearest - values.double()).abs() > 5 * standard_error + 1e-6).any()


def test_stochastic_second_and_third_moments_within_bounds():
    """With l = floor(v^ (s-1)): (l/(s-1))^m <= E[Q^(v^)^m] <= ((l+1)/(s-1))^m, m = 2, 3;
    the empirical moments also match the exact Bernoulli mixture."""
    values, draws, bits = weights(256, seed=5), 4000, 3
    intervals = 2 ** bits - 1
    _, qt = repeated_roundings(values, draws, bits, seed=6)
    scaled_q = qt.points[qt.levels.long()].double().view(draws, -1)
    grid = (scaled_values(values, *bucket_scales(values, 256), 256) * intervals).double()
    low, frac = grid.floor(), grid - grid.floor()
    for power in (2, 3):
        empirical = scaled_q.pow(power).mean(0)
        points = qt.points.double()  # the float32 grid l/(s-1) actually used
        lower = points[low.long()] ** power
        upper = points[(low.long() + 1).clamp(max=intervals)] ** power
        standard_error = (upper - lower) * (frac * (1 - frac) / draws).sqrt()
        tolerance = 5 * standard_error + 1e-9
        assert (empirical >= lower - tolerance).all() and (empirical <= upper + tolerance).all()
        exact = (1 - frac) * lower + frac * upper
        assert ((empirical - exact).abs() <= tolerance).all()


def assert_standard_normal(z):
    draws = z.numel()
    assert abs(z.mean().item()) < 5 / draws ** 0.5
    assert abs(z.var().item() - 1) < 5 * (2 / draws) ** 0.5
    assert scipy.stats.normaltest(z.numpy()).pvalue > 0.01


def test_dot_product_error_normal_with_v_quantized():
    """Theorem B.2: e_n / s_n ~ N(0, 1), s_n^2 = sum x_i^2 Var[Q(v_i)]."""
    values, bits, draws = weights(2048, seed=7), 2, 4000
    x = torch.rand(2048, generator=gen(8)).double() * 2 - 1
    restored, _ = repeated_roundings(values, draws, bits, seed=9)
    error = (restored - values.double()) @ x
    s_n = (rounding_variance(values, bits) * x ** 2).sum().sqrt()
    assert_standard_normal(error / s_n)


def test_dot_product_error_normal_with_v_and_x_quantized():
    """Theorem B.3: independent roundings of v and x; Var[Q(v)Q(x)] =
    (Var v + v^2)(Var x + x^2) - v^2 x^2."""
    values, x, bits, draws = weights(2048, seed=10), weights(2048, seed=11), 2, 4000
    q_values, _ = repeated_roundings(values, draws, bits, seed=12)
    q_x, _ = repeated_roundings(x, draws, bits, seed=13)
    v64, x64 = values.double(), x.double()
    error = (q_values * q_x).sum(1) - v64 @ x64
    var_v, var_x = rounding_variance(values, bits), rounding_variance(x, bits)
    s_n = ((var_v + v64 ** 2) * (var_x + x64 ** 2) - v64 ** 2 * x64 ** 2).sum().sqrt()
    assert_standard_normal(error / s_n)


# -- non-uniform points --------------------------------------------------------------

def test_quantize_to_points_picks_nearest_point():
    tensor = weights(1000)
    points = torch.cat([torch.tensor([1.0, 0.0]), torch.rand(6, generator=gen(1))])
    qt = quantize_to_points(tensor, points, 128)
    assert qt.bits == 3 and qt.points.tolist() == sorted(points.tolist())
    scaled = scaled_values(tensor, qt.alpha, qt.beta, 128)
    distances = (scaled[:, None] - qt.points[None, :]).abs()
    chosen = distances.gather(1, qt.levels.long()[:, None]).squeeze(1)
    assert torch.equal(chosen, distances.min(1).values)


def test_quantize_to_points_rejects_too_many_points():
    with pytest.raises(ValueError, match="5 points do not fit in 2 bits"):
        quantize_to_points(weights(100), torch.linspace(0, 1, 5), bits=2)


def test_quantile_points_sorted_in_unit_interval_and_match_torch_quantile():
    tensor = weights(3000) ** 3  # skewed: quantiles far from uniform
    points = quantile_points(tensor, 4, 256)
    assert points.shape == (16,) and torch.equal(points, points.sort().values)
    assert points[0] == 0 and points[-1] == 1
    scaled = scaled_values(tensor, *bucket_scales(tensor, 256), 256)
    assert torch.allclose(points, torch.quantile(scaled, uniform_points(4)), atol=1e-6)


def test_quantile_points_beyond_torch_quantile_size_limit():
    tensor = torch.randn(2 ** 24 + 1, generator=gen(2))
    points = quantile_points(tensor, 2, 4096)
    assert torch.equal(points, points.sort().values)
    assert points[0] == 0 and points[-1] == 1 and 0.3 < points[1] < points[2] < 0.7


def test_quantile_points_need_enough_values():
    with pytest.raises(ValueError, match="needs at least 16 values, tensor has 10"):
        quantile_points(weights(10), 4, 256)


# -- differentiable quantization -----------------------------------------------------

def test_point_gradient_matches_loop():
    tensor, grad = weights(7, 11, seed=14), torch.randn(7, 11, generator=gen(15))
    qt = quantize_to_points(tensor, torch.tensor([0.0, 0.3, 0.45, 1.0]), bucket_size=16)
    expected = [0.0] * 4
    for i, (level, g) in enumerate(zip(qt.levels.tolist(), grad.reshape(-1).tolist())):
        expected[level] += qt.alpha[i // 16].item() * g
    assert torch.allclose(point_gradient(qt, grad), torch.tensor(expected), atol=1e-6)


def test_point_gradient_is_gradient_of_dequantize():
    tensor, grad = weights(300, seed=16), torch.randn(300, generator=gen(17))
    qt = quantize_to_points(tensor, torch.tensor([0.0, 0.2, 0.7, 1.0]), bucket_size=64)
    points = qt.points.clone().requires_grad_()
    scaled = bucket_view(points[qt.levels.long()], 64)
    ((scaled * qt.alpha[:, None] + qt.beta[:, None]).reshape(-1)[:300] * grad).sum().backward()
    assert torch.allclose(point_gradient(qt, grad), points.grad, atol=1e-5)


def test_project_points_clamps_and_sorts():
    projected = project_points(torch.tensor([0.5, -0.2, 1.3, 0.1]))
    assert projected.tolist() == pytest.approx([0.0, 0.1, 0.5, 1.0])
