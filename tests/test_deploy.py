"""Deployment (issue 22): CTranslate2 export of a Transformer and translation from its
directory; -precision int8 for OpenNMT-py's engine on the CPU."""
import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli
from onmt_qd.deploy.ct2 import (MANIFEST, DeployedModel, export, read_manifest, sha256_of,
                                translate_lines)
from test_bad_input import command, lines_of, refused

TRANSFORMER = ["-encoder_type", "transformer", "-decoder_type", "transformer",
               "-position_encoding", "-layers", "1", "-hidden_size", "32", "-word_vec_size",
               "32", "-heads", "2", "-transformer_ff", "64", "-optim", "adam",
               "-learning_rate", "0.002", "-train_steps", "60", "-valid_steps", "1000",
               "-save_checkpoint_steps", "60", "-report_every", "20"]


@pytest.fixture(scope="module")
def transformer(data, tmp_path_factory):
    """A 1-layer Transformer trained 60 steps by stock onmt_train, its 4-bit
    quantization and that one's compressed file."""
    folder = tmp_path_factory.mktemp("transformer")
    subprocess.run([sys.executable, "-m", "onmt.bin.train", "-config", data["config"],
                    "-save_model", str(folder / "model"), *TRANSFORMER],
                   check=True, capture_output=True)
    paths = {"pt": str(folder / "model_step_60.pt"), "q4": str(folder / "q4.pt"),
             "qdz": str(folder / "q4.qdz")}
    run_cli("quantize", "-model", paths["pt"], "-bits", 4, "-output", paths["q4"])
    run_cli("compress", "-model", paths["q4"], "-output", paths["qdz"])
    return paths


@pytest.fixture(scope="module")
def exported(transformer, tmp_path_factory):
    """int8 export of the .qdz and float32 export of the fp32 checkpoint."""
    folder = tmp_path_factory.mktemp("exported")
    dirs = {"int8": str(folder / "int8"), "float32": str(folder / "float32")}
    assert command("export", "-model", transformer["qdz"], "-output", dirs["int8"])[0] == 0
    export(transformer["pt"], dirs["float32"], "float32")
    return dirs


def test_export_writes_a_directory_with_its_models_and_manifest(transformer, exported):
    for quantization, source in (("int8", transformer["qdz"]), ("float32", transformer["pt"])):
        manifest = read_manifest(exported[quantization])
        assert manifest["quantization"] == quantization
        assert manifest["source"] == os.path.abspath(source)
        assert manifest["source_sha256"] == sha256_of(source)
        assert manifest["ctranslate2_version"] and manifest["onmt_qd_version"]
        for name in ("model.bin", manifest["source_spm"], manifest["target_spm"]):
            assert os.path.isfile(os.path.join(exported[quantization], name))
    # int8 weights (the float32 position-encoding table is most of this tiny model)
    assert os.path.getsize(os.path.join(exported["int8"], "model.bin")) \
        < os.path.getsize(os.path.join(exported["float32"], "model.bin"))


def test_translation_from_the_directory_keeps_one_line_per_source_line(exported, data):
    source = lines_of(data["test.de"])[:6]
    source[2:2] = ["", "   "]
    out = translate_lines(exported["int8"], source, beam_size=3, n_best=2, batch_size=4)
    assert len(out) == len(source) and all(len(o) == 2 for o in out)
    assert out[2] == out[3] == ["", ""]
    assert all(o[0] and "▁" not in o[0] for i, o in enumerate(out) if i not in (2, 3))


def test_float32_export_translates_as_our_engine(transformer, exported, data, tmp_path):
    """Same model, same arithmetic: greedy search gives the same sentences, and CTranslate2's
    scores of the references give our reference perplexity. (Beam search normalizes
    scores by length + 1 in OpenNMT-py, by length in CTranslate2: a few beams differ.)"""
    from onmt_qd.evaluate.metrics import reference_perplexity
    from onmt_qd.models import build_model_from_checkpoint

    ours = tmp_path / "ours.txt"
    run_cli("translate", "-model", transformer["pt"], "-src", data["test.de"], "-output", ours,
            "-beam_size", 1)
    source = lines_of(data["test.de"])
    assert [o[0] for o in translate_lines(exported["float32"], source, beam_size=1)] \
        == lines_of(ours)
    net, vocabs, opt = build_model_from_checkpoint(transformer["pt"])
    expected = reference_perplexity(net, vocabs, opt, data["test.de"], data["test.en"])
    deployed = DeployedModel(exported["float32"]).perplexity(source, lines_of(data["test.en"]))
    assert deployed == pytest.approx(expected, rel=1e-3)


def test_int8_export_agrees_with_the_compressed_model(transformer, exported, data, tmp_path):
    ours = tmp_path / "ours.txt"
    run_cli("translate", "-model", transformer["qdz"], "-src", data["test.de"], "-output",
            ours, "-beam_size", 1)
    deployed = [o[0] for o in translate_lines(exported["int8"], lines_of(data["test.de"]),
                                              beam_size=1)]
    agree = sum(a == b for a, b in zip(deployed, lines_of(ours)))
    assert agree >= 0.75 * len(deployed), (agree, len(deployed))


