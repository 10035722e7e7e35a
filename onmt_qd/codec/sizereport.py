"""Where the bytes of a compressed model file go (docs/method.md §7).

Every figure is counted from what was actually written, so the parts add up to the
file's size on disk exactly; the paper's formula is computed separately as a check
(it leaves out points, code tables, stream padding and metadata, which the report shows
on their own lines)."""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from onmt_qd.codec.entropy import Coder, entropy_bits
from onmt_qd.codec.levelcoding import EncodedLevels
from onmt_qd.quant.quantizer import QuantizedFields

FLOAT32_BYTES = 4

# Tensor groups of OpenNMT-py's encoder-decoders by parameter name, first match wins
# (layer norms before feed-forward: a Transformer's feed_forward.layer_norm is a norm).
TENSOR_GROUPS = (("generator", r"^generator\."), ("embeddings", r"\.embeddings\."),
                 ("layer norms", r"layer_norm"), ("attention", r"attn"),
                 ("feed-forward", r"feed_forward"), ("recurrent", r"\.rnn\.|bridge"),
                 ("other", r""))


def tensor_group(name: str) -> str:
    """The group (TENSOR_GROUPS) a tensor belongs to, for the size report."""
    return next(group for group, pattern in TENSOR_GROUPS if re.search(pattern, name))


@dataclasses.dataclass
class QuantizedSize:
    name: str
    n_params: int
    bits: int
    n_buckets: int
    n_points: int
    entropy_bits: float      # lower bound of any symbol code, bits per weight
    mean_code_bits: float    # the chosen coder, bits per weight
    code_bytes: int          # the coded levels as stored
    scale_bytes: int         # alpha and beta, float32 per bucket
    points_bytes: int
    table_bytes: int         # 0 when the table is pooled

    @property
    def fixed_width_bytes(self) -> int:
        return math.ceil(self.n_params * self.bits / 8)

    @property
    def stored_bytes(self) -> int:
        return self.code_bytes + self.scale_bytes + self.points_bytes + self.table_bytes


@dataclasses.dataclass
class PlainSize:
    name: str
    n_params: int
    bytes: int


