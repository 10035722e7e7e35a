"""A recipe owns its work folder (issue 24): one run at a time, its commands (and what
they start) die with it, a stage it was running is redone, and a profile's impossible
value is refused before any stage runs. The stages here are cheap stand-ins: a
command that starts a child and sleeps, as a trainer with data loaders would."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from onmt_qd.recipe import RecipeError, Runner, Stage
from test_bad_input import refused
from test_recipe_configs import edited_recipe

# A stage's command: starts a child (a data loader), writes part of its output, says
# who it is (its parent is the supervisor), then works for longer than any test.
COMMAND = """
import os, subprocess, sys, time
loader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write("half a model")
with open(sys.argv[2] + ".tmp", "w") as handle:
    handle.write(f"{os.getppid()} {os.getpid()} {loader.pid}")
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(300)
"""

# onmt_qd_recipe's run, with the one stage above
RECIPE = """
import sys
from onmt_qd.recipe.runner import Runner, Stage, exit_on_signals
work, output, pids, command = sys.argv[1:]
runner = Runner(work)
runner.stages = [Stage("train", lambda: runner.command(
    "train", [sys.executable, "-c", command, output, pids]), [output])]
with exit_on_signals("onmt_qd_recipe"):
    runner.run()
"""


def alive(pid):
    """Whether ``pid`` runs (a zombie waiting for its parent to read its status has
    ended: where nothing reaps orphans, they stay zombies)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def foreground_sigint():
    """SIGINT as in a terminal's foreground job, whatever this process inherited or a
    library left behind: an ignored or blocked SIGINT stays so in the recipe's process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def background_sigint():
    """SIGINT as a non-interactive shell leaves it to a job started with ``&``: ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_recipe(tmp_path, preexec_fn=foreground_sigint):
    """(the recipe's process, its stage's output, the pids of the supervisor, the
    command and the command's child) once the command runs."""
    work, output, pids = tmp_path / "work", tmp_path / "work" / "model.pt", tmp_path / "pids"
    recipe = subprocess.Popen([sys.executable, "-c", RECIPE, work, output, pids, COMMAND],
                              cwd=REPO, stderr=subprocess.PIPE, text=True,
                              preexec_fn=preexec_fn)
    deadline = time.time() + 120
    while not pids.exists():
        assert recipe.poll() is None, recipe.stderr.read()
        assert time.time() < deadline, "the stage's command did not start"
        time.sleep(0.1)
    return recipe, output, [int(pid) for pid in pids.read_text().split()]


def rerun(work, output):
    """Run the same stage again in this process; whether its output was gone when it
    started."""
    started_clean = []
    runner = Runner(work)
    runner.stages = [Stage("train", lambda: started_clean.append(not output.exists()),
                           [str(output)])]
    runner.run()
    return started_clean, runner


def kill_hard(process):
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def test_a_second_run_on_a_work_folder_is_refused_and_a_killed_run_leaves_no_lock(
        tmp_path, capsys):
    recipe, output, _ = start_recipe(tmp_path)
    try:
        work = tmp_path / "work"
        line = refused("recipe", "multi30k", "-profile", "mini", "-work_dir", work,
                       message=f"work folder {work} is in use by another onmt_qd_recipe "
                       f"(PID {recipe.pid})")
        assert "another -work_dir" in line
        with pytest.raises(RecipeError, match="is in use"):
            rerun(work, output)
    finally:
        kill_hard(recipe)
    started_clean, runner = rerun(work, output)  # the killed run's lock is gone with it
    assert started_clean == [True] and runner.finished_record("train")
    assert "done already" not in capsys.readouterr().out


@pytest.mark.parametrize("signum,preexec_fn", [
    (signal.SIGKILL, foreground_sigint), (signal.SIGINT, foreground_sigint),
    (signal.SIGTERM, foreground_sigint), (signal.SIGINT, background_sigint)],
    ids=["kill -9", "Ctrl-C", "kill", "kill -INT of a job started with &"])
def test_a_killed_recipe_leaves_no_process_and_its_stage_is_redone(tmp_path, signum,
                                                                   preexec_fn, capsys):
    recipe, output, pids = start_recipe(tmp_path, preexec_fn)
    recipe.send_signal(signum)
    assert recipe.wait(30) == -signum
    if signum != signal.SIGKILL:
        assert recipe.stderr.read().strip() == (
            f"onmt_qd_recipe: stopped by {signal.Signals(signum).name}: the stages that were "
            "running were stopped and run again at the next run")
    deadline = time.time() + 20
    while any(map(alive, pids)) and time.time() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:  # not left behind by a failing test
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "supervisor, command, loader: " + str(pids)
    assert output.read_text() == "half a model"  # what the killed stage left
    started_clean, runner = rerun(tmp_path / "work", output)
    assert started_clean == [True] and runner.finished_record("train")
    assert "done already" not in capsys.readouterr().out


