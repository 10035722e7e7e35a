"""Resumable stages, run in order or side by side.

Every stage runs commands in subprocesses, writes its log under ``logs/`` and leaves
``stages/NAME.done`` only when it finished: a finished stage is skipped, a killed one
starts again from a clean slate. One run at a time holds a work folder (``recipe.lock``),
and the commands die with it (supervisor.py). Nothing here knows what the stages do."""
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from onmt_qd.fileio import atomic_output, remove_stale_temporaries
from onmt_qd.machine import usable_cores

SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supervisor.py")


class RecipeError(ValueError):
    pass


class Stage:
    """``signature`` names what the stage covers and the settings its output depends on
    (the models a compress/evaluate/report stage handles, a digest of a training stage's
    options): a finished stage whose signature changed runs again. A callable
    signature is asked when the stage's turn comes (after the stages it depends on).
    ``needs`` names the stages whose outputs it reads: when one of them ran again, so
    does this one (a retrained student is quantized, compressed and evaluated again);
    what those stages read in turn reaches it through their own re-run. ``progress``,
    when given, says where the running stage is: () -> (line, fraction done) or None."""

    def __init__(self, name, run, outputs=(), signature="", needs=(), progress=None):
        self.name, self.run, self.outputs, self._signature = name, run, outputs, signature
        self.needs, self.progress = tuple(needs), progress

    @property
    def signature(self):
        return self._signature() if callable(self._signature) else self._signature


