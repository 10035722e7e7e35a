"""Data-parallel training on 2 CPU processes (torch.distributed's gloo backend, issue 23):
the step of 2 processes with batch b is the step of one with batch 2b; quantized
distillation from the teacher cache keeps every process's weights identical; one
process writes each checkpoint; a resumed run continues the schedule; a killed process
ends the run with one line. Each process uses one thread (OMP_NUM_THREADS=1)."""
import argparse
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml

from onmt_qd.compat import load_checkpoint
from onmt_qd.distill.teacher import loader_stride, process_stride
from onmt_qd.processes import free_port
from onmt_qd.train import distributed
from test_bad_input import command, refused

SGD = ["-optim", "sgd", "-learning_rate", "1.0", "-dropout", "0", "-seed", "1"]


@pytest.fixture(autouse=True)
def one_thread_per_process(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def ranks(n):
    return ["-world_size", n, "-gpu_backend", "gloo", "-master_port", free_port()]


def trained(*args):
    code, _, err = command("train", *args)
    assert code == 0, err
    return err


def weights(path):
    checkpoint = load_checkpoint(path)
    return {**{f"model.{k}": v for k, v in checkpoint["model"].items()},
            **{f"generator.{k}": v for k, v in checkpoint["generator"].items()}}


@pytest.fixture(scope="module")
def four_lines(data, tmp_path_factory):
    """The fixture's data config on its first 4 training pairs: every step of one process
    with batch 4 sees the 4 pairs, and of 2 processes with batch 2 lines 0-1 and 2-3
    (OpenNMT-py's reader gives each process blocks of 2 lines)."""
    root = tmp_path_factory.mktemp("four")
    config = yaml.safe_load(open(data["config"]))
    for side in ("src", "tgt"):
        path = config["data"]["train"][f"path_{side}"]
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()[:4]
        (root / f"train.{side}").write_text("".join(lines), encoding="utf-8")
        config["data"]["train"][f"path_{side}"] = str(root / f"train.{side}")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_two_processes_with_batch_b_step_as_one_with_batch_2b(four_lines, tmp_path):
    common = ["-config", four_lines, "-train_steps", 3, "-valid_steps", 100, *SGD]
    trained(*common, "-save_model", tmp_path / "one" / "m", "-batch_size", 4,
            "-bucket_size", 4)
    trained(*common, "-save_model", tmp_path / "two" / "m", "-batch_size", 2,
            "-bucket_size", 2, *ranks(2))
    one, two = weights(tmp_path / "one" / "m_step_3.pt"), weights(tmp_path / "two" / "m_step_3.pt")
    moved = max((one[k] - two[k]).abs().max().item() for k in one)
    # Same sentences, same start, same normalization (sentences summed over processes),
    # gradients summed: only the order of float32 sums differs (two batches of 2 padded
    # to their own lengths against one of 4, then gloo's sum of two gradients), about
    # 1e-7 relative per step; 1e-5 leaves room for 3 steps of SGD at rate 1. Halving
    # the summed gradient (OpenNMT-py 3.5.1's GPU rescaling) moves some weight by 0.9.
    assert moved < 1e-5, moved


@pytest.fixture(scope="module")
def cache(data, teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("dcache") / "top8"
    code, _, err = command("teacher_cache", "-config", data["config"], "-teacher_model",
                           teacher, "-topk", 8, "-output", path)
    assert code == 0, err
    return str(path)


QUANTIZED = ["-distill_weight", 0.5, "-quant_bits", 4, "-quant_rounding", "stochastic",
             "-valid_steps", 2, "-save_checkpoint_steps", 2, "-lr_halving", "plateau",
             "-start_decay_at_epoch", 1, *SGD]


@pytest.fixture(scope="module")
def quantized(data, cache, tmp_path_factory):
    """4 steps of 4-bit stochastic-rounding distillation from the cache on 2 processes:
    (the options, -save_model, rank 0's log)."""
    folder, log = tmp_path_factory.mktemp("quantized"), tmp_path_factory.mktemp("log") / "log"
    options = ["-config", data["config"], "-teacher_cache", cache, *QUANTIZED]
    trained(*options, "-save_model", folder / "m", "-train_steps", 4, "-log_file", log,
            *ranks(2))
    return options, folder / "m", log.read_text()


def test_quantized_distillation_from_the_cache_keeps_every_process_identical(quantized):
    """At every save each process digests the checkpoint it would write (shadow
    weights, Q(w), optimizer state) and the rounding's random state, rank 0 gathers the
    digests and writes only if all agree; then a resumed 2-process run continues the
    plateau schedule."""
    options, save, log = quantized
    agreed = re.findall(r"Step (\d+): the data-parallel processes hold the same weights", log)
    assert agreed == ["2", "4"]
    # one file per save, written by rank 0 alone (no copies, no temporaries)
    assert sorted(p.name for p in save.parent.iterdir()) == \
        ["m_best.pt", "m_step_2.pt", "m_step_4.pt"]
    trained(*options, "-save_model", save, "-train_steps", 6,
            "-train_from", f"{save}_step_4.pt", *ranks(2))
    schedule = load_checkpoint(f"{save}_step_6.pt")["optim"]["lr_schedule"]
    # validations at steps 2, 4 (first run) and 6: halved at each, from the first epoch
    assert (schedule["epoch"], schedule["scale"]) == (3, 0.125)
    assert load_checkpoint(f"{save}_step_6.pt")["optim"]["training_step"] == 7


def two_machines(folder, args):
    """Two "machines": onmt_qd_train with ``args(rank)`` and one rank each (-cpu_ranks),
    meeting at 127.0.0.1; stderr to folder/rankR.err (a file: a pipe nobody reads yet
    could fill and stall its command). Returns the two processes."""
    meet = ["-world_size", 2, "-gpu_backend", "gloo", "-master_ip", "127.0.0.1",
            "-master_port", free_port()]
    started = []
    for rank in (0, 1):
        command_line = [*args(rank), *meet, "-cpu_ranks", rank]
        with open(folder / f"rank{rank}.err", "w") as err:
            started.append(subprocess.Popen(
                [sys.executable, "-m", "onmt_qd.bin.train", *map(str, command_line)],
                stderr=err))
    return started


def test_two_machines_with_a_rank_each_train_as_one_machine_with_both(quantized, tmp_path):
    """Several machines: each runs the command with its -cpu_ranks and rank 0's address.
    Two commands here, one rank each, meet at 127.0.0.1 and take the steps the
    2-process command took, bit for bit; only rank 0's machine writes checkpoints."""
    options, save, _ = quantized
    machines = two_machines(tmp_path, lambda rank: [
        *options, "-save_model", tmp_path / f"machine{rank}" / "m", "-train_steps", 4])
    try:
        for rank, machine in enumerate(machines):
            assert machine.wait(timeout=300) == 0, (tmp_path / f"rank{rank}.err").read_text()
    finally:
        for machine in machines:
            machine.kill()
    assert not (tmp_path / "machine1").exists() or not os.listdir(tmp_path / "machine1")
    written = sorted(p.name for p in (tmp_path / "machine0").iterdir())
    assert written == ["m_best.pt", "m_step_2.pt", "m_step_4.pt"]
    one, two = load_checkpoint(f"{save}_step_4.pt"), load_checkpoint(tmp_path / "machine0" /
                                                                      "m_step_4.pt")
    for key in ("model", "generator", "qd_shadow"):
        assert one[key].keys() == two[key].keys()
        for name in one[key]:
            assert torch.equal(one[key][name], two[key][name]), (key, name)


def test_a_machine_that_dies_ends_the_others_with_one_line(four_lines, tmp_path):
    """Two "machines" (commands with a rank each): the one running rank 1 is killed
    outright; the other ends in one line naming its rank and its error (gloo's: the
    connection to the peer closed), and leaves only whole checkpoints."""
    save = tmp_path / "models" / "m"
    machines = two_machines(tmp_path, lambda rank: [
        "-config", four_lines, "-save_model", save, "-train_steps", 100000,
        "-save_checkpoint_steps", 2, "-valid_steps", 100000, "-batch_size", 2, *SGD])
    try:
        deadline = time.time() + 120
        while not os.path.exists(f"{save}_step_2.pt"):
            assert time.time() < deadline and machines[0].poll() is None, "no checkpoint"
            time.sleep(0.2)
        machines[1].kill()  # its rank dies with it (PR_SET_PDEATHSIG)
        code = machines[0].wait(timeout=120)
    finally:
        for machine in machines:
            machine.kill()
            machine.wait()
    err = (tmp_path / "rank0.err").read_text()
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("onmt_qd_train: error: training process of rank 0 failed: "), err
    assert "all 1 processes stopped, and the checkpoints written so far are whole" in last
    left = sorted(p.name for p in save.parent.iterdir())
    assert left and all(re.fullmatch(r"m_step_\d+\.pt", name) for name in left), left
    for name in left:
        load_checkpoint(str(save.parent / name))


def test_a_killed_process_ends_the_run_with_one_line_naming_its_rank(four_lines, tmp_path):
    save = tmp_path / "m"
    log = tmp_path / "train.log"
    args = ["-config", four_lines, "-save_model", save, "-train_steps", 100000,
            "-save_checkpoint_steps", 2, "-valid_steps", 100000, "-batch_size", 2,
            "-log_file", log, *SGD, *ranks(2)]
    run = subprocess.Popen([sys.executable, "-m", "onmt_qd.bin.train", *map(str, args)],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.exists(f"{save}_step_2.pt") and run.poll() is None:
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    pid = int(re.search(r"Rank 1: process (\d+)", log.read_text()).group(1))
    os.kill(pid, signal.SIGKILL)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(
        "onmt_qd_train: error: training process of rank 1 was killed by SIGKILL; all 2 "
        "processes stopped"), err
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "train.log")
    assert left and all(re.fullmatch(r"m_step_\d+\.pt", name) for name in left), left
    for name in left:
        load_checkpoint(str(tmp_path / name))  # complete, loadable


def test_an_error_in_the_processes_is_one_line_naming_a_rank(four_lines, cache, tmp_path):
    """Each process refuses the cache (made from the 600-pair corpus, not these 4 pairs):
    the error travels through OpenNMT-py's error queue and ends the run in one line."""
    code, _, err = command("train", "-config", four_lines, "-teacher_cache", cache,
                           "-save_model", tmp_path / "m", "-train_steps", 2, *ranks(2))
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert re.match(r"onmt_qd_train: error: training process of rank [01] failed: "
                    r"ValueError: teacher cache .* was made from other data", last), err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_a_cache_built_by_two_processes_is_the_cache_built_by_one(data, teacher, cache, tmp_path):
    """Each process runs the teacher on every other batch of the one-process build's
    batches (the same padding, hence the same values); the parent writes the rows in
    the one-process order: every file byte for byte."""
    two = tmp_path / "top8"
    code, _, err = command("teacher_cache", "-config", data["config"], "-teacher_model",
                           teacher, "-topk", 8, "-output", two, *ranks(2))
    assert code == 0, err
    one = sorted(os.listdir(cache))
    assert sorted(os.listdir(two)) == one and "header.json" in one
    for name in one:
        assert (two / name).read_bytes() == open(os.path.join(cache, name), "rb").read(), name
    assert command("teacher_cache", "-verify", two)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["top8"]  # no parts, no temporaries left


def test_a_parallel_cache_build_on_cpu_processes_without_gloo_is_refused(data, teacher,
                                                                         tmp_path):
    refused("teacher_cache", "-config", data["config"], "-teacher_model", teacher,
            "-output", tmp_path / "c", "-world_size", 2,
            message="-world_size 2 without -gpu_ranks builds the cache on CPU processes, "
            "which need -gpu_backend gloo (not nccl)")


def test_on_several_gpu_machines_each_process_reads_its_own_lines(monkeypatch):
    """The second of two 2-GPU machines (-gpu_ranks 2 3 of -world_size 4): its processes
    take lines 2 and 3 of every 4 (OpenNMT-py's own stride, 2 by this machine's GPUs,
    would give them the lines the first machine reads); the cache reader undoes the
    same stride."""
    opt = argparse.Namespace(parallel_mode="data_parallel", world_size=4, gpu_ranks=[2, 3],
                             num_workers=0)
    assert process_stride(opt) == loader_stride(opt) == 4
    for rank in (2, 3):  # its processes' global ranks, not their devices 0 and 1
        monkeypatch.setattr(distributed.dist, "get_rank", lambda: rank)
        assert distributed.data_shard(opt) == (4, rank)


def test_a_signal_while_the_error_queue_is_locked_does_not_hang(tmp_path):
    """The launch's SIGUSR1 (a process failed) arriving while the main thread holds the
    error queue's write lock: the handler once stopped the run there and waited on that
    lock for ever. In a child process, so that a hang is a timeout, not a stuck suite."""
    script = tmp_path / "locked_queue.py"
    script.write_text(textwrap.dedent("""
        import os, signal, torch
        from onmt_qd.processes import RankErrorHandler
        queue = torch.multiprocessing.get_context("spawn").SimpleQueue()
        handler = RankErrorHandler(queue, "test job", "nothing was written")
        handler.failure = (1, "failed: ValueError: no")  # as the listener records it
        with queue._wlock:  # the main thread inside a put
            os.kill(os.getpid(), signal.SIGUSR1)
        try:
            handler.join()
        except ValueError as error:
            print(error)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == ("test job process of rank 1 failed: ValueError: no; all 0 "
                                   "processes stopped, and nothing was written"), done.stderr


def test_a_cache_build_split_over_machines_is_refused(data, teacher, tmp_path):
    refused("teacher_cache", "-config", data["config"], "-teacher_model", teacher,
            "-output", tmp_path / "c", *ranks(2), "-cpu_ranks", 1,
            message="-cpu_ranks 1: the cache is built on one machine, which runs every "
            "rank; drop -cpu_ranks")


def test_sigterm_to_the_parent_ends_every_process(data, teacher, tmp_path):
    """A batch scheduler stops a job with SIGTERM to the command: its processes end with
    it (forwarded), in one line, and nothing is left (no cache, no temporaries)."""
    log = tmp_path / "build.log"
    args = ["-config", data["config"], "-teacher_model", teacher, "-output", tmp_path / "c",
            "-log_file", log, *ranks(2)]
    run = subprocess.Popen([sys.executable, "-m", "onmt_qd.bin.teacher_cache", *map(str, args)],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while "Rank 1: process" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline and run.poll() is None, "no processes within 120 s"
        time.sleep(0.2)
    pids = [int(pid) for pid in re.findall(r"Rank \d: process (\d+)", log.read_text())]
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and err.strip().splitlines()[-1] == (
        f"onmt_qd_teacher_cache: error: teacher cache build stopped by SIGTERM; all 2 "
        f"processes stopped, and {tmp_path / 'c'} was not written"), err
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.log"]


@pytest.mark.parametrize("size", [0, -1])
@pytest.mark.parametrize("module", ["train", "teacher_cache"])
def test_a_world_size_below_one_is_refused_in_one_line(module, size, data, teacher, tmp_path):
    """-world_size -1 ended in an AssertionError traceback, 0 in 'min() arg is an empty
    sequence'."""
    output = ["-save_model", tmp_path / "m"] if module == "train" else \
        ["-teacher_model", teacher, "-output", tmp_path / "c"]
    refused(module, "-config", data["config"], *output, "-world_size", size,
            message=f"-world_size {size}: give the number of processes (1 or more)")
    assert os.listdir(tmp_path) == []
