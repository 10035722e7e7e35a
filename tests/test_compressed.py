"""The compressed file end to end: PM quantization -> compress -> translate/eval."""
import json
import os

import pytest
import torch

from conftest import run_cli
from onmt_qd.compat import load_checkpoint
from onmt_qd.qdz import checkpoint_from_compressed
from test_bad_input import command
from test_train import stock_translate


def in_process(module, *args):
    """Run a command's main() here: a subprocess would spend seconds importing OpenNMT-py
    for a tiny model (the refusals below run as subprocesses, as users see them)."""
    code, _, err = command(module, *args)
    assert code == 0, err


@pytest.fixture(scope="module")
def quantized(teacher, tmp_path_factory):
    """PM-quantized teacher checkpoints and their compressed files, by variant."""
    root = tmp_path_factory.mktemp("compressed")
    out = {}
    for bits, method in ((2, "uniform"), (4, "uniform"), (8, "uniform"), (2, "quantile")):
        name = f"{method}{bits}"
        in_process("quantize", "-model", teacher, "-bits", bits, "-method", method,
                   "-output", root / f"{name}.pt")
        in_process("compress", "-model", root / f"{name}.pt", "-output", root / f"{name}.qdz",
                   "-report_json", root / f"{name}.json")
        out[name] = root / name
    return out


@pytest.mark.parametrize("variant", ["uniform2", "uniform4", "uniform8", "quantile2"])
def test_compressed_file_gives_back_the_checkpoint_bit_for_bit(quantized, variant):
    original = load_checkpoint(f"{quantized[variant]}.pt")
    restored = checkpoint_from_compressed(f"{quantized[variant]}.qdz")
    for part in ("model", "generator"):
        assert original[part].keys() == restored[part].keys()
        for key in original[part]:
            assert torch.equal(original[part][key], restored[part][key]), key
    assert restored["vocab"] == original["vocab"]
    for name, entry in original["qd_quant"]["tensors"].items():
        back = restored["qd_quant"]["tensors"][name]
        for field in ("levels", "alpha", "beta", "points"):
            assert torch.equal(entry[field], back[field]), (name, field)


def test_size_on_disk_is_what_the_report_says(quantized):
    for variant, base in quantized.items():
        with open(f"{base}.json") as handle:
            report = json.load(handle)
        assert report["bytes_on_disk"] == os.path.getsize(f"{base}.qdz")
        # the paper's formula leaves out metadata, points and tables only
        assert report["paper_formula_bytes"] <= report["data_bytes"] + 1
        for row in report["quantized"]:
            assert row["entropy_bits"] - 1e-9 <= row["mean_code_bits"] < row["entropy_bits"] + 1
    sizes = [os.path.getsize(f"{quantized[v]}.qdz") for v in ("uniform2", "uniform4", "uniform8")]
    assert sizes[0] < sizes[1] < sizes[2]


def test_translation_and_eval_from_the_file_equal_the_checkpoint(quantized, data, tmp_path):
    base = quantized["uniform4"]
    results = {}
    for ext in (".pt", ".qdz"):
        out = tmp_path / f"hyp{ext}.txt"
        in_process("eval", "-model", f"{base}{ext}", "-src", data["test.de"], "-tgt",
                   data["test.en"], "-json", tmp_path / f"r{ext}.json", "-output", out,
                   "-beam_size", 2)
        with open(tmp_path / f"r{ext}.json") as handle:
            results[ext] = json.load(handle)
        results[ext]["hyp"] = out.read_text()
    pt, qdz = results[".pt"], results[".qdz"]
    assert pt["hyp"] == qdz["hyp"] and len(pt["hyp"].splitlines()) == 20
    # the untimed warm-up batch before the timed translation changes no output
    assert pt["warmup_seconds"] > 0 and pt["hyp"].splitlines() == stock_translate(
        f"{base}.pt", data["test.de"], str(tmp_path / "stock.txt"), data["spm"])
    for key in ("bleu", "chrf", "ppl", "n_params"):
        assert pt[key] == qdz[key]
    assert qdz["size_bytes"] == os.path.getsize(f"{base}.qdz") < pt["size_bytes"]
    assert "tok:13a" in qdz["bleu_signature"]


def test_translate_command_reads_the_file(quantized, data, tmp_path):
    out = tmp_path / "out.txt"
    in_process("translate", "-model", f"{quantized['uniform2']}.qdz", "-src", data["test.de"],
               "-output", out, "-beam_size", 2)
    expected = stock_translate(f"{quantized['uniform2']}.pt", data["test.de"],
                               str(tmp_path / "stock.txt"), data["spm"])
    assert out.read_text().splitlines() == expected
    # SentencePiece detokenized: no word-piece markers in the output
    assert "\u2581" not in out.read_text()


def test_pm_quantized_checkpoint_loads_in_stock_onmt_translate(quantized, data, tmp_path):
    lines = stock_translate(f"{quantized['uniform8']}.pt", data["test.de"], str(tmp_path / "o.txt"),
                            data["spm"])
    assert len(lines) == 20


def corrupt(path, tmp_path, how):
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "flipped":
        data[len(data) // 3] ^= 0x01
    elif how == "foreign":
        data = b"PK\x03\x04 this is a zip, not ours" + bytes(100)
    target = tmp_path / f"{how}.qdz"
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("how, message", [
    ("truncated", "truncated"), ("flipped", "checksum"), ("foreign", "neither an OpenNMT-py checkpoint nor an onmt_qd compressed model")])
def test_damaged_files_fail_in_one_line(quantized, data, tmp_path, how, message):
    bad = corrupt(f"{quantized['uniform4']}.qdz", tmp_path, how)
    for args in (["translate", "-model", bad, "-src", data["test.de"], "-output", tmp_path / "o"],
                 ["eval", "-model", bad, "-src", data["test.de"], "-tgt", data["test.en"]]):
        result = run_cli(*args, check=False)
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("onmt_qd_") and "error:" in last and message in last, result.stderr
        assert "Traceback" not in result.stderr


def test_compressing_an_unquantized_checkpoint_points_to_quantize(teacher, tmp_path):
    result = run_cli("compress", "-model", teacher, "-output", tmp_path / "x.qdz", check=False)
    assert result.returncode == 2
    assert "is not quantized" in result.stderr and "onmt_qd_quantize" in result.stderr
    assert not (tmp_path / "x.qdz").exists()


def test_pm_quantization_rounds_stochastically_when_asked(teacher, quantized, tmp_path):
    levels = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        in_process("quantize", "-model", teacher, "-bits", 2, "-rounding", "stochastic",
                   "-seed", seed, "-output", tmp_path / f"{name}.pt")
        state = load_checkpoint(tmp_path / f"{name}.pt")["qd_quant"]
        assert state["policy"]["rounding"] == "stochastic"
        # the fp model's validation perplexity does not describe these weights
        assert "qd_valid" not in load_checkpoint(tmp_path / f"{name}.pt")
        levels[name] = {k: v["levels"].long() for k, v in state["tensors"].items()}
    nearest = {k: v["levels"].long() for k, v in
               load_checkpoint(f"{quantized['uniform2']}.pt")["qd_quant"]["tensors"].items()}
    for key, deterministic in nearest.items():
        assert torch.equal(levels["a"][key], levels["b"][key])  # the seed reproduces it
        # each weight goes to one of the two grid points around it
        assert (levels["a"][key] - deterministic).abs().max() <= 1
    assert any(not torch.equal(levels["a"][k], levels["c"][k]) for k in nearest)
    assert any(not torch.equal(levels["a"][k], nearest[k]) for k in nearest)