class Runner:
    """Runs ``stages`` in ``work``, up to ``jobs`` at a time."""

    jobs = 1  # stages at a time
    processes = 1  # CPU processes a stage's command may start (data-parallel ranks)
    progress_seconds = 30  # how often running stages say where they are, at most
    running_alone = threading.local()  # .value: the stage this thread runs started alone

    def __init__(self, work, jobs=1):
        if jobs < 1:
            raise RecipeError(f"-jobs must be at least 1, got {jobs}")
        self.work, self.jobs, self.stages = os.path.abspath(work), jobs, []
        for sub in ("stages", "logs"):
            os.makedirs(self.path(sub), exist_ok=True)

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def command(self, stage, args, log_name=None):
        """Run one command, output to logs/STAGE.log (or LOG_NAME.log); fail with the
        log's tail."""
        log = self.path("logs", f"{log_name or stage}.log")
        with open(log, "w" if log_name else "a") as handle:  # a stage's log is emptied at its start
            handle.write("$ " + " ".join(args) + "\n")
            handle.flush()
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", SUPERVISOR, str(os.getpid()), *args],
                stdout=handle, stderr=subprocess.STDOUT, env=self.command_environment(),
                start_new_session=True)  # its group: the command and all it starts
            try:
                returncode = process.wait()
            finally:  # what the command left running, or all of it if this thread stops
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if returncode != 0:
            with open(log) as handle:
                tail = handle.read().strip().splitlines()[-1:]
            raise RecipeError(f"stage {stage} failed ({tail[0] if tail else 'no output'}); "
                              f"see {log}")

    def command_environment(self):
        """Commands running side by side, and the processes each starts, share the CPU
        cores instead of each starting a thread per core (oversubscribed, torch's threads
        spin and every job crawls); a thread count the user set is kept. A stage that
        started alone, every other stage waiting for it, has every core: nothing can
        start beside it until it ends."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        sharing = 1 if getattr(self.running_alone, "value", False) else self.jobs
        if sharing * self.processes > 1:
            threads = str(max(1, usable_cores() // (sharing * self.processes)))
            env.setdefault("OMP_NUM_THREADS", threads)
            env.setdefault("MKL_NUM_THREADS", threads)
        return env

    def run(self, only=None):
        """Run the stages (or ``only`` these); with ``jobs`` > 1 a stage starts as soon
        as the stages it needs have finished, up to ``jobs`` at a time (with 1, in
        order). A failed stage stops new starts; those running finish first."""
        todo = [s for s in self.stages if not only or s.name in only]
        if only:
            unknown = set(only) - {s.name for s in self.stages}
            if unknown:
                raise RecipeError(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: "
                                  + ", ".join(s.name for s in self.stages))
        with self.work_lock():
            self.run_stages(todo)

    @contextlib.contextmanager
    def work_lock(self):
        """Hold ``recipe.lock`` in the work folder for the whole run: a second run there
        would train into the same files. The lock is the kernel's (flock): it goes with
        the process that holds it, so a killed run leaves nothing stuck."""
        with open(self.path("recipe.lock"), "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                pid = handle.read().strip()
                raise RecipeError(f"work folder {self.work} is in use by another "
                                  f"onmt_qd_recipe ({f'PID {pid}' if pid else 'PID unknown'}): "
                                  "wait for it to finish, or give another -work_dir") from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)  # no PID of a finished run for the next one to name

    def run_stages(self, todo):
        self.start = time.time()
        self.active = {}  # running stage name -> (console prefix, stage, start time)
        self.last_progress = {}  # stage name -> the progress line it last showed
        waiting = {s.name for s in todo}
        pending = list(enumerate(todo, 1))
        running = {}
        with ThreadPoolExecutor(self.jobs) as pool:
            while pending or running:
                ready = [(i, s) for i, s in pending if not waiting & set(s.needs)]
                for item in ready:
                    if len(running) == self.jobs:
                        break
                    pending.remove(item)
                    alone = not running and len(ready) == 1
                    running[pool.submit(self.run_stage, *item, len(todo), alone)] = item[1]
                if not running:
                    raise RecipeError("stages wait on each other: " +
                                      ", ".join(s.name for _, s in pending))
                finished, _ = wait(running, timeout=self.progress_seconds,
                                   return_when=FIRST_COMPLETED)
                if not finished:
                    self.show_progress()
                for future in finished:
                    waiting.discard(running.pop(future).name)
                    if future.exception() is not None:
                        pending.clear()  # let the others finish, start nothing new
                for future in finished:
                    future.result()

    def run_stage(self, i, stage, total, alone=False):
        self.running_alone.value = alone  # this pool thread's commands (command_environment)
        done = self.path("stages", stage.name + ".done")
        prefix = f"[{i}/{total}] {stage.name}"
        key = self.stage_key(stage)
        if self.finished_record(stage.name).get("signature") == key:
            print(f"{prefix}: done already, skipped", flush=True)
            return
        with contextlib.suppress(FileNotFoundError):  # an older run's: not this one's
            os.remove(done)
        for output in stage.outputs:  # a killed run may have left part of these
            shutil.rmtree(output, ignore_errors=True) if os.path.isdir(output) else \
                os.path.exists(output) and os.remove(output)
            remove_stale_temporaries(output)
        open(self.path("logs", f"{stage.name}.log"), "w").close()
        print(f"{prefix} ...", flush=True)
        t0 = time.time()
        self.active[stage.name] = (prefix, stage, t0)
        try:
            stage.run()
        finally:
            self.active.pop(stage.name, None)
        with atomic_output(done) as temporary, open(temporary, "w") as handle:
            json.dump({"seconds": round(time.time() - t0, 1), "signature": key,
                       "finished": time.time_ns()}, handle)
        print(f"{prefix}: finished in {(time.time() - t0) / 60:.1f} min "
              f"(total {(time.time() - self.start) / 60:.1f} min)", flush=True)

    def show_progress(self):
        """One line per running stage whose progress changed since it last said: where
        it is, how long it has run and, once it is under way, about how long is left."""
        for name, (prefix, stage, t0) in list(self.active.items()):
            where = stage.progress() if stage.progress else None
            if not where or where[0] == self.last_progress.get(name):
                continue
            line, fraction = where
            self.last_progress[name] = line
            minutes = (time.time() - t0) / 60
            left = f", about {minutes * (1 - fraction) / fraction:.1f} min left" \
                if 0.02 <= fraction < 1 else ""
            print(f"{prefix}: {line} ({minutes:.1f} min{left})", flush=True)

    def side_by_side(self, run, items):
        """``run(item)`` for every item, ``jobs`` at a time; the first error is raised
        once all have finished."""
        with ThreadPoolExecutor(self.jobs) as pool:
            for future in [pool.submit(run, item) for item in items]:
                future.result()

    def finished_record(self, name):
        """What ``stages/NAME.done`` says ({} when the stage has not finished)."""
        try:
            with open(self.path("stages", name + ".done")) as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {"signature": ""}

    def stage_key(self, stage):
        """The stage's signature plus when each stage it needs last finished (stages
        finished by an older onmt_qd recorded no time and add nothing)."""
        runs = [f"{n}@{t}" for n in stage.needs if (t := self.finished_record(n).get("finished"))]
        return " | ".join([stage.signature, *runs]) if runs else stage.signature


@contextlib.contextmanager
def exit_on_signals(name):
    """Within it, SIGINT and SIGTERM end the process at once, as ``kill -9`` would, after
    one line: the running commands die with it (supervisor.py) and their stages, not
    marked done, run again at the next run. They do so even when the caller ignored or
    blocked them (a non-interactive shell starts ``onmt_qd_recipe ... &`` with SIGINT
    ignored, and ``kill -INT`` did nothing without a word); the old handlers and mask
    are back on leaving."""
    def stop(signum, frame):
        print(f"{name}: stopped by {signal.Signals(signum).name}: the stages that were "
              "running were stopped and run again at the next run", file=sys.stderr,
              flush=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signals = {signal.SIGINT, signal.SIGTERM}
    old = {signum: signal.signal(signum, stop) for signum in signals}
    old_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for signum, handler in old.items():
            signal.signal(signum, handler)
