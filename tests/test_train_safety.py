"""onmt_qd_train loses nothing and changes no model silently (issue 24), one test per
class: one owner per -save_model prefix, resumes that keep or refuse, option ranges, and
a checkpoint write that fails. Tiny models (hidden 16, 2 steps); refusals run in this
process (test_bad_input's ``refused``), training as a subprocess except where a write is
made to fail in this process."""
import errno
import os
import subprocess

import pytest
import torch
import yaml

from conftest import run_cli
from onmt_qd.compat import load_checkpoint
from onmt_qd.quant_checkpoint import QUANT_KEY, RUN_KEY, levels_per_bucket, quantization_of
from test_bad_input import command, digest, refused


def args(data, save, *extra, steps=2):
    return ["-config", data["config"], "-hidden_size", 16, "-word_vec_size", 16,
            "-save_model", save, "-train_steps", steps, "-valid_steps", 2,
            "-save_checkpoint_steps", 2, *extra]


def test_a_prefix_has_one_owner(data, tmp_path):
    """A new run never replaces another run's checkpoints, and another run's _best.pt is
    never a resumed run's best, unless -overwrite_model says so."""
    mine = tmp_path / "m"
    run_cli("train", *args(data, mine))
    before = {path: digest(path) for path in tmp_path.iterdir()}
    line = refused("train", *args(data, mine, "-word_vec_size", 24),
                   message=f"-save_model {mine}: {mine}_step_2.pt (and 1 more) was not "
                   "written by this run")
    assert "-overwrite_model" in line
    # another run's _best.pt where the resumed run's was
    resumed = load_checkpoint(f"{mine}_step_2.pt")
    torch.save({**resumed, RUN_KEY: "another run"}, f"{mine}_best.pt")
    foreign = digest(f"{mine}_best.pt")
    refused("train", *args(data, mine, "-train_from", f"{mine}_step_2.pt", steps=4),
            message=f"{mine}_best.pt was not written by this run nor by the run -train_from "
            "continues; choose another -save_model, move it away, or give -overwrite_model")
    assert {path: digest(path) for path in tmp_path.iterdir()} == {
        **before, mine.with_name("m_best.pt"): foreign}
    # -overwrite_model: the foreign _best.pt is removed, the run's own best replaces it
    run_cli("train", *args(data, mine, "-train_from", f"{mine}_step_2.pt", "-overwrite_model",
                           steps=4))
    assert load_checkpoint(f"{mine}_best.pt")[RUN_KEY] == resumed[RUN_KEY]
    # resumed into another prefix with -quant_bits: checkpoints record the bits trained
    run_cli("train", *args(data, tmp_path / "q" / "m", "-train_from", f"{mine}_step_2.pt",
                           "-quant_bits", 2, steps=4))
    quantized = load_checkpoint(tmp_path / "q" / "m_step_4.pt")
    assert quantized["opt"].quant_bits == 2 and quantized[QUANT_KEY]["policy"]["bits"] == 2
    # a new run with -overwrite_model owns the prefix: the old run's checkpoints are gone
    run_cli("train", *args(data, mine, "-overwrite_model"))
    assert sorted(p.name for p in tmp_path.glob("m*")) == ["m_best.pt", "m_step_2.pt"]
    assert load_checkpoint(f"{mine}_step_2.pt")[RUN_KEY] != resumed[RUN_KEY]


def test_a_resume_keeps_or_refuses_quantization_and_vocabulary(data, tmp_path):
    save = tmp_path / "q"
    run_cli("train", *args(data, save, "-quant_bits", 4))
    first = f"{save}_step_2.pt"
    refused("train", *args(data, save, "-train_from", first, "-quant_bits", 2, steps=4),
            message=f"-train_from {first} has -quant_bits 4, and this run sets -quant_bits 2: "
            "a resumed model keeps its quantization")
    vocab = tmp_path / "vocab.txt"
    lines = open(data["root"] / "vocab.src", encoding="utf-8").read().splitlines(True)
    vocab.write_text("".join(lines[:20] + lines[21:]), encoding="utf-8")
    config = yaml.safe_load(open(data["config"]))
    config.update(src_vocab=str(vocab), tgt_vocab=str(vocab))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    refused("train", *args(data, save, "-train_from", first, steps=4), "-config", other,
            message=f"-train_from {first} and the config's src vocabularies differ at index")
    assert sorted(p.name for p in tmp_path.glob("q*")) == ["q_best.pt", "q_step_2.pt"]
    # without -quant_bits: the checkpoint's 4 bits go on, and checkpoints say so
    result = run_cli("train", *args(data, save, "-train_from", first, steps=4))
    assert "keeps its quantization, 4 bits, bucket 256, uniform" in result.stderr
    resumed = load_checkpoint(f"{save}_step_4.pt")
    policy, tensors = quantization_of(resumed)
    assert policy.bits == 4 and resumed["opt"].quant_bits == 4
    assert tensors and all(levels_per_bucket(qt) <= 16 for qt in tensors.values())


