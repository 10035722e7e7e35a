"""Entropy coding of quantization level indices (docs/method.md §7).

Level indices are small non-negative integers (uint8) with a peaked distribution, so a
symbol code over them beats the fixed b bits per weight. Two coders, both C/Rust-backed
so that no Python code runs per symbol:

- canonical Huffman (bitarray): only the code length of each symbol is stored; the
  codewords follow from the lengths alone;
- rANS (constriction): codes within a fraction of a bit per tensor of the entropy; its
  table is the symbol counts, rescaled to fit uint16.

A coder's *table* is what the decoder needs besides the data: a small numpy array stored
next to the data. Decoders raise ValueError on inconsistent input; callers that read
untrusted files turn that into their own error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import constriction
import numpy as np
import numpy.typing as npt
from bitarray import bitarray
from bitarray.util import canonical_decode, canonical_huffman

from onmt_qd.registry import Registry

MAX_CODE_LENGTH = 31  # the longest code bitarray's canonical decoder accepts
ANS_TABLE_MAX = 2 ** 16 - 1
# constriction aborts the process when it cannot allocate its output, so a file that
# claims absurdly many symbols must fail in numpy (MemoryError) before reaching it
ANS_DECODE_CHUNK = 2 ** 20


def entropy_bits(counts: npt.ArrayLike) -> float:
    """Shannon entropy, in bits per symbol, of the distribution the counts describe:
    the lower bound on the mean length of any symbol code."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def symbol_counts(symbols: npt.ArrayLike, n_symbols: int) -> np.ndarray:
    """How often each of the ``n_symbols`` symbols occurs."""
    return np.bincount(np.asarray(symbols, dtype=np.uint8), minlength=n_symbols)


# --- canonical Huffman -------------------------------------------------------------


def huffman_code_lengths(counts: npt.ArrayLike) -> np.ndarray:
    """Optimal code length per symbol (0 for absent symbols; a lone symbol gets 1).

    Codes longer than MAX_CODE_LENGTH only arise for extremely skewed counts; the
    counts are then halved until the code fits, which costs a negligible fraction of
    a bit in those rare cases."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    while counts.any():
        code = canonical_huffman({s: int(c) for s, c in enumerate(counts) if c})[0]
        if max(len(word) for word in code.values()) <= MAX_CODE_LENGTH:
            for symbol, word in code.items():
                lengths[symbol] = len(word)
            break
        counts = np.where(counts > 0, np.maximum(counts >> 1, 1), 0)
    return lengths


def _canonical_order(code_lengths: npt.ArrayLike) -> tuple[list[int], list[int]]:
    """(count of codes per length, symbols sorted by (length, symbol)): the two lists
    that define a canonical code, rebuilt from the lengths alone."""
    lengths = np.asarray(code_lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any() or (lengths > MAX_CODE_LENGTH).any():
        raise ValueError(f"Huffman code lengths must be 0..{MAX_CODE_LENGTH}")
    present = np.flatnonzero(lengths)
    if (2.0 ** -lengths[present].astype(np.float64)).sum() > 1.0:
        raise ValueError("Huffman code lengths do not form a prefix code")
    symbols = present[np.argsort(lengths[present], kind="stable")]
    count = np.bincount(lengths[present], minlength=int(lengths.max(initial=0)) + 1)
    return [int(c) for c in count], [int(s) for s in symbols]


def _canonical_codewords(code_lengths: np.ndarray) -> dict[int, bitarray]:
    """symbol -> codeword of the canonical code with these lengths (the standard
    assignment: consecutive binary numbers, shifted left when the length grows)."""
    count, symbols = _canonical_order(code_lengths)
    codewords: dict[int, bitarray] = {}
    value = previous = 0
    for symbol in symbols:
        length = int(code_lengths[symbol])
        value <<= length - previous
        codewords[symbol] = bitarray(format(value, f"0{length}b"), endian="big")
        value, previous = value + 1, length
    return codewords


def huffman_encode(symbols: npt.ArrayLike, code_lengths: np.ndarray) -> bytes:
    symbols = np.ascontiguousarray(symbols, dtype=np.uint8)
    if symbols.size == 0:
        return b""
    bits = bitarray(endian="big")
    bits.encode(_canonical_codewords(code_lengths), symbols.tobytes())
    return bits.tobytes()


def huffman_decode(data: bytes, code_lengths: np.ndarray, n_symbols: int) -> np.ndarray:
    if n_symbols == 0:
        return np.zeros(0, dtype=np.uint8)
    if n_symbols > 8 * len(data):  # every codeword takes at least one bit
        raise ValueError(f"Huffman data of {len(data)} bytes cannot hold {n_symbols} symbols")
    count, symbols = _canonical_order(code_lengths)
    bits = bitarray(endian="big")
    bits.frombytes(bytes(data))
    return np.fromiter(canonical_decode(bits, count, symbols), dtype=np.uint8,
                       count=n_symbols)


def huffman_mean_bits(counts: npt.ArrayLike, code_lengths: npt.ArrayLike) -> float:
    """Exact mean code length, in bits per symbol, of these counts under this code."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return float(counts @ np.asarray(code_lengths, dtype=np.float64) / total) if total else 0.0


