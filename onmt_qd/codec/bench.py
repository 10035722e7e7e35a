"""Speed and code length of the entropy coders on 25M level indices with the bell-shaped
distribution that bucketed weights give (most levels near the middle of the grid).

    python -m onmt_qd.codec.bench [-n 25000000]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, TypeVar

import numpy as np

from onmt_qd.codec.entropy import CODERS, entropy_bits, symbol_counts

Result = TypeVar("Result")


def bell_levels(n: int, bits: int, seed: int = 0) -> np.ndarray:
    """Levels of Gaussian weights, bucket range about +-3 sigma, rounded to 2**bits points."""
    top = 2 ** bits - 1
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(top / 2, top / 6, n)), 0, top).astype(np.uint8)


def timed(fn: Callable[..., Result], *args: object) -> tuple[Result, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=25_000_000, help="symbols per run")
    n = parser.parse_args().n
    print(f"{n:,} symbols, times in seconds")
    print(f"{'bits':>4} {'coder':>8} {'encode':>7} {'decode':>7} {'entropy':>8} "
          f"{'mean bits':>9} {'on disk':>8} {'exact':>5}")
    for bits in (2, 4):
        levels = bell_levels(n, bits)
        counts = symbol_counts(levels, 2 ** bits)
        for coder in CODERS.values():
            table = coder.table(counts)
            data, encode_s = timed(coder.encode, levels, table)
            decoded, decode_s = timed(coder.decode, data, table, n)
            print(f"{bits:>4} {coder.name:>8} {encode_s:>7.2f} {decode_s:>7.2f} "
                  f"{entropy_bits(counts):>8.4f} {coder.mean_code_bits(counts, table):>9.4f} "
                  f"{len(data) * 8 / n:>8.4f} {str(np.array_equal(decoded, levels)):>5}")


if __name__ == "__main__":
    main()
