"""onmt_qd_train end to end on a real Multi30K subset: distillation, quantized
distillation, options, kill and resume."""
import glob
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import run_cli
from onmt_qd.compat import load_checkpoint


def stock_translate(model, src, output, spm):
    """OpenNMT-py's own translate entry point, with the SentencePiece transform;
    prepare_onmt only allow-lists argparse.Namespace for torch's weights-only loading
    (and defers spaCy, quiets warnings)."""
    args = ["onmt_translate", "-model", model, "-src", src, "-output", output, "-beam_size",
            "2", "-transforms", "sentencepiece", "-src_subword_model", spm,
            "-tgt_subword_model", spm]
    code = ("import sys; from onmt_qd.compat import prepare_onmt; prepare_onmt()\n"
            f"from onmt.bin.translate import main; sys.argv = {args!r}; main()")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    with open(output) as handle:
        return handle.read().splitlines()


def valid_ppls(save_prefix):
    ckpts = sorted(glob.glob(f"{save_prefix}_step_*.pt"), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    return [load_checkpoint(p)["qd_valid"]["ppl"] for p in ckpts]


def test_distillation_learns_and_translates_with_stock_onmt(data, teacher, tmp_path):
    save = tmp_path / "student"
    run_cli("train", "-config", data["config"], "-save_model", save, "-epochs", 3,
            "-teacher_model", teacher, "-distill_weight", 0.7)
    ppls = valid_ppls(save)
    assert len(ppls) == 3 and ppls[-1] < ppls[0]
    lines = stock_translate(f"{save}_best.pt", data["test.de"], str(tmp_path / "out.txt"),
                            data["spm"])
    assert len(lines) == 20


def test_without_teacher_trains_exactly_like_onmt_train(data, tmp_path):
    steps = ["-train_steps", "6", "-save_checkpoint_steps", "6", "-valid_steps", "100"]
    subprocess.run([sys.executable, "-m", "onmt.bin.train", "-config", data["config"],
                    "-save_model", str(tmp_path / "stock"), *steps], check=True, capture_output=True)
    run_cli("train", "-config", data["config"], "-save_model", tmp_path / "ours", *steps)
    stock = load_checkpoint(str(tmp_path / "stock_step_6.pt"))
    ours = load_checkpoint(str(tmp_path / "ours_step_6.pt"))
    for part in ("model", "generator"):
        assert stock[part].keys() == ours[part].keys()
        for key in stock[part]:
            assert torch.equal(stock[part][key], ours[part][key]), key


def test_the_teacher_changes_training_through_the_loss_alone(data, teacher, tmp_path):
    """Weight 0 trains exactly like no teacher; weight 0.7 gives another student (a
    loss that ignored the teacher once passed every other test)."""
    steps = ["-train_steps", "6", "-save_checkpoint_steps", "6", "-valid_steps", "100"]
    students = {}
    for name, extra in {"plain": [], "weight0": ["-teacher_model", teacher, "-distill_weight", 0],
                        "distilled": ["-teacher_model", teacher, "-distill_weight", 0.7]}.items():
        run_cli("train", "-config", data["config"], "-save_model", tmp_path / name, *steps, *extra)
        students[name] = load_checkpoint(str(tmp_path / f"{name}_step_6.pt"))["model"]
    for key in students["plain"]:
        assert torch.equal(students["plain"][key], students["weight0"][key]), key
    assert any(not torch.equal(students["plain"][k], students["distilled"][k])
               for k in students["plain"])


def write_config(data, tmp_path, **changes):
    with open(data["config"]) as handle:
        config = yaml.safe_load(handle)
    config.update(changes)
    path = tmp_path / "config.yaml"
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path


@pytest.mark.parametrize("args, message", [
    (["-distill_weight", "1.5"], "-distill_weight must be in [0, 1]"),
    (["-distill_temperature", "0"], "-distill_temperature must be > 0"),
    (["-teacher_model", "/no/such/teacher.pt"], "teacher checkpoint /no/such/teacher.pt does not exist"),
    (["-quant_bits", "9"], "bits must be an integer from 1 to 8"),
    (["-quant_bits", "4", "-quant_exclude", "nosuchlayer"], "matches no parameter"),
    (["-hiden_size", "8"], "unknown option '-hiden_size' (did you mean '-hidden_size'?)"),
    (["-autocast", "bf16", "-model_dtype", "fp16"], "two mixed precisions: choose one"),
    (["-epochs", "2", "-single_pass"], "-epochs and -single_pass both say how long to train"),
    (["-quant_bits", "4", "-save_format", "safetensors"],
     "-save_format safetensors is not supported: OpenNMT-py's safetensors saver drops"),
])
def test_bad_options_fail_in_one_line_and_write_nothing(data, tmp_path, args, message):
    result = run_cli("train", "-config", data["config"], "-save_model", tmp_path / "m" / "x",
                     "-train_steps", 2, *args, check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("onmt_qd_train: error: ") and message in last, result.stderr
    assert not (tmp_path / "m").exists()


def test_unknown_yaml_key_is_rejected(data, tmp_path):
    config = write_config(data, tmp_path, hiden_size=16)
    result = run_cli("train", "-config", config, "-save_model", tmp_path / "x", check=False)
    assert result.returncode == 2
    assert "unknown key 'hiden_size'" in result.stderr and "did you mean 'hidden_size'" in result.stderr


def test_vocabulary_mismatch_is_named_before_training(data, teacher, tmp_path):
    checkpoint = load_checkpoint(teacher)
    checkpoint["vocab"]["tgt"] = list(checkpoint["vocab"]["tgt"])
    checkpoint["vocab"]["tgt"][7], checkpoint["vocab"]["tgt"][8] = \
        checkpoint["vocab"]["tgt"][8], checkpoint["vocab"]["tgt"][7]
    other = tmp_path / "other_teacher.pt"
    torch.save(checkpoint, other)
    result = run_cli("train", "-config", data["config"], "-save_model", tmp_path / "s" / "x",
                     "-train_steps", 2, "-teacher_model", other, check=False)
    assert result.returncode == 2
    assert "tgt vocabularies differ at index 7" in result.stderr
    assert not glob.glob(str(tmp_path / "s" / "*.pt"))


def test_killed_quantized_distillation_resumes_with_its_schedule(data, teacher, tmp_path):
    save = tmp_path / "qd"
    args = ["-config", data["config"], "-save_model", save, "-epochs", 4, "-lr_halving",
            "plateau", "-teacher_model", teacher, "-quant_bits", 2]
    proc = subprocess.Popen([sys.executable, "-m", "onmt_qd.bin.train", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not glob.glob(f"{save}_step_*.pt"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = glob.glob(f"{save}_step_*.pt")
    assert saved, "no checkpoint before the kill"
    # a kill while a checkpoint is written leaves its temporary name, never half a .pt;
    # the resumed run removes the temporary (a first run of this test was killed while
    # qd_best.pt was being written)
    for path in glob.glob(f"{save}*.pt"):
        load_checkpoint(path)
    first = sorted(saved, key=lambda p: int(p.rsplit("_", 1)[1][:-3]))[0]
    state = load_checkpoint(first)["optim"]["lr_schedule"]
    assert state["epoch"] >= 1
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # what a kill mid-write leaves
    dead.wait()
    (tmp_path / f"qd_best.pt.onmt_qd-{dead.pid}.tmp").write_bytes(b"half a checkpoint")
    run_cli("train", *args, "-train_from", first)
    assert not glob.glob(f"{save}*.tmp*"), "the killed run's temporary was left behind"
    final = sorted(glob.glob(f"{save}_step_*.pt"), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))[-1]
    final_state = load_checkpoint(final)["optim"]["lr_schedule"]
    assert final_state["epoch"] == 4  # the resumed run continued the count, not restarted it
    assert final_state["best_ppl"] <= state["best_ppl"]


def test_validation_reads_without_loader_workers(data):
    """OpenNMT-py starts loader workers anew for every validation pass (11-15 s each on
    a GPU machine); the small validation corpus is read in the training process."""
    from onmt_qd.opts import parse, train_parser
    from onmt_qd.train.trainer import valid_loading

    opt = parse(train_parser(), ["-config", data["config"], "-num_workers", "2"])
    assert valid_loading(opt).num_workers == 0 and opt.num_workers == 2


def test_single_pass_trains_one_epoch_and_stops(data, tmp_path):
    save = tmp_path / "one"
    run_cli("train", "-config", data["config"], "-save_model", save, "-single_pass",
            "-hidden_size", 16, "-word_vec_size", 16)
    saved = sorted(p.name for p in tmp_path.iterdir() if "_step_" in p.name)
    assert saved == ["one_step_19.pt"]  # 600 sentences / 32 per batch: one epoch
