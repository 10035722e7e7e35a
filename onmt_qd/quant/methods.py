"""The registry of quantization methods: a new method is one function and one
``register_quantizer`` call; policies, command-line choices and differentiable
quantization all read ``QUANTIZERS`` (docs/architecture.md, "Where to add")."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from onmt_qd.quant.quantizer import (
    QuantizedTensor, fake_quantize_uniform, quantile_points, quantize_to_points,
    quantize_uniform)
from onmt_qd.registry import Registry

# The three functions a method is made of (see Quantizer). Aliases are evaluated at
# import time, hence Optional rather than "| None" inside them.
# points(tensor, bits, bucket_size, n_points) -> sorted points in [0, 1]
PointsFn = Callable[[torch.Tensor, int, int, int], torch.Tensor]
# rounding(tensor, bits, bucket_size, stochastic, generator) -> quantized tensor
RoundingFn = Callable[[torch.Tensor, int, int, bool, Optional[torch.Generator]],
                      QuantizedTensor]
# fake(flat, bits, bucket_size, stochastic, generator, out) -> dequantized values
FakeQuantizeFn = Callable[[torch.Tensor, int, int, bool, Optional[torch.Generator],
                           Optional[torch.Tensor]], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Quantizer:
    """One quantization method.

    ``points(tensor, bits, bucket_size, n_points)`` gives the sorted points in [0, 1]
    (scaled space) for ``tensor``; differentiable quantization starts from them.
    ``rounding(tensor, bits, bucket_size, stochastic, generator)``, when given, replaces
    the default nearest-point rounding (uniform rounds on its grid, stochastically if
    asked). ``bucket_local``: the result for a bucket depends on that bucket alone, so
    many tensors may be quantized together in one buffer (training does); ``fake``,
    optional, is a faster ``fake_quantize`` for them."""
    name: str
    points: PointsFn
    rounding: RoundingFn | None = None
    stochastic: bool = False
    bucket_local: bool = False
    fake: FakeQuantizeFn | None = None

    def quantize(self, tensor: torch.Tensor, bits: int, bucket_size: int,
                 stochastic: bool = False,
                 generator: torch.Generator | None = None) -> QuantizedTensor:
        if stochastic and not self.stochastic:
            raise ValueError(stochastic_error())
        if self.rounding is not None:
            return self.rounding(tensor, bits, bucket_size, stochastic, generator)
        points = self.points(tensor, bits, bucket_size, 2 ** bits)
        return quantize_to_points(tensor, points, bucket_size, bits)

    def fake_quantize(self, flat: torch.Tensor, bits: int, bucket_size: int,
                      stochastic: bool = False, generator: torch.Generator | None = None,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """The dequantized values Q(flat), into ``out`` when given. ``flat``: a flat
        float32 tensor of whole buckets (exactly the values of ``quantize``)."""
        if stochastic and not self.stochastic:
            raise ValueError(stochastic_error())
        if self.fake is not None:
            return self.fake(flat, bits, bucket_size, stochastic, generator, out)
        values = self.quantize(flat, bits, bucket_size, stochastic, generator).dequantize()
        return values if out is None else out.copy_(values)


QUANTIZERS = Registry("quantization method")
register_quantizer = QUANTIZERS.register  # a name taken is an error
get_quantizer = QUANTIZERS.lookup


def stochastic_error() -> str:
    capable = [name for name, q in QUANTIZERS.items() if q.stochastic]
    return f"stochastic rounding needs the {' or '.join(capable)} method"


def _evenly_spaced(tensor: torch.Tensor, bits: int, bucket_size: int,
                   n_points: int) -> torch.Tensor:
    return torch.linspace(0, 1, n_points, device=tensor.device)


register_quantizer(Quantizer("uniform", _evenly_spaced, rounding=quantize_uniform,
                             stochastic=True, bucket_local=True, fake=fake_quantize_uniform))
register_quantizer(Quantizer("quantile", quantile_points))
