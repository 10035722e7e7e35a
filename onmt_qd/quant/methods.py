"""The registry of quantization methods: a new method is one function and one
``register_quantizer`` call; policies, command-line choices and differentiable
quantization all read ``QUANTIZERS`` (docs/architecture.md, "Where to add")."""
import dataclasses
from typing import Callable

import torch

from onmt_qd.quant.quantizer import (
    fake_quantize_uniform, quantile_points, quantize_to_points, quantize_uniform)
from onmt_qd.registry import Registry


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
    points: Callable
    rounding: Callable = None
    stochastic: bool = False
    bucket_local: bool = False
    fake: Callable = None

    def quantize(self, tensor, bits, bucket_size, stochastic=False, generator=None):
        if stochastic and not self.stochastic:
            raise ValueError(stochastic_error())
        if self.rounding is not None:
            return self.rounding(tensor, bits, bucket_size, stochastic, generator)
        points = self.points(tensor, bits, bucket_size, 2 ** bits)
        return quantize_to_points(tensor, points, bucket_size, bits)

    def fake_quantize(self, flat, bits, bucket_size, stochastic=False, generator=None,
                      out=None):
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


def stochastic_error():
    capable = [name for name, q in QUANTIZERS.items() if q.stochastic]
    return f"stochastic rounding needs the {' or '.join(capable)} method"


def _evenly_spaced(tensor, bits, bucket_size, n_points):
    return torch.linspace(0, 1, n_points, device=tensor.device)


register_quantizer(Quantizer("uniform", _evenly_spaced, rounding=quantize_uniform,
                             stochastic=True, bucket_local=True, fake=fake_quantize_uniform))
register_quantizer(Quantizer("quantile", quantile_points))
