"""Entropy coders of onmt_qd.codec.entropy: exact round trips and code lengths within
the bounds information theory sets (docs/method.md §7)."""
import math

import numpy as np
import pytest

from onmt_qd.codec.entropy import (
    ANS_TABLE_MAX, CODERS, MAX_CODE_LENGTH, ans_decode, ans_encode, ans_table, entropy_bits,
    huffman_code_lengths, huffman_decode, huffman_encode, huffman_mean_bits, symbol_counts)


def bell(n, bits, seed=0):
    top = 2 ** bits - 1
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(top / 2, top / 6, n)), 0, top).astype(np.uint8)


SAMPLES = {
    "skewed": np.random.default_rng(1).geometric(0.4, 20_000).clip(1, 16).astype(np.uint8) - 1,
    "uniform": np.random.default_rng(2).integers(0, 16, 20_000).astype(np.uint8),
    "bell_2bit": bell(20_000, 2),
    "single_symbol": np.full(1000, 5, dtype=np.uint8),
    "two_symbols": np.array([0, 3] * 7 + [3], dtype=np.uint8),
    "one_element": np.array([2], dtype=np.uint8),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_huffman_round_trip_and_length_bounds(name):
    symbols = SAMPLES[name]
    counts = symbol_counts(symbols, 16)
    lengths = huffman_code_lengths(counts)
    data = huffman_encode(symbols, lengths)
    assert np.array_equal(huffman_decode(data, lengths, symbols.size), symbols)
    assert np.all((lengths == 0) == (counts == 0))
    mean, entropy = huffman_mean_bits(counts, lengths), entropy_bits(counts)
    assert len(data) == math.ceil(mean * symbols.size / 8)
    assert entropy - 1e-9 <= mean < max(entropy + 1, 1 + 1e-9)


def test_huffman_empty_input():
    lengths = huffman_code_lengths(np.zeros(4, dtype=np.int64))
    assert np.array_equal(lengths, [0, 0, 0, 0])
    assert huffman_encode(np.zeros(0, dtype=np.uint8), lengths) == b""
    assert huffman_decode(b"", lengths, 0).size == 0


def test_huffman_lengths_form_a_complete_prefix_code():
    lengths = huffman_code_lengths(symbol_counts(SAMPLES["skewed"], 16))
    present = lengths[lengths > 0].astype(float)
    assert np.sum(2.0 ** -present) == pytest.approx(1.0)


def test_huffman_lengths_are_capped_for_extremely_skewed_counts():
    fibonacci = [1, 1]
    while len(fibonacci) < 40:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    lengths = huffman_code_lengths(np.array(fibonacci))
    assert 0 < lengths.max() <= MAX_CODE_LENGTH
    symbols = np.arange(40, dtype=np.uint8).repeat(3)
    assert np.array_equal(huffman_decode(huffman_encode(symbols, lengths), lengths, 120),
                          symbols)


@pytest.mark.parametrize("lengths", [[1, 1, 1], [MAX_CODE_LENGTH + 1, 1], [-1, 1]])
def test_huffman_rejects_impossible_code_lengths(lengths):
    with pytest.raises(ValueError):
        huffman_decode(b"\x00\x00", np.array(lengths), 4)


def test_huffman_decode_of_too_short_data_raises():
    symbols = SAMPLES["uniform"]
    lengths = huffman_code_lengths(symbol_counts(symbols, 16))
    data = huffman_encode(symbols, lengths)
    with pytest.raises(ValueError):
        huffman_decode(data[: len(data) // 2], lengths, symbols.size)


@pytest.mark.parametrize("name", SAMPLES)
def test_ans_round_trip(name):
    symbols = SAMPLES[name]
    table = ans_table(symbol_counts(symbols, 16))
    assert np.array_equal(ans_decode(ans_encode(symbols, table), table, symbols.size), symbols)


def test_ans_table_keeps_rare_symbols_and_fits_uint16():
    counts = np.array([10**9, 1, 0, 3 * 10**8])
    table = ans_table(counts)
    assert table.dtype == np.uint16
    assert table[0] == ANS_TABLE_MAX and table[1] >= 1 and table[2] == 0


def test_ans_is_closer_to_entropy_than_huffman_at_2_bits():
    symbols = bell(200_000, 2)
    counts = symbol_counts(symbols, 4)
    entropy = entropy_bits(counts)
    huffman_bits = huffman_mean_bits(counts, huffman_code_lengths(counts))
    ans_bits = len(ans_encode(symbols, ans_table(counts))) * 8 / symbols.size
    assert entropy <= ans_bits < entropy + 0.01
    assert ans_bits < huffman_bits - 0.1


@pytest.mark.parametrize("coder", CODERS.values(), ids=CODERS)
def test_mean_code_bits_predicts_the_coded_size(coder):
    symbols = bell(50_000, 4)
    counts = symbol_counts(symbols, 16)
    table = coder.table(counts)
    predicted = coder.mean_code_bits(counts, table) * symbols.size / 8
    assert len(coder.encode(symbols, table)) == pytest.approx(predicted, abs=8)
