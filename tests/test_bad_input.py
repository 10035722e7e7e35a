"""Bad input loses nothing and misaligns nothing (issue 14), one test per class.

Refusals that happen before any model is loaded run the command's entry point in this
process (``command``: argv, exit status and stderr exactly as the console script
gives them; a subprocess would spend ~3 s importing OpenNMT-py for each); translation,
training and stock OpenNMT-py run as subprocesses."""
import contextlib
import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import traceback

import pytest
import yaml

from conftest import run_cli
from onmt_qd.compat import load_checkpoint

DECODING = ["-beam_size", "2", "-max_length", "30"]


def command(module, *args):
    """(exit status, stdout, stderr) of ``onmt_qd.bin.MODULE``'s main() given ``args``."""
    main = importlib.import_module(f"onmt_qd.bin.{module}").main
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [module, *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def refused(module, *args, message):
    """The command exits 2 with one 'NAME: error: ...' line containing ``message``."""
    code, _, err = command(module, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"onmt_qd_{module}: error: ") and message in lines[0], err
    return lines[0]


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def lines_of(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().split("\n")[:-1]


@pytest.fixture(scope="module")
def q4(teacher, tmp_path_factory):
    """The teacher quantized to 4 bits, and its compressed file."""
    folder = tmp_path_factory.mktemp("q4")
    path, packed = folder / "q4.pt", folder / "q4.qdz"
    assert command("quantize", "-model", teacher, "-bits", 4, "-output", path)[0] == 0
    assert command("compress", "-model", path, "-output", packed)[0] == 0
    return {"pt": str(path), "qdz": str(packed)}


@pytest.fixture(scope="module")
def translated(q4, data, tmp_path_factory):
    """onmt_qd_translate's output for the 20 test sentences."""
    output = tmp_path_factory.mktemp("plain") / "out.txt"
    assert command("translate", "-model", q4["pt"], "-src", data["test.de"], "-output", output,
                   *DECODING)[0] == 0
    return lines_of(output)


def test_1_every_source_line_gives_its_output_lines_in_order(q4, data, translated, tmp_path):
    source, translations = lines_of(data["test.de"]), list(translated)
    blank = {0, 3, 4, 9, 24}  # first, consecutive, whitespace-only, last
    with_blanks, expected = [], []
    for i in range(len(source) + len(blank)):
        is_blank = i in blank
        with_blanks.append(" \t " if i == 4 else "" if is_blank else source.pop(0))
        expected.append("" if is_blank else translations.pop(0))
    (tmp_path / "blanks.de").write_text("\n".join(with_blanks) + "\n", encoding="utf-8")
    run_cli("translate", "-model", q4["qdz"], "-src", tmp_path / "blanks.de",
            "-output", tmp_path / "out.txt", "-n_best", 2, "-with_score", *DECODING)
    out = lines_of(tmp_path / "out.txt")
    assert len(out) == 2 * len(with_blanks)
    best = [line.rsplit("\t", 1) for line in out[::2]]
    assert [text for text, _ in best] == expected  # one line each, in source order
    assert all(float(score) <= 0 for _, score in best)
    (tmp_path / "empty.de").write_bytes(b"")
    assert command("translate", "-model", q4["pt"], "-src", tmp_path / "empty.de",
                   "-output", tmp_path / "empty.txt")[0] == 0
    assert (tmp_path / "empty.txt").read_bytes() == b""


def test_2_no_output_may_be_an_input_and_output_folders_are_checked_first(
        q4, data, teacher, tmp_path, monkeypatch):
    src, tgt = tmp_path / "src.de", tmp_path / "ref.en"
    shutil.copy(data["test.de"], src)
    shutil.copy(data["test.en"], tgt)
    model = shutil.copy(q4["pt"], tmp_path / "q4.pt")
    (tmp_path / "link.en").symlink_to(tgt)
    (tmp_path / "link.pt").symlink_to(model)
    before = {p: digest(p) for p in (src, tgt, model)}
    monkeypatch.chdir(tmp_path)  # a relative spelling of the same file
    same = "writing it would destroy that file"
    refused("translate", "-model", model, "-src", src, "-output", "./src.de", message=same)
    refused("eval", "-model", model, "-src", src, "-tgt", tgt, "-output", tgt, message=same)
    refused("eval", "-model", model, "-src", src, "-tgt", tgt, "-json", "link.en", message=same)
    refused("quantize", "-model", model, "-bits", 2, "-output", model, message=same)
    refused("compress", "-model", model, "-output", "link.pt", message=same)
    refused("diffquant", "-config", data["config"], "-model", model, "-teacher_model", teacher,
            "-bits", 2, "-output", "link.pt", message=same)
    assert {p: digest(p) for p in before} == before
    missing = "folder"
    for module, args in (("quantize", ["-model", model, "-bits", 2]),
                         ("compress", ["-model", model])):
        line = refused(module, *args, "-output", "no/such/out", message=missing)
        assert "-output no/such/out" in line and ".tmp" not in line
    refused("eval", "-model", model, "-src", src, "-tgt", tgt, "-json", "no/r.json",
            message="no/r.json: folder")
    assert sorted(os.listdir(tmp_path)) == ["link.en", "link.pt", "q4.pt", "ref.en", "src.de"]


def train_args(data, save, *extra):
    return ["-config", data["config"], "-hidden_size", 64, "-word_vec_size", 64,
            "-save_model", save, *extra]


def test_3_resume_keeps_the_better_best_checkpoint_and_cleans_killed_saves(data, teacher,
                                                                           tmp_path):
    first = os.path.join(os.path.dirname(teacher), "model_step_19.pt")
    best = shutil.copy(teacher, tmp_path / "m_best.pt")
    before, best_ppl = digest(best), load_checkpoint(best)["qd_valid"]["ppl"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"m_step_40.pt.onmt_qd-{dead.pid}.tmp"  # what kill -9 mid-save leaves
    stale.write_bytes(b"half a checkpoint")
    # learning rate 0: the resumed model stays the step-19 one, worse than the best
    run_cli("train", *train_args(data, tmp_path / "m", "-train_from", first, "-reset_optim",
                                 "all", "-learning_rate", 0, "-train_steps", 2,
                                 "-valid_steps", 2, "-save_checkpoint_steps", 2))
    assert load_checkpoint(tmp_path / "m_step_2.pt")["qd_valid"]["ppl"] > best_ppl
    assert digest(best) == before
    assert not stale.exists()
    # resuming a checkpoint that is already at -train_steps: nothing to train
    refused("train", *train_args(data, tmp_path / "r", "-train_from", first,
                                 "-train_steps", 10),
            message="is at step 19 and training stops at step 10: nothing is left to train")
    refused("train", *train_args(data, tmp_path / "r", "-epochs", 2, "-train_steps", 5),
            message="-epochs 2 sets -train_steps itself")
    refused("train", *train_args(data, tmp_path / "r", "-train_from", first, "-hidden_size",
                                 32), message="has -hidden_size 64, and this run sets "
            "-hidden_size 32: a resumed model keeps its shape")
    assert not list(tmp_path.glob("r*"))


def test_4_non_finite_training_stops_and_requantizing_says_what_happens(data, teacher, q4,
                                                                       tmp_path):
    first = os.path.join(os.path.dirname(teacher), "model_step_19.pt")
    refused("train", *train_args(data, tmp_path / "t", "-teacher_model", teacher,
                                 "-distill_temperature", "nan"),
            message="-distill_temperature must be > 0 and at most 100, got nan")
    result = run_cli("train", *train_args(data, tmp_path / "n" / "m", "-train_from", first,
                                          "-reset_optim", "all", "-learning_rate", "nan",
                                          "-train_steps", 4, "-save_checkpoint_steps", 1),
                     check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert last.startswith("onmt_qd_train: error: training stopped at step 1: the weights "
                           "are not finite (training diverged)"), result.stderr
    assert os.listdir(tmp_path / "n") == []  # no NaN checkpoint
    for model in (q4["pt"], q4["qdz"]):  # neither keeps full-precision weights
        code, out, _ = command("quantize", "-model", model, "-bits", 2, "-output",
                               tmp_path / "q2.pt")
        assert code == 0 and ("is already quantized (4 bits): quantizing again from its "
                              "4-bit values") in out


def test_5_bad_input_gives_one_line_not_a_traceback(data, teacher, tmp_path):
    (tmp_path / "bad.yaml").write_text("save_model: [m\n")
    refused("train", "-config", tmp_path / "bad.yaml", message="is not valid YAML at line 2")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(teacher, "rb").read()[:5000])
    (tmp_path / "foreign.pt").write_text("hello\n")
    for bad, what in ((truncated, "damaged or truncated torch file"),
                      (tmp_path / "foreign.pt", "not a torch file")):
        refused("train", *train_args(data, tmp_path / "m", "-train_from", bad), message=what)
    refused("eval", "-model", teacher, "-src", data["test.de"], "-tgt", data["test.en"],
            "-beam_size", 0, message="-beam_size must be at least 1, got 0")
    refused("data", "spm", "multi30k", "-dest", tmp_path / "nothing",
            message="fetch the dataset first with onmt_qd_data get multi30k")
    refused("train", "-config", data["config"], "-quant_bits", "abc",
            message="invalid int value: 'abc'")
    refused("quantize", "-model", teacher, "-bits", 0, "-output", tmp_path / "q.pt",
            message="-bits must be an integer from 1 to 8, got 0")
    refused("quantize", "-model", teacher, "-bits", 4, "-exclude", ".*", "-output",
            tmp_path / "q.pt", message="the policy leaves no tensor")
    refused("translate", "-model", teacher, "-src", data["test.de"], "-output",
            tmp_path / "o.txt", "-n_best", 3, "-beam_size", 2,
            message="-n_best 3 is more than -beam_size 2")
    (tmp_path / "empty.de").write_text("")
    refused("eval", "-model", teacher, "-src", tmp_path / "empty.de", "-tgt",
            tmp_path / "empty.de", message="has no sentence to translate")
    refused("train", "-config", teacher, message="is not a YAML text file")
    refused("train", *train_args(data, tmp_path / "m", "-teacher_cache", teacher),
            message="is a file; a teacher cache is the folder")
    refused("diffquant", "-config", data["config"], "-model", teacher, "-teacher_model",
            teacher, "-bits", 2, "-grad_norm_batches", 0, "-output", tmp_path / "d.pt",
            message="-grad_norm_batches must be at least 1, got 0")
    assert not os.path.exists(tmp_path / "m")


def test_5_a_gpu_that_is_not_there_is_named_before_any_work(q4, data, tmp_path, monkeypatch):
    import torch

    out = tmp_path / "o.txt"
    translate = ["-model", q4["qdz"], "-src", data["test.de"], "-output", out]
    evaluate = ["-model", q4["qdz"], "-src", data["test.de"], "-tgt", data["test.en"],
                "-json", out]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    none = "asks for a GPU but torch sees no CUDA device: leave -gpu out to run on the CPU"
    refused("translate", *translate, "-gpu", 0, message=none)
    refused("eval", *evaluate, "-gpu", 0, message=none)
    refused("train", *train_args(data, tmp_path / "m", "-gpu_ranks", 0),
            message="-gpu_ranks 0 asks for a GPU but torch sees no CUDA device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    refused("translate", *translate, "-gpu", 1,
            message="-gpu 1: torch sees 1 CUDA device(s), numbered 0 to 0")
    assert os.listdir(tmp_path) == []


def test_6_messages_say_what_is_wrong(q4, data, tmp_path, monkeypatch):
    blob = bytearray(open(q4["qdz"], "rb").read())
    blob[20] ^= 0x01  # a length field of the header
    (tmp_path / "damaged.qdz").write_bytes(bytes(blob))
    out = ["-output", tmp_path / "o.txt"]
    refused("translate", "-model", tmp_path / "damaged.qdz", "-src", data["test.de"], *out,
            message="header declares")
    refused("translate", "-model", tmp_path, "-src", data["test.de"], *out,
            message=f"-model {tmp_path} is not a CTranslate2 model directory (no model.bin)")
    (tmp_path / "bad.de").write_bytes("gut\nein Fu\xdf\n".encode("latin-1"))
    refused("translate", "-model", q4["pt"], "-src", tmp_path / "bad.de", *out,
            message=f"-src {tmp_path / 'bad.de'} line 2: invalid UTF-8")
    refused("train", *train_args(data, tmp_path / "m", "-teacher_model", q4["qdz"]),
            message="is an onmt_qd compressed model (.qdz), and this takes an OpenNMT-py "
            "checkpoint (.pt)")
    (tmp_path / "text.pt").write_text("not a model\n")
    line = refused("quantize", "-model", tmp_path / "text.pt", "-bits", 2, *out,
                   message="is neither an OpenNMT-py checkpoint nor an onmt_qd compressed "
                   "model (not a torch file)")
    assert line.endswith("(not a torch file)")
    assert command("compress", "-model", q4["qdz"], "-coder", "ans", "-output",
                   tmp_path / "ans.qdz")[0] == 0  # a .qdz is accepted: packed again
    (tmp_path / "cut.pt").write_bytes(open(q4["pt"], "rb").read()[:5000])
    monkeypatch.setenv("ONMT_QD_DEBUG", "1")
    with pytest.raises(ValueError) as raised:
        command("quantize", "-model", tmp_path / "cut.pt", "-bits", 2, *out)
    shown = "".join(traceback.format_exception(raised.value))
    underlying = raised.value.__cause__  # torch's own error, shown above ours
    assert underlying is not None and f"{type(underlying).__name__}: {underlying}" in shown
    assert not (tmp_path / "o.txt").exists()


def test_7_failures_leave_nothing_and_leftovers_are_cleaned(q4, data, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    output = tmp_path / "m.qdz"
    stale = tmp_path / f"m.qdz.onmt_qd-{dead.pid}.tmp"  # a compression killed mid-write
    live = tmp_path / f"m.qdz.onmt_qd-{os.getppid()}.tmp"  # its writer still runs
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert command("compress", "-model", q4["pt"], "-output", output)[0] == 0
    assert not stale.exists() and live.exists() and output.exists()
    out = tmp_path / "out" / "o.txt"
    (tmp_path / "out").mkdir()
    (tmp_path / "bad.de").write_bytes(b"\xff\xfe\n")
    for src in (tmp_path / "missing.de", tmp_path / "bad.de"):
        refused("translate", "-model", q4["pt"], "-src", src, "-output", out, message="-src")
    refused("data", "get", "multi30k", "-dest", tmp_path / "d" / "e", "-from",
            tmp_path / "no_mirror", message="mirror")
    assert os.listdir(tmp_path / "out") == [] and not (tmp_path / "d").exists()


def translate_args(model, data, output):
    return ["-model", model, "-src", data["test.de"], "-output", output, "-transforms",
            "sentencepiece", "-src_subword_model", data["spm"], "-tgt_subword_model",
            data["spm"], *DECODING]


def test_8_stock_onmt_translate_as_the_readme_says(q4, data, translated, tmp_path):
    """A fresh process that never imports onmt_qd."""
    stock = [sys.executable, "-m", "onmt.bin.translate"]
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    refused_run = subprocess.run([*stock, *translate_args(q4["pt"], data, tmp_path / "a.txt")],
                                 capture_output=True, text=True, env=env)
    assert refused_run.returncode != 0 and "Weights only load failed" in refused_run.stderr
    assert (tmp_path / "a.txt").read_bytes() == b""  # and it leaves an empty file
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    subprocess.run([*stock, *translate_args(q4["pt"], data, tmp_path / "b.txt")],
                   check=True, capture_output=True, env=env)
    assert lines_of(tmp_path / "b.txt") == translated


def test_9_a_byte_order_mark_is_removed_by_every_reader_or_refused(q4, data, translated,
                                                                   tmp_path):
    """An editor's byte-order mark stayed inside the first token (\\ufeffDas -> <unk>)
    silently. Readers of text remove it and say so; OpenNMT-py's corpus reader, which
    takes training files as they are, gets them refused in one line."""
    for name in ("test.de", "test.en"):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + open(data[name], "rb").read())
    code, _, err = command("translate", "-model", q4["pt"], "-src", tmp_path / "test.de",
                           "-output", tmp_path / "out.txt", *DECODING)
    assert code == 0 and "removed the byte-order mark (U+FEFF)" in err
    assert lines_of(tmp_path / "out.txt") == translated
    scores = {}
    for name, folder in (("bom", tmp_path), ("plain", os.path.dirname(data["test.de"]))):
        code, _, err = command("eval", "-model", q4["pt"], "-src",
                               os.path.join(folder, "test.de"), "-tgt",
                               os.path.join(folder, "test.en"), "-json",
                               tmp_path / f"{name}.json", "-beam_size", 2)
        assert code == 0, err
        scores[name] = {k: v for k, v in json.loads((tmp_path / f"{name}.json").read_text())
                        .items() if k in ("bleu", "chrf", "ppl")}
    assert scores["bom"] == scores["plain"]
    config = yaml.safe_load(open(data["config"]))
    config["data"]["train"]["path_src"] = str(tmp_path / "test.de")
    (tmp_path / "bom.yaml").write_text(yaml.safe_dump(config))
    refused("train", "-config", tmp_path / "bom.yaml", "-save_model", tmp_path / "m" / "m",
            message="starts with a byte-order mark (U+FEFF)")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("edit,message", [
    (lambda weights, name: weights.pop(name), "is missing"),
    (lambda weights, name: weights.update({name: weights[name][:-1]}), "has shape"),
    (lambda weights, name: weights.update({"extra.weight": weights[name]}),
     "it has weight extra.weight, which the model has not"),
], ids=["missing", "shape", "extra"])
def test_10_a_hand_edited_checkpoint_is_named_not_opennmts_missing_key(edit, message, teacher,
                                                                       data, tmp_path):
    """OpenNMT-py's loader said "Missing key in checkpoint", or failed an assertion on
    a shape with a traceback."""
    import torch

    checkpoint = load_checkpoint(teacher)
    edit(checkpoint["model"], next(iter(checkpoint["model"])))
    torch.save(checkpoint, tmp_path / "edited.pt")
    refused("translate", "-model", tmp_path / "edited.pt", "-src", data["test.de"],
            "-output", tmp_path / "out.txt",
            message="the checkpoint's weights do not fit the model its own options describe")
    line = refused("eval", "-model", tmp_path / "edited.pt", "-src", data["test.de"],
                   "-tgt", data["test.en"], message="the file was edited or damaged")
    assert message in line and not (tmp_path / "out.txt").exists()


def test_11_a_checkpoints_relative_subword_model_is_found_beside_it_or_given(
        teacher, data, tmp_path):
    """onmt_train stores src_subword_model as given (spm.model, relative to where it
    ran): evaluating that checkpoint from another folder ended in a sentencepiece
    traceback, and no option pointed at the model."""
    import torch

    checkpoint = load_checkpoint(teacher)
    for name in ("src_subword_model", "tgt_subword_model"):
        setattr(checkpoint["opt"], name, "spm.model")
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    torch.save(checkpoint, tmp_path / "run" / "model.pt")
    args = ["-model", tmp_path / "run" / "model.pt", "-src", data["test.de"], "-tgt",
            data["test.en"], "-beam_size", 2]
    line = refused_in(tmp_path / "elsewhere", "eval", *args)
    assert "SentencePiece model not found: its src_subword_model spm.model" in line
    assert "-src_subword_model and -tgt_subword_model" in line
    given = run_cli("eval", *args, "-src_subword_model", data["spm"], "-tgt_subword_model",
                    data["spm"], cwd=tmp_path / "elsewhere")
    shutil.copyfile(data["spm"], tmp_path / "run" / "spm.model")
    beside = run_cli("eval", *args, cwd=tmp_path / "elsewhere")
    original = run_cli("eval", *args[:1], teacher, *args[2:])
    scores = [run.stdout.split("params")[0] for run in (given, beside, original)]
    assert scores[0] == scores[1] == scores[2] and "ppl" in scores[0]
    run_cli("translate", "-model", tmp_path / "run" / "model.pt", "-src", data["test.de"],
            "-output", tmp_path / "out.txt", cwd=tmp_path / "elsewhere")
    assert len(lines_of(tmp_path / "out.txt")) == len(lines_of(data["test.de"]))


def refused_in(folder, module, *args):
    """One 'onmt_qd_MODULE: error:' line and exit 2, run from ``folder``."""
    result = run_cli(module, *args, check=False, cwd=folder)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"onmt_qd_{module}: error: ")
    return lines[0]