# --- rANS ----------------------------------------------------------------------------


def ans_table(counts: npt.ArrayLike) -> np.ndarray:
    """The counts rescaled so the largest is ANS_TABLE_MAX (uint16); every present
    symbol keeps a non-zero count, so stays encodable at its near-true probability."""
    counts = np.asarray(counts, dtype=np.float64)
    peak = counts.max(initial=0.0)
    if peak == 0:
        return np.zeros(len(counts), dtype=np.uint16)
    scaled = np.ceil(counts * ANS_TABLE_MAX / peak)
    return np.minimum(scaled, ANS_TABLE_MAX).astype(np.uint16)


def _ans_model(table: npt.ArrayLike) -> Any:  # constriction has no type information
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 1 or table.size == 0 or not table.any():
        raise ValueError("ANS table needs at least one non-zero count")
    return constriction.stream.model.Categorical(table, perfect=False)


def ans_encode(symbols: npt.ArrayLike, table: np.ndarray) -> bytes:
    """``table``: the stored ans_table (any non-negative counts work; the decoder needs
    the same ones)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    if symbols.size == 0:
        return b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _ans_model(table))
    return coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, table: np.ndarray, n_symbols: int) -> np.ndarray:
    if n_symbols == 0:
        return np.zeros(0, dtype=np.uint8)
    if len(data) % 4:
        raise ValueError("ANS data is not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    model = _ans_model(table)
    symbols = np.empty(n_symbols, dtype=np.uint8)
    for start in range(0, n_symbols, ANS_DECODE_CHUNK):
        stop = min(start + ANS_DECODE_CHUNK, n_symbols)
        symbols[start:stop] = coder.decode(model, stop - start)
    if not coder.is_empty():
        raise ValueError("ANS data has words left over after the last symbol")
    return symbols


def ans_mean_bits(counts: npt.ArrayLike, table: npt.ArrayLike) -> float:
    """Cross-entropy of the counts under the table's distribution: the ANS code length
    per symbol up to the final flush (a few bytes per stream)."""
    counts = np.asarray(counts, dtype=np.float64)
    table = np.asarray(table, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    present = counts > 0
    q = table[present] / table.sum()
    return float(-(counts[present] * np.log2(q)).sum() / total)


# --- registry ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Coder:
    """One entropy coder as the file format uses it: ``table(counts)`` builds the
    decoder's side information, stored as ``table_dtype`` (little-endian numpy)."""
    name: str
    table_dtype: str
    table: Callable[[np.ndarray], np.ndarray]  # (counts) -> table
    encode: Callable[[np.ndarray, np.ndarray], bytes]   # (symbols, table) -> bytes
    decode: Callable[[bytes, np.ndarray, int], np.ndarray]  # -> uint8 array
    mean_code_bits: Callable[[np.ndarray, np.ndarray], float]  # bits per symbol


CODERS = Registry("entropy coder")
CODERS.register(Coder("huffman", "u1", huffman_code_lengths, huffman_encode,
                      huffman_decode, huffman_mean_bits))
CODERS.register(Coder("ans", "<u2", ans_table, ans_encode, ans_decode, ans_mean_bits))
get_coder = CODERS.lookup
