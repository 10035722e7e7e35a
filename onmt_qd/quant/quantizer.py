"""Bucketed quantization to a set of points in scaled space (docs/method.md §1, §2, §4).

Every quantized tensor is stored the same way, uniform or not: one level index per
weight, (alpha, beta) per bucket and the sorted points the levels index, so a single
``dequantize`` serves training, export, evaluation and file readers."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Protocol

import torch

from onmt_qd.quant.buckets import bucket_scales, bucket_view, scaled_values, unbucket

MAX_BITS = 8  # levels are stored as uint8
# Every quantized tensor is padded to whole buckets: a bucket this long already holds a
# 1024 x 1024 matrix, and an absurd one would allocate its padding for every tensor
# (3.6 TB asked for 10^11, issue 24).
MAX_BUCKET_SIZE = 2 ** 20


def validate_bits(bits: object, name: str = "bits") -> None:
    """The one rule for a width in bits, wherever it comes from: ``name`` says where (an
    option such as -bits, a profile key)."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) \
            or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"{name} must be an integer from 1 to {MAX_BITS}, got {bits!r}")


def validate_bucket_size(bucket_size: object) -> None:
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, numbers.Integral) \
            or not 1 <= int(bucket_size) <= MAX_BUCKET_SIZE:
        raise ValueError(f"bucket size must be an integer from 1 to {MAX_BUCKET_SIZE}, "
                         f"got {bucket_size!r}")


class QuantizedFields(Protocol):
    """What readers of a quantized tensor use: a QuantizedTensor, or any object with
    its fields (the compressed-file writer accepts stand-ins)."""
    levels: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    points: torch.Tensor
    shape: tuple[int, ...]
    bucket_size: int
    bits: int


@dataclasses.dataclass
class QuantizedTensor:
    levels: torch.Tensor   # uint8 [numel], indices into points
    alpha: torch.Tensor    # float32 [n_buckets], bucket max - min
    beta: torch.Tensor     # float32 [n_buckets], bucket min
    points: torch.Tensor   # float32 [n_points], sorted, in [0, 1]
    shape: tuple[int, ...]
    bucket_size: int
    bits: int              # allocation: n_points <= 2**bits

    @property
    def n_buckets(self) -> int:
        return self.alpha.numel()

    def dequantize(self) -> torch.Tensor:
        """alpha * point + beta per element, as two separately rounded float32 ops
        (never a fused multiply-add), so CPU and CUDA give the same bits. The min of
        every bucket is exact; its max is off by at most float32 rounding of alpha."""
        scaled = bucket_view(self.points[self.levels.long()], self.bucket_size)
        buckets = scaled * self.alpha[:, None] + self.beta[:, None]
        return unbucket(buckets, self.levels.numel()).view(self.shape)

    def to(self, device: torch.device | str) -> QuantizedTensor:
        return dataclasses.replace(
            self, **{name: getattr(self, name).to(device)
                     for name in ("levels", "alpha", "beta", "points")})