def test_a_command_that_ends_takes_what_it_started_with_it(tmp_path):
    """A stage's command that exits leaving a child running (a loader it did not wait
    for) does not leave it writing into the work folder."""
    runner = Runner(tmp_path)
    pids = tmp_path / "pids"
    runner.command("stage", [sys.executable, "-c", COMMAND.replace("time.sleep(300)\n", ""),
                             str(tmp_path / "out"), str(pids)])
    loader = int(pids.read_text().split()[2])
    deadline = time.time() + 10
    while alive(loader) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(loader)


def test_a_stage_stopped_after_its_settings_changed_is_not_done_with_the_old_ones(tmp_path):
    """A stage rerun for new settings and stopped half way has no record of its old
    run: going back to the old settings redoes it (its outputs were removed)."""
    signature, ran = {"train": "epochs=2"}, []

    def train():
        ran.append(signature["train"])
        if signature["train"] == "epochs=3":
            raise RecipeError("stopped")

    runner = Runner(tmp_path)
    runner.stages = [Stage("train", train, (), lambda: signature["train"])]
    runner.run()
    signature["train"] = "epochs=3"
    with pytest.raises(RecipeError, match="stopped"):
        runner.run()
    signature["train"] = "epochs=2"
    runner.run()
    assert ran == ["epochs=2", "epochs=3", "epochs=2"]


@pytest.mark.parametrize("edit,message", [
    (lambda p: p.update(qd_bits=[2, 9]), "qd_bits in profile quick of "),
    (lambda p: p.update(pm_bits=[0]), "pm_bits in profile quick of "),
    (lambda p: p.update(diffquant_bits=[2.5]), "diffquant_bits in profile quick of "),
    (lambda p: p.update(normal_loss_bits=["4"]), "normal_loss_bits in profile quick of "),
    (lambda p: p["student"].update(hiden_size=64),
     "unknown key 'hiden_size' in student options of profile quick"),
    (lambda p: p["student"].update(hidden_size="wide"),
     "student options of profile quick of "),
    (lambda p: p["student"].update(quant_bucket_size=0), "(quantized to 2 bits): bucket size"),
    (lambda p: p["teacher"].update(distill_weight=2), "-distill_weight must be in [0, 1]"),
    (lambda p: p.update(teacher_topk=-1), "teacher_topk in profile quick of "),
    (lambda p: p.update(teacher_topk=100000), "at most the vocabulary size"),
    (lambda p: p.update(quantized_epochs=9), "quantized_epochs in profile quick of "),
], ids=["qd_bits 9", "pm_bits 0", "diffquant_bits 2.5", "normal_loss_bits '4'",
        "student key", "student value", "bucket size", "distill_weight", "topk -1",
        "topk > vocabulary", "quantized_epochs"])
def test_a_profile_is_checked_whole_before_any_stage_runs(tmp_path, monkeypatch, edit,
                                                          message):
    edited_recipe(tmp_path, monkeypatch, lambda r: edit(r["profiles"]["quick"]))
    work = tmp_path / "work"
    refused("recipe", "multi30k", "-profile", "quick", "-work_dir", work, message=message)
    assert not work.exists()


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(capsys):
    """SIGINT while a command still imports or loads printed a KeyboardInterrupt
    traceback; the recipe command imports its modules inside run_command for this."""
    from onmt_qd.bin.common import run_command

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as stopped:
        run_command(interrupted, "onmt_qd_recipe")
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "onmt_qd_recipe: stopped by SIGINT (Ctrl-C)\n"


@pytest.mark.parametrize("preexec_fn", [foreground_sigint, background_sigint],
                         ids=["Ctrl-C", "kill -INT of a job started with &"])
def test_ctrl_c_while_the_command_still_imports_torch_is_one_line(tmp_path, preexec_fn):
    """The console command (onmt_qd_cli, outside the package) catches SIGINT before
    ``import onmt_qd`` starts importing torch; sent once torch's library is being
    loaded, it ends the command in one line, exit 130 (a traceback before; and a
    recipe started with & ignored it)."""
    command = os.path.join(os.path.dirname(sys.executable), "onmt_qd_recipe")
    recipe = subprocess.Popen([command, "multi30k", "-profile", "mini", "-work_dir",
                               tmp_path / "work"], stderr=subprocess.PIPE, text=True,
                              preexec_fn=preexec_fn)
    deadline = time.time() + 60
    while "libtorch" not in open(f"/proc/{recipe.pid}/maps").read():
        assert time.time() < deadline and recipe.poll() is None, recipe.stderr.read()
        time.sleep(0.005)
    recipe.send_signal(signal.SIGINT)
    assert recipe.wait(60) == 130
    assert recipe.stderr.read() == "onmt_qd_recipe: stopped by SIGINT (Ctrl-C)\n"
    assert not (tmp_path / "work").exists()
