"""Deployment (issue 22): CTranslate2 export of a Transformer, translation and evaluation
from its directory, and -precision int8 for OpenNMT-py's engine on the CPU. Commands
run in this process (test_bad_input.command); only the Transformer's training is a
subprocess."""
import errno
import json
import os
import subprocess
import sys

import pytest

from onmt_qd.deploy import ct2
from onmt_qd.deploy.ct2 import MANIFEST, export, read_manifest
from onmt_qd.fileio import sha256
from test_bad_input import command, lines_of, refused

TRANSFORMER = ["-encoder_type", "transformer", "-decoder_type", "transformer",
               "-position_encoding", "-layers", "1", "-hidden_size", "32", "-word_vec_size",
               "32", "-heads", "2", "-transformer_ff", "64", "-optim", "adam",
               "-learning_rate", "0.01", "-train_steps", "40", "-valid_steps", "1000",
               "-save_checkpoint_steps", "40", "-report_every", "20"]


@pytest.fixture(scope="module")
def transformer(data, tmp_path_factory):
    """A 1-layer Transformer trained 40 steps by stock onmt_train (its greedy output
    ends, unlike 30 steps' or a slower rate's, but hardly depends on the source), its 4-bit
    quantization's compressed file, and two exports: int8 from the .qdz (by the
    command) and float32 from the .pt. One thread: this model is too small for two to
    help, and on a busy 2-core machine two made its 40 steps 28 s instead of 2."""
    folder = tmp_path_factory.mktemp("transformer")
    subprocess.run([sys.executable, "-m", "onmt.bin.train", "-config", data["config"],
                    "-save_model", str(folder / "model"), *TRANSFORMER],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    paths = {"pt": str(folder / "model_step_40.pt"), "qdz": str(folder / "q4.qdz"),
             "int8": str(folder / "int8"), "float32": str(folder / "float32"),
             "qdz_float32": str(folder / "qdz_float32")}
    assert command("quantize", "-model", paths["pt"], "-bits", 4, "-output",
                   folder / "q4.pt")[0] == 0
    assert command("compress", "-model", folder / "q4.pt", "-output", paths["qdz"])[0] == 0
    assert command("export", "-model", paths["qdz"], "-output", paths["int8"])[0] == 0
    export(paths["pt"], paths["float32"], "float32")
    export(paths["qdz"], paths["qdz_float32"], "float32")
    return paths


def test_export_from_pt_and_qdz_carries_its_models_and_manifest(transformer):
    for quantization, source in (("int8", transformer["qdz"]), ("float32", transformer["pt"])):
        manifest = read_manifest(transformer[quantization])
        assert manifest["quantization"] == quantization
        assert manifest["source"] == os.path.abspath(source)
        assert manifest["source_sha256"] == sha256(source)
        assert manifest["ctranslate2_version"] and manifest["onmt_qd_version"]
        for name in ("model.bin", manifest["source_spm"], manifest["target_spm"]):
            assert os.path.isfile(os.path.join(transformer[quantization], name))
    # int8 weights (the float32 position-encoding table is most of this tiny model)
    assert os.path.getsize(os.path.join(transformer["int8"], "model.bin")) \
        < os.path.getsize(os.path.join(transformer["float32"], "model.bin"))


def test_a_translator_counts_the_cores_and_leaves_torchs_threads_alone(transformer,
                                                                        monkeypatch):
    """Creating a CTranslate2 translator sets the OpenMP threads torch shares to its
    intra_threads: the recipe's deploy stage then gave every model after the first one
    translator instead of one per core, and an OpenNMT-py run after it one thread."""
    import torch

    from onmt_qd.deploy.ct2 import DeployedModel

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for _ in range(2):
            assert DeployedModel(transformer["int8"]).inter_threads == 2
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_translate_from_the_directory_keeps_one_line_per_source_line(transformer, data,
                                                                     tmp_path):
    source = lines_of(data["test.de"])[:5]
    source[1:1] = ["", "   "]
    src, out = tmp_path / "src.de", tmp_path / "out.txt"
    src.write_text("".join(f"{line}\n" for line in source), encoding="utf-8")
    assert command("translate", "-model", transformer["int8"], "-src", src, "-output", out,
                   "-n_best", 2, "-beam_size", 2)[0] == 0
    translations = lines_of(out)
    assert len(translations) == 2 * len(source) and translations[2:6] == [""] * 4
    best = translations[:1] + translations[6::2]
    assert all(line and "▁" not in line for line in best)  # detokenized


def test_precision_with_a_directory_is_refused_alike_by_translate_and_eval(transformer, data,
                                                                        tmp_path):
    """One rule for both commands (the engine's check_options): a directory runs at the
    quantization it was exported with; eval accepted -precision fp32 and translate did not."""
    for precision in ("fp32", "int8"):
        args = ["-model", transformer["int8"], "-src", data["test.de"], "-precision", precision]
        lines = [refused("translate", *args, "-output", tmp_path / "out.txt",
                         message=f"-precision {precision} does not apply to a CTranslate2 "
                         "directory"),
                 refused("eval", *args, "-tgt", data["test.en"], message="int8 as exported")]
        assert lines[0].split(": error: ")[1] == lines[1].split(": error: ")[1]
    assert os.listdir(tmp_path) == []


def evaluated(model, data, folder, name):
    """onmt_qd_eval's JSON and greedy translations of the test set for ``model``."""
    json_path, output = folder / f"{name}.json", folder / f"{name}.txt"
    code, _, err = command("eval", "-model", model, "-src", data["test.de"], "-tgt",
                           data["test.en"], "-json", json_path, "-output", output,
                           "-beam_size", 1)
    assert code == 0, err
    return json.loads(json_path.read_text()), lines_of(output)


def test_eval_of_the_directory_measures_what_the_checkpoint_does(transformer, data, tmp_path):
    """float32, from the .pt and from the 4-bit .qdz: the same model and arithmetic, so
    CTranslate2's scores of the references give our perplexity and greedy search the
    same sentences. int8 adds CTranslate2's own quantization, whose kernels (and so its
    error) differ between CPUs: its bounds come from the model under test, not from one
    machine's int8 error (a 1% bound on perplexity held on one CPU only: 66.3 against
    62.7 on another). Its perplexity must stay far nearer the float32 one than the
    uniform guess (the vocabulary size) is, and its translations nearer the float32
    ones than those are to the references: the weights are this model's."""
    import math

    from onmt_qd.evaluate.metrics import bleu_chrf
    from onmt_qd.qdz import load_any

    results = {name: evaluated(transformer[name], data, tmp_path, name)
               for name in ("pt", "float32", "qdz", "qdz_float32", "int8")}
    for ours, deployed in (("pt", "float32"), ("qdz", "qdz_float32"), ("qdz", "int8")):
        (ours, our_lines), (deployed, deployed_lines) = results[ours], results[deployed]
        assert deployed.keys() == ours.keys() and deployed["n_params"] == ours["n_params"]
        assert deployed["size_bytes"] > os.path.getsize(
            os.path.join(deployed["model"], "model.bin"))
        assert len(deployed_lines) == len(our_lines) == len(lines_of(data["test.de"]))
    for ours, deployed in (("pt", "float32"), ("qdz", "qdz_float32")):
        assert results[deployed][1] == results[ours][1]
        assert results[deployed][0]["ppl"] == pytest.approx(results[ours][0]["ppl"], rel=1e-3)
    vocabulary = len(load_any(transformer["qdz"])["vocab"]["tgt"])
    exact, int8 = (math.log(results[name][0]["ppl"]) for name in ("qdz_float32", "int8"))
    assert abs(int8 - exact) < 0.5 * (math.log(vocabulary) - exact)
    references = lines_of(data["test.en"])
    assert bleu_chrf(results["int8"][1], results["qdz_float32"][1])[1] > \
        bleu_chrf(results["qdz_float32"][1], references)[1]


def test_an_lstm_is_refused_in_one_line_naming_the_int8_path(teacher, tmp_path):
    refused("export", "-model", teacher, "-output", tmp_path / "out",
            message="use onmt_qd_translate -precision int8 (CPU)")
    assert os.listdir(tmp_path) == []


def test_a_failed_export_leaves_nothing_and_a_partial_directory_is_refused(
        transformer, data, tmp_path, monkeypatch):
    """A write failing after the conversion (a full disk) leaves no -output and no
    staging directory; what a killed export leaves (no manifest) is refused in one line
    and removed by the next export; a folder that is no export is never replaced."""
    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    output = tmp_path / "model"
    with monkeypatch.context() as patch:
        patch.setattr(ct2.shutil, "copyfile", full_disk)
        refused("export", "-model", transformer["pt"], "-output", output,
                message="No space left on device")
    assert os.listdir(tmp_path) == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f"model.onmt_qd-{dead.pid}.tmp"  # converted, killed before the manifest
    killed.mkdir()
    (killed / "model.bin").write_bytes(b"converted")
    refused("translate", "-model", killed, "-src", data["test.de"], "-output",
            tmp_path / "out.txt", message="not a complete onmt_qd_export directory")
    refused("export", "-model", transformer["pt"], "-output", data["root"],
            message="is not an onmt_qd_export directory")
    assert command("export", "-model", transformer["pt"], "-output", output)[0] == 0
    assert os.listdir(tmp_path) == ["model"] and os.path.isfile(output / MANIFEST)


def test_precision_int8_quantizes_the_lstm_on_the_cpu(teacher, data, tmp_path):
    from onmt_qd.inference.engine import load_model
    from onmt_qd.opts import parse, translate_parser

    opt = parse(translate_parser(), ["-model", teacher, "-src", data["test.de"],
                                     "-precision", "int8"])
    layers = [m for m in load_model(teacher, opt).model.modules()
              if type(m).__name__ in ("Linear", "LSTM", "LSTMCell")]
    assert {type(m).__name__ for m in layers} == {"Linear", "LSTM", "LSTMCell"}
    assert all(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in layers)
    out = tmp_path / "int8.txt"
    assert command("translate", "-model", teacher, "-src", data["test.de"], "-output", out,
                   "-precision", "int8", "-beam_size", 2)[0] == 0
    translations = lines_of(out)
    assert len(translations) == len(lines_of(data["test.de"])) and any(translations)


def test_precision_int8_on_a_gpu_is_refused_before_loading(teacher, data):
    """The check the commands run before loading (parse refuses -gpu 0 first on a
    machine without a GPU, so the option is set after parsing)."""
    from onmt_qd.inference.engine import check_inference
    from onmt_qd.opts import parse, translate_parser

    opt = parse(translate_parser(), ["-model", teacher, "-src", data["test.de"],
                                     "-precision", "int8"])
    opt.gpu = 0
    with pytest.raises(ValueError, match="-precision int8 runs on the CPU only") as refusal:
        check_inference(opt, 1)
    assert "\n" not in str(refusal.value)


def test_recipe_deploy_stage_exports_transformers_and_skips_lstm_int8_on_a_gpu(
        transformer, teacher, data, tmp_path):
    """The recipe's deploy command (bin/recipe_deploy.py) on a plan: the Transformer's
    .qdz exported to CTranslate2 int8 and evaluated from the directory, with its
    translators named; on a GPU run an LSTM's int8 path is skipped with the reason,
    before anything touches a GPU."""
    import torch
    import yaml

    from onmt_qd.bin.recipe_deploy import deploy_all, deploy_model

    plan = {"models": [{"name": "q4", "files": [transformer["qdz"]], "reference": False}],
            "src": data["test.de"], "tgt": data["test.en"], "beam_size": 2, "batch_size": 8,
            "gpu": False, "threads": 1, "folder": str(tmp_path)}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    threads = torch.get_num_threads()
    try:
        deploy_all(str(tmp_path / "plan.yaml"))
    finally:  # it sets the plan's threads, for this test session too
        torch.set_num_threads(threads)
    [run] = json.loads((tmp_path / "q4.json").read_text())
    assert run["role"] == "deployed" and run["engine"] == {
        "name": "CTranslate2", "precision": "int8", "device": "cpu", "inter_threads": 1,
        "intra_threads": 1}
    assert read_manifest(run["model"])["source"] == transformer["qdz"]
    assert len(lines_of(tmp_path / run["hyp"])) == len(lines_of(data["test.de"]))
    [skipped] = deploy_model({"name": "lstm", "files": [teacher], "reference": False},
                             {**plan, "gpu": True})
    assert skipped["engine"]["name"] == "OpenNMT-py" and "CPU kernels only" in skipped["skipped"]


def damaged(transformer, tmp_path, change):
    """A copy of the int8 export with ``change(directory)`` applied."""
    import shutil

    directory = tmp_path / "damaged"
    shutil.copytree(transformer["int8"], directory)
    change(directory)
    return directory


def flip_a_byte(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_manifest(directory, **fields):
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest.update(fields)
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("change,message", [
    (lambda d: flip_a_byte(d / "model.bin"), "model.bin does not match the checksum"),
    (lambda d: edit_manifest(d, quantization="float16"), "was changed after the export"),
    (lambda d: edit_manifest(d, source_spm="nothing.model"), "was changed after the export"),
    (lambda d: os.remove(d / read_manifest(d)["source_spm"]), "is missing from the export"),
    (lambda d: (d / "model.bin").write_bytes(b"x"), "model.bin has 1 bytes"),
])
def test_a_changed_export_directory_is_refused_in_one_line(change, message, transformer,
                                                           data, tmp_path):
    """The manifest carries each file's size and SHA-256 and a digest of itself: a flipped
    byte in model.bin loaded and translated, an edited quantization was reported as the
    model's, a deleted SentencePiece model ended in a traceback."""
    directory = damaged(transformer, tmp_path, change)
    for module, extra in (("translate", ["-output", tmp_path / "out.txt"]),
                          ("eval", ["-tgt", data["test.en"], "-json", tmp_path / "out.json"])):
        refused(module, "-model", directory, "-src", data["test.de"], *extra, message=message)
    assert sorted(os.listdir(tmp_path)) == ["damaged"]


def test_an_export_without_checksums_is_refused_with_what_to_do(transformer, data, tmp_path):
    def older(directory):
        manifest = json.loads((directory / MANIFEST).read_text())
        del manifest["files"], manifest["manifest_sha256"]
        (directory / MANIFEST).write_text(json.dumps(manifest))
    directory = damaged(transformer, tmp_path, older)
    refused("translate", "-model", directory, "-src", data["test.de"], "-output",
            tmp_path / "out.txt", message="export it again with onmt_qd_export")
