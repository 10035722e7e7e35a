"""Redistributing quantization precision across tensors by gradient norm, for
differentiable quantization (docs/method.md §4, paper appendix A.4.2)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from onmt_qd.quant.quantizer import MAX_BITS, validate_bits

MIN_POINTS = 2
MAX_POINTS = 2 ** MAX_BITS


def _check(sizes: Sequence[int], grad_norms: Sequence[float]) -> None:
    if len(sizes) != len(grad_norms):
        raise ValueError(f"got {len(sizes)} tensor sizes but {len(grad_norms)} gradient norms")
    if any(size < 1 for size in sizes):
        raise ValueError("every tensor size must be a positive integer")
    if not all(math.isfinite(norm) and norm >= 0 for norm in grad_norms):
        raise ValueError("gradient norms must be finite and non-negative")


def _largest_remainder(amount: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Integers summing to ``amount`` (<= sum(caps)), each <= its cap, proportional to
    ``weights`` as far as the caps allow (water-filling, then largest remainders;
    ties go to the larger weight so a larger weight never gets less)."""
    shares = [0] * len(weights)
    open_ = [i for i, cap in enumerate(caps) if cap > 0]
    while amount > 0:
        total = sum(weights[i] for i in open_)
        ideal = {i: amount * (weights[i] / total if total > 0 else 1 / len(open_))
                 for i in open_}
        full = [i for i in open_ if ideal[i] >= caps[i]]
        if not full:
            for i in open_:
                shares[i] = math.floor(ideal[i])
            left = amount - sum(shares[i] for i in open_)
            by_remainder = sorted(open_, reverse=True,
                                  key=lambda i: (ideal[i] - shares[i], weights[i], -i))
            for i in by_remainder[:left]:
                shares[i] += 1
            return shares
        for i in full:
            shares[i] = caps[i]
            amount -= caps[i]
        open_ = [i for i in open_ if i not in full]
    return shares


def allocate_points(sizes: Sequence[int], grad_norms: Sequence[float], bits: int) -> list[int]:
    """The 2017 rule: points per tensor. Conserved exactly: the total number of points,
    len(sizes) * 2**bits. Every tensor keeps half of its 2**bits (at least 2 points);
    the rest is shared in proportion to the gradient norms (equally if all are zero),
    no tensor exceeding the 2**8 points a uint8 level can index. ``sizes`` are only
    checked: this rule ignores them."""
    _check(sizes, grad_norms)
    validate_bits(bits)
    base = max(MIN_POINTS, 2 ** bits // 2)
    shared = len(sizes) * (2 ** bits - base)
    extra = _largest_remainder(shared, list(grad_norms), [MAX_POINTS - base] * len(sizes))
    return [base + more for more in extra]


def check_avg_bits(avg_bits: float, min_bits: int = 1, max_bits: int | None = None,
                   name: str | None = None) -> None:
    """The budget ``allocate_bits`` shares out: at least ``min_bits`` per weight and, when
    given, at most ``max_bits`` (more would leave every tensor at ``max_bits``, short of
    the budget asked). ``name``: the option that set it (onmt_qd_diffquant -avg_bits)."""
    what = f"{name} {avg_bits}" if name else f"an average of {avg_bits} bits"
    if not avg_bits >= min_bits:  # nan too
        raise ValueError(f"{what} is less than the {min_bits}-bit minimum for each "
                         "quantized weight")
    if max_bits is not None and avg_bits > max_bits:
        raise ValueError(f"{what} is more than the {max_bits}-bit maximum for each "
                         "quantized weight")


def allocate_bits(sizes: Sequence[int], grad_norms: Sequence[float], avg_bits: float,
                  min_bits: int = 1, max_bits: int = MAX_BITS) -> list[int]:
    """Bits per tensor under a budget counted in bits of stored levels, weighted by size:
    sum(size_i * bits_i) <= floor(avg_bits * sum(size_i)). This is never exceeded and
    filled greedily: every tensor starts at ``min_bits``; each further bit goes to the
    tensor whose rounding error, modelled as norm_i * 2**-bits_i spread over its size_i
    weights, shrinks most per bit spent (largest norm_i * 2**-bits_i / size_i) among
    those whose next bit still fits; it stops when no next bit fits. Of two tensors of
    the same size, the one with the larger norm never gets fewer bits."""
    _check(sizes, grad_norms)
    validate_bits(min_bits)
    validate_bits(max_bits)
    if min_bits > max_bits:
        raise ValueError(f"min_bits {min_bits} exceeds max_bits {max_bits}")
    check_avg_bits(avg_bits, min_bits)
    n_weights = sum(sizes)
    budget = math.floor(avg_bits * n_weights)
    bits = [min_bits] * len(sizes)
    left = budget - min_bits * n_weights
    while True:
        growable = [i for i, size in enumerate(sizes) if bits[i] < max_bits and size <= left]
        if not growable:
            return bits
        best = max(growable, key=lambda i: (grad_norms[i] * 2.0 ** -bits[i] / sizes[i], -i))
        bits[best] += 1
        left -= sizes[best]
