"""Which parameters are quantized, and at how many bits (docs/method.md §3).

One policy object, applied by parameter name, decides this for training, export, size
accounting and evaluation alike, and travels in checkpoints as a plain dict."""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from onmt_qd.quant.methods import get_quantizer, stochastic_error
from onmt_qd.quant.quantizer import (
    QuantizedTensor, quantize_to_points, validate_bits, validate_bucket_size)

ROUNDINGS = ("deterministic", "stochastic")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantPolicy:
    """By default every parameter with two or more dimensions is quantized, embeddings
    (names containing "embeddings") and the output layer ("generator.*") included.

    ``biases`` adds the 1-dimensional tensors. Patterns are regular expressions searched
    anywhere in the name: ``include`` forces a parameter in whatever the switches say,
    ``exclude`` takes it out and wins over ``include``. ``bits_overrides`` maps patterns
    to bits for mixed precision; when several match, the last one wins, so list general
    patterns before specific ones."""
    bits: int = 4
    bucket_size: int = 256
    method: str = "uniform"
    rounding: str = "deterministic"
    embeddings: bool = True
    generator: bool = True
    biases: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    bits_overrides: dict[str, int] | None = None  # a dict once built, None read as {}

    def __post_init__(self) -> None:
        validate_bits(self.bits)
        validate_bucket_size(self.bucket_size)
        quantizer = get_quantizer(self.method)
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, "
                             f"got {self.rounding!r}")
        if self.rounding == "stochastic" and not quantizer.stochastic:
            raise ValueError(stochastic_error())
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "bits_overrides", dict(self.bits_overrides or {}))
        for pattern in self.include + self.exclude + tuple(self._overrides):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid policy pattern {pattern!r}: {exc}") from None
        for bits in self._overrides.values():
            validate_bits(bits)

    @property
    def _overrides(self) -> Mapping[str, int]:
        """``bits_overrides``, which __post_init__ has made a dict."""
        return self.bits_overrides or {}

    def bits_for(self, name: str) -> int:
        """The policy's bits for ``name``: the last matching override, else ``bits``."""
        matching = [bits for pattern, bits in self._overrides.items()
                    if re.search(pattern, name)]
        return matching[-1] if matching else self.bits

    def _switched_on(self, name: str, shape: tuple[int, ...]) -> bool:
        if len(shape) >= 2:
            selected = True
        else:
            selected = self.biases and len(shape) == 1
        if "embeddings" in name and not self.embeddings:
            selected = False
        if name.startswith("generator.") and not self.generator:
            selected = False
        return selected

    def select(self, named_shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
        """name -> bits for every quantized parameter, in the input order. A pattern
        that matches nothing is an error: it is almost always a typo."""
        names = list(named_shapes)
        example = names[0] if names else "encoder.rnn.weight_ih_l0"
        for pattern in self.include + self.exclude:
            if not any(re.search(pattern, name) for name in names):
                raise ValueError(f"policy pattern {pattern!r} matches no parameter; "
                                 f"parameters look like {example!r}")
        selected = {
            name: self.bits_for(name) for name, shape in named_shapes.items()
            if (self._switched_on(name, tuple(shape))
                or any(re.search(p, name) for p in self.include))
            and not any(re.search(p, name) for p in self.exclude)}
        for pattern in self._overrides:
            if not any(re.search(pattern, name) for name in selected):
                raise ValueError(f"policy pattern {pattern!r} matches no quantized "
                                 f"parameter; parameters look like {example!r}")
        return selected

    def quantize(self, name: str, tensor: torch.Tensor, bits: int | None = None,
                 points: torch.Tensor | None = None, stochastic: bool | None = None,
                 generator: torch.Generator | None = None) -> QuantizedTensor:
        """Quantize ``tensor`` (parameter ``name``) the policy's way: to explicit
        ``points`` when given (differentiable quantization), else by the policy's
        method (QUANTIZERS). ``stochastic`` overrides the rounding."""
        bits = self.bits_for(name) if bits is None else bits
        if stochastic is None:
            stochastic = self.rounding == "stochastic"
        if points is None:
            return get_quantizer(self.method).quantize(tensor, bits, self.bucket_size,
                                                       stochastic, generator)
        if stochastic:
            raise ValueError(stochastic_error())
        return quantize_to_points(tensor, points, self.bucket_size, bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form, for checkpoints and the compressed file."""
        as_dict = dataclasses.asdict(self)
        as_dict["include"] = list(self.include)
        as_dict["exclude"] = list(self.exclude)
        return as_dict

    @classmethod
    def from_dict(cls, as_dict: Mapping[str, Any]) -> QuantPolicy:
        return cls(**as_dict)
