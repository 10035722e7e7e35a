"""Entropy coding the level indices of a whole model, with one code table per tensor
or one pooled table for all of them.

Per-tensor tables fit each tensor's own level distribution; a pooled table is stored
once. Which is smaller depends on the model (many small tensors favour pooling), so
"auto" encodes both ways and keeps the smaller. Every tensor is still its own stream,
so a reader decodes tensors independently."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from onmt_qd.codec.entropy import Coder, symbol_counts

POOLINGS = ("per_tensor", "pooled", "auto")


@dataclasses.dataclass
class EncodedLevels:
    pooling: str                 # "per_tensor" or "pooled"
    counts: dict[str, np.ndarray]  # name -> level counts, as long as that tensor's table
    tables: dict[str, np.ndarray]  # name -> the table that tensor's stream was coded with
    data: dict[str, bytes]         # name -> coded bytes
    shared_table: np.ndarray | None = None  # the pooled table, None for per_tensor

    def table_bytes(self) -> int:
        if self.shared_table is not None:
            return self.shared_table.nbytes
        return sum(table.nbytes for table in self.tables.values())

    def total_bytes(self) -> int:
        return self.table_bytes() + sum(len(data) for data in self.data.values())


def _padded(counts: np.ndarray, size: int) -> np.ndarray:
    return np.pad(counts, (0, size - len(counts)))


def encode_levels(levels: Mapping[str, np.ndarray], n_points: Mapping[str, int], coder: Coder,
                  pooling: str = "auto") -> EncodedLevels:
    """Code every tensor's levels (name -> uint8 array, indices below n_points[name])."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "auto":
        candidates = [encode_levels(levels, n_points, coder, choice)
                      for choice in ("per_tensor", "pooled")]
        return min(candidates, key=EncodedLevels.total_bytes)
    counts = {name: symbol_counts(lv, n_points[name]) for name, lv in levels.items()}
    shared_table = None
    if pooling == "pooled":
        alphabet = max(n_points.values(), default=1)
        counts = {name: _padded(c, alphabet) for name, c in counts.items()}
        shared_table = coder.table(sum(counts.values(), np.zeros(alphabet, dtype=np.int64)))
        tables = dict.fromkeys(levels, shared_table)
    else:
        tables = {name: coder.table(c) for name, c in counts.items()}
    data = {name: coder.encode(lv, tables[name]) for name, lv in levels.items()}
    return EncodedLevels(pooling, counts, tables, data, shared_table)
