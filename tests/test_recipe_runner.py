"""The recipe runner: a finished stage is skipped, and runs again when its signature
changed or when a stage it reads from ran again (a retrained student must not keep
its old evaluation)."""
import threading
import time

import pytest

from onmt_qd.recipe import RecipeError, Runner, Stage


def runner_of(work, stages):
    """A Runner over hand-made stages (no recipe, no training), as a Pipeline holds one."""
    runner = Runner(work)
    runner.stages = stages
    return runner


def test_a_stage_reruns_when_a_stage_it_needs_ran_again(tmp_path, capsys):
    ran, signature = [], {"teacher": "epochs=6"}

    def stage(name, needs=()):
        return Stage(name, lambda: ran.append(name), (), lambda: signature.get(name, ""),
                     needs)

    stages = [stage("teacher"), stage("student"), stage("cache", ["teacher"]),
              stage("distilled", ["cache"]), stage("evaluate", ["student", "distilled"])]
    runner = runner_of(tmp_path, stages)
    runner.run()
    assert ran == ["teacher", "student", "cache", "distilled", "evaluate"]
    ran.clear()
    runner.run()
    assert ran == [] and capsys.readouterr().out.count("done already, skipped") == 5
    signature["teacher"] = "epochs=8"
    runner.run()
    assert ran == ["teacher", "cache", "distilled", "evaluate"]  # not the student


def test_with_jobs_independent_stages_run_side_by_side_and_wait_for_their_needs(tmp_path):
    both_started = threading.Barrier(2, timeout=10)  # passes only if the two overlap
    events = []

    def stage(name, needs=(), action=None):
        def run():
            events.append(f"start {name}")
            if action:
                action()
            events.append(f"end {name}")
        return Stage(name, run, (), "", needs)

    stages = [stage("data"), stage("student", ["data"], both_started.wait),
              stage("teacher", ["data"], both_started.wait),
              stage("report", ["student", "teacher"])]
    runner = runner_of(tmp_path, stages)
    runner.jobs = 2
    runner.run()
    assert events[:2] == ["start data", "end data"] and events[-2:] == ["start report",
                                                                        "end report"]
    assert {e for e in events[2:-2]} == {"start student", "start teacher", "end student",
                                         "end teacher"}


def test_with_jobs_a_failed_stage_lets_running_ones_finish_and_starts_nothing_new(tmp_path):
    started = threading.Event()

    def fail():
        started.wait(10)
        raise RecipeError("stage teacher failed")

    def slow():
        started.set()
        time.sleep(0.3)

    stages = [Stage("teacher", fail), Stage("student", slow),
              Stage("cache", lambda: None, needs=["teacher"]),
              Stage("other", lambda: None)]
    runner = runner_of(tmp_path, stages)
    runner.jobs = 2
    with pytest.raises(RecipeError, match="stage teacher failed"):
        runner.run()
    finished = {p.name for p in (tmp_path / "stages").iterdir()}
    assert finished == {"student.done"}  # finished although teacher failed; no new start


def test_stages_side_by_side_share_the_cores_and_keep_a_users_thread_count(tmp_path,
                                                                          monkeypatch):
    """With jobs > 1 every command gets cores/jobs threads (torch would start one per
    core in each and oversubscribe them); one the user set is kept; with 1 job nothing
    is set."""
    monkeypatch.setattr("onmt_qd.recipe.runner.usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert Runner(tmp_path, jobs=2).command_environment()["OMP_NUM_THREADS"] == "4"
    assert Runner(tmp_path, jobs=16).command_environment()["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in Runner(tmp_path, jobs=1).command_environment()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert Runner(tmp_path, jobs=2).command_environment()["OMP_NUM_THREADS"] == "3"


def test_a_stage_every_other_waits_for_has_every_core(tmp_path, monkeypatch):
    """With jobs 2, the teacher and the student start side by side (half the cores
    each); the cache, which every remaining stage waits for, starts alone and gets them
    all; the two students after it share again; a stage's own side-by-side commands
    (evaluate's models) share too. (The cache needs the student here too: had the
    student still been finishing when the cache started, the cache would rightly not
    have been alone.)"""
    monkeypatch.setattr("onmt_qd.recipe.runner.usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen, runner = {}, None

    def stage(name, needs=()):
        def run():
            seen[name] = runner.command_environment().get("OMP_NUM_THREADS", "all")
            if name == "evaluate":
                runner.side_by_side(lambda m: seen.__setitem__(
                    m, runner.command_environment()["OMP_NUM_THREADS"]), ["m1", "m2"])
            # side by side for sure: a stage that ended before the other started would
            # leave it alone, with every core
            if name in pairs:
                pairs[name].wait()
        return Stage(name, run, (), "", needs)

    first, second = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=10)
    pairs = {"teacher": first, "student": first, "distilled": second, "quantized": second}
    runner = runner_of(tmp_path, [
        stage("teacher"), stage("student"), stage("cache", ["teacher", "student"]),
        stage("distilled", ["cache"]), stage("quantized", ["cache"]),
        stage("evaluate", ["student", "distilled", "quantized"])])
    runner.jobs = 2
    runner.run()
    assert seen == {"teacher": "4", "student": "4", "cache": "all", "distilled": "4",
                    "quantized": "4", "evaluate": "all", "m1": "4", "m2": "4"}