def test_lstm_is_refused_in_one_line_naming_the_int8_path(teacher, tmp_path):
    refused("export", "-model", teacher, "-output", tmp_path / "out",
            message="onmt_qd_translate -precision int8")
    assert not os.listdir(tmp_path)


def test_export_never_replaces_what_is_not_an_export(transformer, data, exported, tmp_path):
    refused("export", "-model", transformer["pt"], "-output", data["root"],
            message="is not an onmt_qd_export directory")
    before = read_manifest(exported["float32"])["quantization"]
    assert command("export", "-model", transformer["pt"], "-output", tmp_path / "again",
                   "-quantization", "int16")[0] == 0
    assert before == "float32" and read_manifest(tmp_path / "again")["quantization"] == "int16"


KILL_AT_RENAME = """
import os, signal, sys
from onmt_qd.deploy import ct2
os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
ct2.export(sys.argv[1], sys.argv[2], "int8")
"""


def test_a_killed_export_leaves_no_directory_that_loads(transformer, tmp_path):
    """Killed at the rename (all written but not in place), an export leaves no -output;
    a directory without a manifest (a conversion killed earlier) is refused."""
    output = tmp_path / "model"
    killed = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, transformer["pt"], output])
    assert killed.returncode == -9 and not os.path.exists(output)
    assert len(os.listdir(tmp_path)) == 1  # the staging directory, named as temporary
    export(transformer["pt"], output, "int8")  # removes what the killed one left
    assert os.listdir(tmp_path) == ["model"]
    os.remove(output / MANIFEST)
    with pytest.raises(ValueError, match="not a complete onmt_qd_export directory"):
        translate_lines(output, ["ein Hund"])


def test_translate_and_eval_take_the_directory(transformer, exported, data, tmp_path):
    source = lines_of(data["test.de"])[:5]
    source.insert(1, "")
    src = tmp_path / "src.de"
    src.write_text("".join(f"{line}\n" for line in source), encoding="utf-8")
    out = tmp_path / "out.txt"
    assert command("translate", "-model", exported["int8"], "-src", src, "-output", out,
                   "-n_best", 2, "-beam_size", 2)[0] == 0
    translations = lines_of(out)
    assert len(translations) == 2 * len(source) and translations[2:4] == ["", ""]
    refused("translate", "-model", exported["int8"], "-src", src, "-output", out,
            "-precision", "int8", message="-precision does not apply to a CTranslate2 directory")
    for model, name in ((exported["int8"], "dir.json"), (transformer["qdz"], "qdz.json")):
        assert command("eval", "-model", model, "-src", data["test.de"], "-tgt",
                       data["test.en"], "-json", tmp_path / name, "-beam_size", 2)[0] == 0
    deployed, ours = (json.loads((tmp_path / n).read_text()) for n in ("dir.json", "qdz.json"))
    assert deployed.keys() == ours.keys()
    assert deployed["n_params"] == ours["n_params"]
    assert deployed["size_bytes"] > os.path.getsize(os.path.join(exported["int8"], "model.bin"))
    assert deployed["ppl"] == pytest.approx(ours["ppl"], rel=0.05)  # int8 vs 4-bit dequantized


def test_a_directory_that_is_no_export_is_refused_in_one_line(data, tmp_path):
    refused("translate", "-model", tmp_path, "-src", data["test.de"], "-output",
            tmp_path / "out.txt", message="not a complete onmt_qd_export directory")


def test_lstm_translates_at_precision_int8_on_the_cpu(teacher, data, tmp_path):
    outputs = {}
    for precision in ("fp32", "int8"):
        outputs[precision] = tmp_path / f"{precision}.txt"
        assert command("translate", "-model", teacher, "-src", data["test.de"], "-output",
                       outputs[precision], "-precision", precision, "-beam_size", 2)[0] == 0
    fp32, int8 = lines_of(outputs["fp32"]), lines_of(outputs["int8"])
    assert len(int8) == len(lines_of(data["test.de"]))
    assert sum(a == b for a, b in zip(fp32, int8)) >= 0.5 * len(fp32)


def test_int8_model_has_int8_layers(teacher):
    from onmt_qd.deploy.int8 import quantize_dynamic_int8
    from onmt_qd.models import build_model_from_checkpoint

    net = quantize_dynamic_int8(build_model_from_checkpoint(teacher)[0])
    layers = [m for m in net.modules() if type(m).__name__ in ("Linear", "LSTM", "LSTMCell")]
    assert {type(m).__name__ for m in layers} == {"Linear", "LSTM", "LSTMCell"}
    assert all(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in layers)


def test_int8_on_a_gpu_is_refused_in_one_line(teacher, data, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    refused("translate", "-model", teacher, "-src", data["test.de"], "-output",
            tmp_path / "out.txt", "-precision", "int8", "-gpu", 0,
            message="-precision int8 runs on the CPU only")