def uniform_points(bits: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The 2**bits evenly spaced points of [0, 1], both ends included. Computed on the
    CPU: CUDA divides by a scalar through its reciprocal, one ulp off."""
    validate_bits(bits)
    n_points = 2 ** bits
    return (torch.arange(n_points, dtype=torch.float32) / (n_points - 1)).to(device)


def project_points(points: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and sort: keeps trained points a valid codebook after an
    optimizer step (the caller's optimizer state then follows the old order)."""
    return torch.sort(points.detach().clamp(0.0, 1.0)).values


def quantile_points(tensor: torch.Tensor, bits: int, bucket_size: int = 256,
                    n_points: int | None = None) -> torch.Tensor:
    """Points at the j/(s-1) quantiles of the tensor's scaled values (linear
    interpolation, as torch.quantile, but by one sort: no input size limit).
    ``n_points`` (at most 2**bits) serves allocations that are not a power of two."""
    validate_bits(bits)
    validate_bucket_size(bucket_size)
    n_points = 2 ** bits if n_points is None else n_points
    if tensor.numel() < n_points:
        raise ValueError(f"quantile method needs at least {n_points} values, tensor has "
                         f"{tensor.numel()}: use -quant_method uniform or fewer bits")
    scaled = scaled_values(tensor, *bucket_scales(tensor, bucket_size), bucket_size)
    ordered = torch.sort(scaled).values
    positions = torch.linspace(0, ordered.numel() - 1, n_points, dtype=torch.float64,
                               device=ordered.device)
    lower = positions.floor().long()
    upper = positions.ceil().long()
    weight = (positions - lower).float()
    return project_points(torch.lerp(ordered[lower], ordered[upper], weight))


def _round_to_grid_(grid: torch.Tensor, stochastic: bool,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Levels of values in [0, 2**bits - 1], in place when deterministic: the nearest
    integer, or the floor plus a Bernoulli draw of the remainder (E[Q(v)] = v)."""
    if not stochastic:
        return grid.round_()
    floor = grid.floor()
    draws = torch.rand(grid.shape, generator=generator, device=grid.device)
    return floor.add_(draws.lt_(grid.sub_(floor)))


def quantize_uniform(tensor: torch.Tensor, bits: int, bucket_size: int = 256,
                     stochastic: bool = False,
                     generator: torch.Generator | None = None) -> QuantizedTensor:
    """Round scaled values to the uniform grid, to the nearest point or stochastically."""
    validate_bits(bits)
    validate_bucket_size(bucket_size)
    alpha, beta = bucket_scales(tensor, bucket_size)
    intervals = 2 ** bits - 1
    grid = scaled_values(tensor, alpha, beta, bucket_size).mul_(intervals)
    levels = _round_to_grid_(grid, stochastic, generator)
    return QuantizedTensor(levels.clamp_(0, intervals).to(torch.uint8), alpha, beta,
                           uniform_points(bits, device=grid.device), tuple(tensor.shape),
                           bucket_size, bits)


def fake_quantize_uniform(flat: torch.Tensor, bits: int, bucket_size: int,
                          stochastic: bool = False, generator: torch.Generator | None = None,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """``quantize_uniform(flat, ...).dequantize()`` bit for bit, for a flat tensor of
    whole buckets, in a few in-place passes over ``out`` (allocated when None): what
    training runs before every forward pass. No clamps: the scaled values of finite
    weights already lie in [0, 1], so clamping changes nothing."""
    buckets = flat.view(-1, bucket_size)
    beta, top = torch.aminmax(buckets, dim=1)
    alpha = top - beta
    safe_alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    out = torch.empty_like(flat) if out is None else out
    grid = torch.sub(buckets, beta[:, None], out=out.view(-1, bucket_size))
    levels = _round_to_grid_(grid.div_(safe_alpha[:, None]).mul_(2 ** bits - 1),
                             stochastic, generator)
    # level / (2**bits - 1) as uniform_points computes it: a one-element tensor divisor,
    # since CUDA divides by a Python scalar through its reciprocal (one ulp off)
    intervals = torch.full((1,), 2 ** bits - 1, dtype=torch.float32, device=flat.device)
    points = levels.div_(intervals)
    torch.mul(points, alpha[:, None], out=out.view(-1, bucket_size)).add_(beta[:, None])
    return out


def quantize_to_points(tensor: torch.Tensor, points: torch.Tensor, bucket_size: int = 256,
                       bits: int | None = None) -> QuantizedTensor:
    """Nearest point for every scaled value (a value on a midpoint goes to the lower
    point). ``bits`` defaults to the fewest that index all the points."""
    validate_bucket_size(bucket_size)
    points = torch.sort(points.detach().float().reshape(-1).to(tensor.device)).values
    if bits is None:
        bits = max(1, (points.numel() - 1).bit_length())
    validate_bits(bits)
    if not 1 <= points.numel() <= 2 ** bits:
        raise ValueError(f"{points.numel()} points do not fit in {bits} bits")
    alpha, beta = bucket_scales(tensor, bucket_size)
    midpoints = (points[1:] + points[:-1]) / 2
    levels = torch.searchsorted(midpoints, scaled_values(tensor, alpha, beta, bucket_size))
    return QuantizedTensor(levels.to(torch.uint8), alpha, beta, points,
                           tuple(tensor.shape), bucket_size, bits)


def point_gradient(qt: QuantizedTensor, grad_q: torch.Tensor) -> torch.Tensor:
    """dL/dp_j = sum over weights i on point j of alpha_bucket(i) * dL/dq_i, since
    q_i = alpha * p_j + beta (differentiable quantization, docs/method.md §4)."""
    buckets = bucket_view(grad_q.detach().float().to(qt.alpha.device), qt.bucket_size)
    weighted = unbucket(buckets * qt.alpha[:, None], qt.levels.numel())
    grad = torch.zeros_like(qt.points)
    return grad.index_add_(0, qt.levels.long(), weighted)