@dataclasses.dataclass
class SizeReport:
    coder: str
    pooling: str
    quantized: list[QuantizedSize]
    plain: list[PlainSize]
    shared_table_bytes: int  # the pooled code table, 0 per tensor
    header_bytes: int        # JSON header: options, vocabularies, tensor index
    framing_bytes: int       # magic, version, lengths and checksum
    bytes_on_disk: int

    @property
    def n_params(self) -> int:
        return sum(t.n_params for t in self.quantized) + sum(t.n_params for t in self.plain)

    @property
    def fp32_bytes(self) -> int:
        """All weights, quantized and plain, as float32: the baseline of the ratio."""
        return FLOAT32_BYTES * self.n_params

    @property
    def data_bytes(self) -> int:
        return (sum(t.stored_bytes for t in self.quantized) + self.shared_table_bytes
                + sum(t.bytes for t in self.plain))

    @property
    def metadata_bytes(self) -> int:
        return self.header_bytes + self.framing_bytes

    @property
    def total_bytes(self) -> int:
        return self.data_bytes + self.metadata_bytes

    @property
    def paper_formula_bytes(self) -> float:
        """sum of n * mean code bits + buckets * 2 * 32 over quantized tensors, plus 32
        bits per unquantized parameter, in bytes."""
        bits = sum(t.n_params * t.mean_code_bits + t.n_buckets * 2 * 32
                   for t in self.quantized)
        return (bits + 32 * sum(t.n_params for t in self.plain)) / 8

    @property
    def groups(self) -> dict[str, dict[str, int]]:
        """group -> quantized and plain parameters and their stored bytes (levels,
        scales, points and own tables, or raw values), in TENSOR_GROUPS order; a pooled
        code table belongs to no group."""
        groups: dict[str, dict[str, int]] = {}
        for rows, kind, size in ((self.quantized, "quantized", "stored_bytes"),
                                 (self.plain, "plain", "bytes")):
            for t in rows:
                group = groups.setdefault(tensor_group(t.name), dict.fromkeys(
                    ("quantized_params", "plain_params", "quantized_bytes", "plain_bytes"), 0))
                group[f"{kind}_params"] += t.n_params
                group[f"{kind}_bytes"] += getattr(t, size)
        order = [group for group, _ in TENSOR_GROUPS]
        return dict(sorted(groups.items(), key=lambda item: order.index(item[0])))

    def means(self) -> dict[str, float]:
        """Bits per quantized weight (code, entropy, fixed width), each tensor weighted by
        its size, and their count: what the recipe's tables and plot show."""
        n = sum(t.n_params for t in self.quantized)

        def mean(bits_of: Callable[[QuantizedSize], float]) -> float:
            return sum(bits_of(t) * t.n_params for t in self.quantized) / max(n, 1)

        return {"quantized_params": n, "mean_code_bits": mean(lambda t: t.mean_code_bits),
                "entropy_bits": mean(lambda t: t.entropy_bits),
                "fixed_width_bits": mean(lambda t: t.bits)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable dict, derived figures and means included."""
        derived = ("n_params", "fp32_bytes", "data_bytes", "metadata_bytes", "total_bytes",
                   "paper_formula_bytes", "groups")
        out = dataclasses.asdict(self)
        out["quantized"] = [dict(dataclasses.asdict(t), fixed_width_bytes=t.fixed_width_bytes,
                                 stored_bytes=t.stored_bytes) for t in self.quantized]
        out.update({name: getattr(self, name) for name in derived})
        out["ratio_vs_fp32"] = self.fp32_bytes / self.bytes_on_disk
        out.update(self.means())
        return out


def build_size_report(quantized: Mapping[str, QuantizedFields], encoded: EncodedLevels,
                      coder: Coder, plain: Mapping[str, torch.Tensor], header_bytes: int,
                      framing_bytes: int, bytes_on_disk: int) -> SizeReport:
    """``quantized``: name -> QuantizedTensor; ``encoded``: their EncodedLevels;
    ``plain``: name -> tensor."""
    rows = []
    for name, qt in quantized.items():
        counts, table = encoded.counts[name], encoded.tables[name]
        rows.append(QuantizedSize(
            name=name, n_params=qt.levels.numel(), bits=qt.bits, n_buckets=qt.alpha.numel(),
            n_points=qt.points.numel(), entropy_bits=entropy_bits(counts),
            mean_code_bits=coder.mean_code_bits(counts, table),
            code_bytes=len(encoded.data[name]),
            scale_bytes=(qt.alpha.numel() + qt.beta.numel()) * FLOAT32_BYTES,
            points_bytes=qt.points.numel() * FLOAT32_BYTES,
            table_bytes=0 if encoded.shared_table is not None else table.nbytes))
    shared = encoded.shared_table.nbytes if encoded.shared_table is not None else 0
    plain_rows = [PlainSize(name, t.numel(), t.numel() * t.element_size())
                  for name, t in plain.items()]
    return SizeReport(coder.name, encoded.pooling, rows, plain_rows, shared, header_bytes,
                      framing_bytes, bytes_on_disk)


def format_size_report(report: SizeReport) -> str:
    """The report as a readable text table (sizes in bytes; MB = 10^6 bytes)."""
    lines = [f"{'quantized tensor':<40} {'params':>10} {'bits':>4} {'fixed':>10} "
             f"{'entropy':>7} {report.coder:>7} {'levels':>10} {'scales':>8} "
             f"{'points':>6} {'table':>5}"]
    for t in report.quantized:
        lines.append(f"{t.name:<40} {t.n_params:>10,} {t.bits:>4} {t.fixed_width_bytes:>10,} "
                     f"{t.entropy_bits:>7.3f} {t.mean_code_bits:>7.3f} {t.code_bytes:>10,} "
                     f"{t.scale_bytes:>8,} {t.points_bytes:>6,} {t.table_bytes:>5,}")
    if report.plain:
        lines += ["", f"{'plain tensor':<40} {'params':>10} {'bytes':>10}"]
        lines += [f"{t.name:<40} {t.n_params:>10,} {t.bytes:>10,}" for t in report.plain]
    lines += ["", f"{'tensor group':<14} {'quantized':>10} {'bytes':>10} {'plain':>10} "
              f"{'bytes':>10}"]
    lines += [f"{group:<14} {g['quantized_params']:>10,} {g['quantized_bytes']:>10,} "
              f"{g['plain_params']:>10,} {g['plain_bytes']:>10,}"
              for group, g in report.groups.items()]
    mb = 1e6
    lines += [
        "",
        f"coder {report.coder}, {report.pooling} tables"
        + (f" (shared table {report.shared_table_bytes:,} bytes)"
           if report.shared_table_bytes else ""),
        f"weights and tables   {report.data_bytes:>14,} bytes",
        f"metadata             {report.metadata_bytes:>14,} bytes "
        f"(JSON header {report.header_bytes:,}, framing {report.framing_bytes})",
        f"total                {report.total_bytes:>14,} bytes",
        f"on disk              {report.bytes_on_disk:>14,} bytes "
        f"({report.bytes_on_disk / mb:.3f} MB)",
        f"paper formula        {report.paper_formula_bytes:>14,.0f} bytes "
        f"({report.paper_formula_bytes / mb:.3f} MB)",
        f"fp32 weights         {report.fp32_bytes:>14,} bytes "
        f"({report.fp32_bytes / mb:.3f} MB, {report.n_params:,} parameters): "
        f"{report.fp32_bytes / report.bytes_on_disk:.2f}x smaller on disk",
    ]
    return "\n".join(lines)