@pytest.mark.parametrize("extra, message", [
    (["-quant_bits", 4, "-quant_bucket_size", 99999999999],
     "bucket size must be an integer from 1 to 1048576, got 99999999999"),
    (["-quant_bucket_size", 64], "-quant_bucket_size applies to quantized training, and "
     "-quant_bits is not set: add -quant_bits (1 to 8), or drop -quant_bucket_size"),
    (["-distill_temperature", "1e30"], "-distill_temperature must be > 0 and at most 100, "
     "got 1e+30"),
    (["-world_size", 2], "CPU processes, which need -gpu_backend gloo (not nccl)"),
    (["-world_size", 2, "-gpu_backend", "gloo", "-parallel_mode", "tensor_parallel"],
     "-parallel_mode tensor_parallel on CPU processes is not supported"),
    (["-world_size", 2, "-gpu_backend", "gloo", "-cpu_ranks", 1, 2],
     "-cpu_ranks 1 2: give distinct ranks from 0 to 1 (-world_size 2)"),
    (["-cpu_ranks", 0], "-cpu_ranks names CPU processes of a -world_size above 1"),
    (["-lr_halving", "plateau", "-decay_method", "noam"], "-lr_halving plateau replaces "
     "OpenNMT-py's step-based learning-rate schedule, which -decay_method noam sets: drop "
     "-decay_method, or set -lr_halving none to keep OpenNMT-py's schedule"),
])
def test_impossible_values_are_refused_with_the_range_that_works(data, tmp_path, extra,
                                                                message):
    refused("train", *args(data, tmp_path / "m", *extra), message=message)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB file system: smaller than one checkpoint of the tiny model."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_partial_file(data, small_disk):
    result = run_cli("train", *args(data, small_disk / "m"), check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert last == (f"onmt_qd_train: error: cannot write checkpoint {small_disk}/m_step_2.pt: "
                    "No space left on device; no checkpoint was written. Make room, or "
                    "choose another -save_model"), result.stderr
    assert os.listdir(small_disk) == []


def test_a_read_only_best_checkpoint_is_one_line(data, tmp_path, monkeypatch):
    """The same where no tmpfs can be mounted, at the copy to _best.pt: a simulated
    read-only file system."""
    from onmt_qd.train import saver

    def read_only(source, destination):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), destination)

    monkeypatch.setattr(saver.shutil, "copyfile", read_only)
    code, _, err = command("train", *args(data, tmp_path / "m"))
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"onmt_qd_train: error: cannot write checkpoint {tmp_path}/m_best.pt: Read-only file "
        f"system; the last checkpoint written is {tmp_path}/m_step_2.pt. Make room, or "
        "choose another -save_model"), err
    assert sorted(os.listdir(tmp_path)) == ["m_step_2.pt"]


def test_checkpoints_written_before_run_ids_keep_their_best_of_the_same_shape():
    """A run resumed from a checkpoint older than run ids keeps the _best.pt beside it
    when both have the model's shape; another shape's is never its best."""
    from argparse import Namespace

    from onmt_qd.train.checks import same_run

    shape = dict(layers=1, hidden_size=16, word_vec_size=16, encoder_type="rnn")
    older = {"opt": Namespace(**shape)}
    assert same_run({"opt": Namespace(**shape)}, older)
    assert not same_run({"opt": Namespace(**{**shape, "hidden_size": 32})}, older)
    assert not same_run({"opt": Namespace(**shape), RUN_KEY: "a"}, older)
    assert same_run({"opt": Namespace(**shape), RUN_KEY: "a"}, {**older, RUN_KEY: "a"})


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


def running(pid):
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_while_loading_data_ends_the_data_loader_workers(data, tmp_path):
    """With num_workers 2, SIGTERM to onmt_qd_train left both workers (and they read
    the corpus on, growing to 3 GB) running with parent 1."""
    import signal
    import sys
    import time

    config = yaml.safe_load(open(data["config"]))
    config["num_workers"] = 2
    (tmp_path / "workers.yaml").write_text(yaml.safe_dump(config))
    train = subprocess.Popen([sys.executable, "-m", "onmt_qd.bin.train", "-config",
                              tmp_path / "workers.yaml", "-save_model", tmp_path / "m",
                              "-train_steps", "100000"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(workers := children_of(train.pid)) < 2:
            assert time.time() < deadline and train.poll() is None, "no data-loader workers"
            time.sleep(0.1)
        train.send_signal(signal.SIGTERM)
        assert train.wait(30) == -signal.SIGTERM
        deadline = time.time() + 20
        while any(map(running, workers)) and time.time() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if running(pid)]
    finally:
        train.kill()
        for pid in children_of(train.pid):
            os.kill(pid, signal.SIGKILL)
