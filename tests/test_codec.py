"""The compressed model file: bit-exact round trips, size accounting that matches the
disk, atomic writes, and one-line errors (never code execution) for bad files."""
import hashlib
import json
import math
import os
import pickle
import types

import pytest
import torch

from onmt_qd.codec import fileformat
from onmt_qd.codec.fileformat import (
    CHECKSUM_BYTES, FORMAT_VERSION, MAGIC, PREFIX, CompressedFileError, is_compressed_file,
    read_compressed, write_atomic, write_compressed)
from onmt_qd.codec.sizereport import format_size_report
from onmt_qd.quant import QuantizedTensor, quantize_to_points, quantize_uniform

META = {"opt": {"rnn_size": 16, "layers": 1}, "vocab": {"src": ["<unk>", "Straße", "ä"]},
        "policy": {"bits": 4, "bucket_size": 256}}


def weights(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.1


def quantized_model():
    """1/2/4/8-bit tensors, short last buckets, non-uniform points (3 of 4 allowed)."""
    return {
        "encoder.w_1bit": quantize_uniform(weights(17, 9, seed=1), 1, bucket_size=64),
        "encoder.w_2bit": quantize_uniform(weights(37, 50, seed=2), 2, bucket_size=256),
        "decoder.w_4bit": quantize_uniform(weights(64, 40, seed=3), 4, bucket_size=256),
        "embeddings_8bit": quantize_uniform(weights(30, 33, seed=4), 8, bucket_size=100),
        "generator.nonuniform": quantize_to_points(
            weights(20, 21, seed=5), torch.tensor([0.0, 0.45, 0.5, 1.0]), bucket_size=50),
        "attn.three_points": quantize_to_points(
            weights(300, seed=6), torch.tensor([0.0, 0.2, 1.0]), bucket_size=256, bits=2),
    }


def plain_model():
    return {
        "encoder.bias": weights(50, seed=7),
        "half": weights(3, 4, seed=8).half(),
        "brain": weights(5, seed=9).bfloat16(),
        "step": torch.tensor([12345678901], dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "model.qdz"
    write_compressed(path, META, quantized_model(), plain_model())
    return path


def assert_same_quantized(got, expected):
    assert got.keys() == expected.keys()
    for name, qt in expected.items():
        back = got[name]
        assert isinstance(back, QuantizedTensor)
        for field in ("levels", "alpha", "beta", "points"):
            a, b = getattr(back, field), getattr(qt, field)
            assert a.dtype == b.dtype and torch.equal(a, b), (name, field)
        assert back.shape == tuple(qt.shape) and type(back.shape) is tuple
        assert (back.bits, back.bucket_size) == (qt.bits, qt.bucket_size)
        assert torch.equal(back.dequantize(), qt.dequantize())


def assert_same_plain(got, expected):
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("coder", ["huffman", "ans"])
@pytest.mark.parametrize("pooling", ["per_tensor", "pooled"])
def test_round_trip_is_bit_exact(tmp_path, coder, pooling):
    path = tmp_path / "model.qdz"
    report = write_compressed(path, META, quantized_model(), plain_model(), coder, pooling)
    assert (report.coder, report.pooling) == (coder, pooling)
    meta, quantized, plain = read_compressed(path)
    assert meta == META
    assert_same_quantized(quantized, quantized_model())
    assert_same_plain(plain, plain_model())


def test_any_object_with_the_fields_is_accepted(tmp_path):
    stand_ins = {name: types.SimpleNamespace(**vars(qt))
                 for name, qt in quantized_model().items()}
    write_compressed(tmp_path / "m.qdz", META, stand_ins, {})
    assert_same_quantized(read_compressed(tmp_path / "m.qdz")[1], quantized_model())


def test_written_file_is_recognised(written, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"not a model")
    assert is_compressed_file(written)
    assert not is_compressed_file(other)
    assert not is_compressed_file(tmp_path / "missing")


def similar_small_tensors():
    return {f"layer{i}": quantize_uniform(weights(16, 16, seed=i), 8, bucket_size=256)
            for i in range(6)}


def different_large_tensors():
    skewed = torch.cat([torch.zeros(4000), torch.ones(1)])
    return {"flat": quantize_uniform(weights(4001, seed=1), 4, bucket_size=4001),
            "peaked": quantize_uniform(skewed, 4, bucket_size=4001)}


@pytest.mark.parametrize("model, winner", [(similar_small_tensors, "pooled"),
                                           (different_large_tensors, "per_tensor")])
def test_auto_pooling_picks_the_smaller_file(tmp_path, model, winner):
    sizes = {}
    for pooling in ("per_tensor", "pooled", "auto"):
        path = tmp_path / f"{pooling}.qdz"
        report = write_compressed(path, {}, model(), {}, pooling=pooling)
        sizes[pooling] = (report.pooling, os.path.getsize(path))
    assert sizes["auto"][0] == winner
    assert sizes["auto"][1] == min(sizes["per_tensor"][1], sizes["pooled"][1])
    assert sizes["per_tensor"][1] != sizes["pooled"][1]


@pytest.mark.parametrize("coder", ["huffman", "ans"])
def test_size_report_matches_the_disk(tmp_path, coder):
    path = tmp_path / "model.qdz"
    quantized, plain = quantized_model(), plain_model()
    report = write_compressed(path, META, quantized, plain, coder=coder)
    size = os.path.getsize(path)
    header_length = PREFIX.unpack_from(path.read_bytes())[2]
    assert report.bytes_on_disk == size == report.total_bytes
    assert report.metadata_bytes == header_length + PREFIX.size + CHECKSUM_BYTES
    assert size - report.data_bytes == report.metadata_bytes
    n_params = sum(t.numel() for t in plain.values()) + sum(
        math.prod(q.shape) for q in quantized.values())
    assert report.fp32_bytes == 4 * n_params
    for row in report.quantized:
        assert row.scale_bytes == 8 * math.ceil(row.n_params / quantized[row.name].bucket_size)
        assert row.fixed_width_bytes == math.ceil(row.n_params * row.bits / 8)
        assert row.entropy_bits <= row.mean_code_bits + 1e-9


def test_paper_formula_agrees_with_the_payload(tmp_path):
    plain = {"bias": weights(50), "embedding": weights(10, 7)}
    report = write_compressed(tmp_path / "m.qdz", META, quantized_model(), plain)
    extras = report.shared_table_bytes + sum(t.points_bytes + t.table_bytes
                                             for t in report.quantized)
    padding = report.data_bytes - extras - report.paper_formula_bytes
    assert 0 <= padding < len(report.quantized)  # under one byte per coded stream


def test_size_report_dict_and_table(written, tmp_path):
    report = write_compressed(tmp_path / "m.qdz", META, quantized_model(), plain_model())
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["bytes_on_disk"] == report.bytes_on_disk
    assert as_dict["ratio_vs_fp32"] == pytest.approx(report.fp32_bytes / report.bytes_on_disk)
    assert len(as_dict["quantized"]) == 6 and "fixed_width_bytes" in as_dict["quantized"][0]
    n = sum(t.n_params for t in report.quantized)  # the means the recipe's tables show
    assert as_dict["quantized_params"] == n and as_dict["fixed_width_bits"] == pytest.approx(
        sum(t.bits * t.n_params for t in report.quantized) / n)
    assert min(t.mean_code_bits for t in report.quantized) <= as_dict["mean_code_bits"] <= max(
        t.mean_code_bits for t in report.quantized)
    text = format_size_report(report)
    assert "decoder.w_4bit" in text and "encoder.bias" in text
    assert f"{report.bytes_on_disk:,}" in text and "smaller on disk" in text


# --- bad files -------------------------------------------------------------------------


def read_error(path):
    with pytest.raises(CompressedFileError) as info:
        read_compressed(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def split_file(path):
    """(header dict, payload bytes) of a valid file."""
    blob = path.read_bytes()
    _, _, header_length, _ = PREFIX.unpack_from(blob)
    header_end = PREFIX.size + header_length
    return json.loads(blob[PREFIX.size:header_end]), blob[header_end:-CHECKSUM_BYTES]


def rebuild(path, header, payload, header_bytes=None):
    """A file with a correct checksum around the given (possibly hostile) content."""
    header_bytes = header_bytes if header_bytes is not None else json.dumps(header).encode()
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes), len(payload))
    write_atomic(path, [prefix, header_bytes, payload])


@pytest.mark.parametrize("keep", [0, 3, 10, PREFIX.size, 100, -1000, -1])
def test_truncated_file(written, keep):
    blob = written.read_bytes()
    written.write_bytes(blob[:keep])
    message = read_error(written)
    assert "truncated" in message or "not an onmt_qd" in message


def flip_positions(path):
    size = path.read_bytes()
    header_length = PREFIX.unpack_from(size)[2]
    return {"magic": 2, "header": PREFIX.size + header_length // 2,
            "header_last": PREFIX.size + header_length - 1,
            "payload_first": PREFIX.size + header_length, "payload_middle": len(size) // 2,
            "payload_last": len(size) - CHECKSUM_BYTES - 1, "checksum": len(size) - 5,
            "version": 9, "payload_length": PREFIX.size - 2}


@pytest.mark.parametrize("where", ["magic", "header", "header_last", "payload_first",
                                   "payload_middle", "payload_last", "checksum", "version",
                                   "payload_length"])
def test_single_flipped_byte_is_caught(written, where):
    blob = bytearray(written.read_bytes())
    blob[flip_positions(written)[where]] ^= 0x10
    written.write_bytes(bytes(blob))
    read_error(written)


def test_every_flipped_byte_is_caught(written):
    blob = written.read_bytes()
    for position in range(0, len(blob), 97):
        corrupted = bytearray(blob)
        corrupted[position] ^= 0x01
        written.write_bytes(bytes(corrupted))
        read_error(written)


def test_checksum_failure_is_reported_as_corruption(written):
    blob = bytearray(written.read_bytes())
    blob[flip_positions(written)["payload_middle"]] ^= 0xFF
    written.write_bytes(bytes(blob))
    assert "checksum" in read_error(written)


def test_unknown_format_version(written):
    blob = bytearray(written.read_bytes())
    blob[len(MAGIC):len(MAGIC) + 4] = (7).to_bytes(4, "little")
    written.write_bytes(bytes(blob))
    message = read_error(written)
    assert "format version 7" in message and "reads version 1" in message
    assert "upgrade onmt_qd" in message


@pytest.mark.parametrize("content", [b"", b"hello world, this is not a model",
                                     os.urandom(4096), b"ONMTQDY\0" + bytes(100)])
def test_foreign_file(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    assert "is not an onmt_qd compressed model file" in read_error(path)


def test_missing_file(tmp_path):
    read_error(tmp_path / "nowhere.qdz")


def test_missing_field(written):
    header, payload = split_file(written)
    del next(iter(header["quantized"].values()))["bits"]
    rebuild(written, header, payload)
    assert "missing field 'bits'" in read_error(written)


@pytest.mark.parametrize("field, value, rule", [
    ("bits", 9, "bits must be an integer from 1 to 8, got 9"),
    ("bucket_size", 2 ** 21, "bucket size must be an integer from 1 to 1048576")])
def test_a_header_breaking_the_writers_rule_is_refused(written, field, value, rule):
    """The reader applies the writer's rule (quant.validate_bits, validate_bucket_size):
    a bucket the writer refuses would pad every tensor to its size when dequantized."""
    header, payload = split_file(written)
    header["quantized"]["decoder.w_4bit"][field] = value
    rebuild(written, header, payload)
    assert f"field '{field}' in quantized tensor 'decoder.w_4bit': {rule}" in read_error(written)


def test_inconsistent_lengths(written):
    header, payload = split_file(written)
    header["quantized"]["decoder.w_4bit"]["alpha"]["length"] -= 4
    rebuild(written, header, payload)
    assert "alpha" in read_error(written)


def test_segment_past_the_payload(written):
    header, payload = split_file(written)
    header["plain"]["encoder.bias"]["data"]["offset"] = len(payload)
    rebuild(written, header, payload)
    assert "past the end" in read_error(written)


def test_levels_beyond_the_points(written):
    header, payload = split_file(written)
    entry = header["quantized"]["attn.three_points"]
    entry["points"]["length"] = 8  # two points left, yet levels index a third
    rebuild(written, header, payload)
    assert "levels beyond" in read_error(written)


def test_garbage_levels_stream_is_wrapped(written):
    header, payload = split_file(written)
    levels = header["quantized"]["encoder.w_2bit"]["levels"]
    levels["length"] = 3
    rebuild(written, header, payload)
    assert "cannot decode" in read_error(written)


@pytest.mark.parametrize("coder", ["huffman", "ans"])
def test_absurd_declared_size_fails_cleanly(tmp_path, coder):
    path = tmp_path / "model.qdz"
    write_compressed(path, META, quantized_model(), {}, coder=coder)
    header, payload = split_file(path)
    entry = header["quantized"]["encoder.w_1bit"]
    entry["shape"], entry["bucket_size"] = [2 ** 62], 2 ** 62
    entry["alpha"]["length"] = entry["beta"]["length"] = 4
    rebuild(path, header, payload)
    read_error(path)


# --- no code execution -----------------------------------------------------------------


class Booby:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickle_files_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    plain_pickle, torch_file = tmp_path / "model.pkl", tmp_path / "model.pt"
    plain_pickle.write_bytes(pickle.dumps({"model": Booby(marker)}))
    torch.save({"model": Booby(marker)}, torch_file)
    for path in (plain_pickle, torch_file):
        assert "is not an onmt_qd compressed model file" in read_error(path)
    assert not marker.exists()


def test_pickle_inside_our_format_is_never_unpickled(written, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Booby(marker))
    header, payload = split_file(written)
    rebuild(written, header, payload, header_bytes=evil)  # pickle as the header
    assert "unreadable header" in read_error(written)
    for entry, key in [(header["plain"]["encoder.bias"], "data"),
                       (header["quantized"]["encoder.w_2bit"], "levels")]:
        entry[key] = {"offset": len(payload), "length": len(evil)}
        rebuild(written, header, payload + evil)  # pickle where tensor data goes
        read_error(written)
        header, payload = split_file(written)
        payload = payload[:-len(evil)]
    assert not marker.exists()


# --- atomic writes ---------------------------------------------------------------------


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def crash(fd):
        raise OSError("disk unplugged")

    monkeypatch.setattr(os, "fsync", crash)
    path = tmp_path / "model.qdz"
    with pytest.raises(OSError, match="unplugged"):
        write_compressed(path, META, quantized_model(), plain_model())
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_file(written, monkeypatch):
    before = hashlib.sha256(written.read_bytes()).digest()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileformat.hashlib, "sha256", crash)
    with pytest.raises(KeyboardInterrupt):
        write_compressed(written, {}, {}, {"x": torch.ones(3)})
    monkeypatch.undo()
    assert hashlib.sha256(written.read_bytes()).digest() == before
    assert list(written.parent.iterdir()) == [written]


def test_writer_rejects_levels_outside_the_points(tmp_path):
    qt = quantize_uniform(weights(40), 2, bucket_size=16)
    qt.levels[3] = 4
    with pytest.raises(ValueError, match="points"):
        write_compressed(tmp_path / "m.qdz", {}, {"w": qt}, {})
    assert list(tmp_path.iterdir()) == []
