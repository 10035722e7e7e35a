"""Several processes of one command on this machine, built on OpenNMT-py's launch
(spawned_train, multi_init, ErrorHandler): CPU processes with torch.distributed's gloo
backend or one per GPU, a process that fails ending them all in one line naming its
rank. Used by onmt_qd_train (train/distributed.py keeps what holds its processes in
lockstep) and by onmt_qd_teacher_cache's parallel build (distill/cache_build.py)."""
import contextlib
import ctypes
import copy
import functools
import logging
import multiprocessing.connection
import os
import signal
import socket
import sys

import torch
from onmt.utils.distributed import ErrorHandler, spawned_train
from onmt.utils.logging import logger

from onmt_qd.machine import usable_cores
from onmt_qd.opts import OptionError


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def cpu_processes(opt):
    """Whether this run trains on -world_size CPU processes (no -gpu_ranks)."""
    return opt.world_size > 1 and not opt.gpu_ranks


def ranks_here(opt):
    """The ranks this machine runs: its -gpu_ranks, else its CPU processes' -cpu_ranks,
    else all of them."""
    return list(opt.gpu_ranks or opt.cpu_ranks or range(opt.world_size))


def free_port():
    """A TCP port free on this machine now (the rendezvous of one command's processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_opts(opt):
    """The options spawned_train starts each process with: on CPU processes, this
    machine's ranks in -gpu_ranks, which OpenNMT-py's multi_init reads as the process
    ranks (cpu_rank gives every process its CPU options back)."""
    if not cpu_processes(opt):
        return opt
    launch = copy.copy(opt)
    launch.gpu_ranks = ranks_here(opt)
    return launch


def check_cpu_backend(opt, command):
    """Refuse -world_size CPU processes without gloo (NCCL is for GPUs), and -cpu_ranks
    that are not distinct ranks of -world_size CPU processes."""
    if opt.world_size < 1:
        raise OptionError(f"-world_size {opt.world_size}: give the number of processes "
                          "(1 or more), or leave it out to run in one process")
    if cpu_processes(opt) and opt.gpu_backend != "gloo":
        raise OptionError(f"-world_size {opt.world_size} without -gpu_ranks {command} on CPU "
                          f"processes, which need -gpu_backend gloo (not {opt.gpu_backend}): "
                          "add -gpu_backend gloo, give one -gpu_ranks index per GPU on a "
                          "GPU machine, or drop -world_size to run in one process")
    ranks = opt.cpu_ranks
    if not ranks:
        return
    if opt.gpu_ranks:
        raise OptionError("-cpu_ranks names CPU processes, and -gpu_ranks GPUs: drop "
                          "-cpu_ranks (each machine gives its GPUs' ranks in -gpu_ranks)")
    if not cpu_processes(opt):
        raise OptionError("-cpu_ranks names CPU processes of a -world_size above 1: give "
                          "-world_size (all processes of all machines), or drop -cpu_ranks")
    if len(set(ranks)) != len(ranks) or not all(0 <= r < opt.world_size for r in ranks):
        raise OptionError(f"-cpu_ranks {' '.join(map(str, ranks))}: give distinct ranks "
                          f"from 0 to {opt.world_size - 1} (-world_size {opt.world_size})")


def cpu_rank(process, opt, device_id):
    """spawned_train's process function on CPU: multi_init has made this process rank
    ``opt.gpu_ranks[device_id]`` (launch_opts); it runs on the CPU (device -1) with its
    share of this machine's cores, unless OMP_NUM_THREADS says otherwise."""
    opt = copy.copy(opt)
    opt.gpu_ranks = []
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, usable_cores() // len(ranks_here(opt))))
    process(opt, -1)


class RankErrorHandler(ErrorHandler):
    """OpenNMT-py's ErrorHandler (a child's error queued as (rank, traceback), SIGUSR1
    to the parent, the children stopped), ending the run with one line naming the rank
    (a ValueError, which the command prints) instead of an Exception carrying the
    traceback, and also when a process dies without a word (killed, out of memory),
    or when this process is sent SIGTERM (the processes end with it: a batch scheduler's
    stop leaves no process behind). ``job`` names the processes and ``outcome`` says
    what is left on disk, after ``cleanup`` (if any) has removed what they left
    half-written.

    The signal handlers only wake ``join`` (a byte on a pipe it waits on beside the
    processes), which stops the run: stopping inside a handler could interrupt the
    main thread while it holds the error queue's lock, and the handler's own put on
    that queue would then wait for ever."""

    def __init__(self, error_queue, job, outcome, cleanup=None):
        self.job, self.outcome, self.cleanup = job, outcome, cleanup
        self.procs = {}
        self.failure = None
        self.stopping = False
        self.terminated = None
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)  # a handler never waits on a full pipe
        self.ended = False
        self.previous_handler = signal.getsignal(signal.SIGUSR1)
        self.previous_sigterm = signal.signal(signal.SIGTERM, self.terminate)
        super().__init__(error_queue)

    def start(self, rank, proc):
        proc.start()
        self.procs[rank] = proc
        self.add_child(proc.pid)

    def error_listener(self):
        rank, trace = self.error_queue.get()
        if rank is None:  # join's end-of-run mark: no process failed
            return
        last = trace.strip().splitlines()[-1] if trace.strip() else "no message"
        self.failure = (rank, f"failed: {last}")
        os.kill(os.getpid(), signal.SIGUSR1)

    def wake(self):
        if not self.stopping:
            with contextlib.suppress(BlockingIOError):  # full: join is awake anyway
                os.write(self.wake_write, b"\0")

    def signal_handler(self, signalnum, stackframe):
        self.wake()

    def terminate(self, signalnum, stackframe):
        self.terminated = signal.Signals(signalnum).name
        self.wake()

    def blame(self):
        """(rank, what): a process killed by a signal first (the others then fail in
        their next collective), else the first error queued, else an abnormal exit."""
        for rank, proc in self.procs.items():
            if proc.exitcode is not None and proc.exitcode < 0:
                return rank, f"was killed by {signal.Signals(-proc.exitcode).name}"
        if self.failure is not None:
            return self.failure
        for rank, proc in self.procs.items():
            if proc.exitcode:
                return rank, f"exited with status {proc.exitcode}"
        return None

    def must_stop(self):
        return self.terminated is not None or self.blame() is not None

    def stop(self):
        """Stop every process (SIGTERM: silent wherever it finds them, even importing),
        remove what they left half-written, raise one line."""
        self.stopping = True
        if self.terminated:
            cause = f"{self.job} stopped by {self.terminated}"
        else:
            rank, what = self.blame()
            cause = f"{self.job} process of rank {rank} {what}"
        for proc in self.procs.values():
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if self.cleanup is not None:
            self.cleanup()
        self.end()  # the SIGUSR1 handler stays: a late SIGUSR1 finds it (stopping)
        raise ValueError(f"{cause}; all {len(self.procs)} processes stopped, and {self.outcome}")

    def join(self):
        """Wait for every process; the first that fails, or a SIGTERM, ends the run
        (stop). A signal that asks for nothing (a SIGUSR1 from elsewhere) is drained
        and waited past."""
        waiting = dict(self.procs)
        while waiting:
            ended = multiprocessing.connection.wait(
                [p.sentinel for p in waiting.values()] + [self.wake_read])
            if self.wake_read in ended:
                os.read(self.wake_read, 4096)
            for rank in [r for r, p in waiting.items() if p.sentinel in ended]:
                waiting.pop(rank).join()
            if self.must_stop():
                self.stop()
        self.end_listener()  # every process ended normally: none holds the queue's lock
        if self.must_stop():
            self.stop()
        self.close()
        if self.terminated is not None:  # came after the last check: still a stop
            self.stop()

    def close(self):
        """The run over without a stop: no more wake-ups, both handlers given back."""
        self.stopping = True
        self.end()
        signal.signal(signal.SIGUSR1, self.previous_handler)

    def end_listener(self):
        """Let the listener thread end: it takes the end-of-run mark unless it has
        taken an error first (and then signalled before ending)."""
        self.error_queue.put((None, None))
        self.error_thread.join()

    def end(self):
        """Once: the listener ended, SIGTERM's handler given back, the wake-up pipe
        closed (``stopping`` is set: a late signal writes nothing to it). A process
        killed by a signal may have died inside its put on the error queue, holding
        the queue's lock: then the listener, a daemon thread, is left waiting."""
        if self.ended:
            return
        self.ended = True
        killed = any(p.exitcode is not None and p.exitcode < 0 for p in self.procs.values())
        if self.error_thread.is_alive() and not killed:
            self.end_listener()
        signal.signal(signal.SIGTERM, self.previous_sigterm)
        os.close(self.wake_read)
        os.close(self.wake_write)


def end_children():
    """Stop this process's multiprocessing children (OpenNMT-py's data-loader workers):
    SIGTERM, then SIGKILL for one still there after 5 s. torch's DataLoader raises on a
    worker's death (its SIGCHLD handler): not while they are stopped on purpose."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(5)
        if child.is_alive():
            child.kill()


@contextlib.contextmanager
def children_end_on_sigterm():
    """Within it, SIGTERM ends this process's multiprocessing children (OpenNMT-py's
    data-loader workers) before the process itself: killed while loading data, a
    training run left its two workers running with parent 1, reading the corpus and
    growing to 3 GB each. The old handler is back on leaving."""
    def stop(signum, frame):
        end_children()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def rank_main(parent, *args):
    """A process of run_processes: spawned_train(*args), ended by the kernel when its
    parent ends (prctl PR_SET_PDEATHSIG, Linux), even by SIGKILL, which the parent
    cannot forward. Once its work is done (an error is on the queue already) it ends
    at once, its output flushed, without the interpreter's teardown: there, gloo's
    worker threads still holding work made a finished rank die of SIGABRT now and then
    ("terminate called without an active exception", after its last checkpoint; 1 run
    in 6 of the two-process tests), and destroying the process group first made it
    more frequent (3 in 5)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent ended before prctl
            os._exit(1)
    spawned_train(*args)
    end_children()  # data-loader workers, which the teardown would have stopped
    logging.shutdown()  # the -log_file handler's last lines
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_processes(process, opt, job, outcome, cleanup=None):
    """Run ``process(opt, device_id)`` in this machine's -world_size processes through
    OpenNMT-py's spawned_train (on CPU processes through cpu_rank); the first that
    fails ends them all with one line (RankErrorHandler, whose arguments follow)."""
    if cpu_processes(opt):
        process = functools.partial(cpu_rank, process)
    launch = launch_opts(opt)
    context = torch.multiprocessing.get_context("spawn")
    error_queue = context.SimpleQueue()
    error_handler = RankErrorHandler(error_queue, job, outcome, cleanup)
    try:
        for device_id, rank in enumerate(launch.gpu_ranks):
            error_handler.start(rank, context.Process(
                target=rank_main, args=(os.getpid(), process, launch, device_id,
                                        error_queue)))
            logger.info(f"Rank {rank}: process {error_handler.procs[rank].pid}")
    except BaseException:  # a process that cannot start: stop those that did
        for proc in error_handler.procs.values():
            proc.kill()
            proc.join()
        error_handler.close()
        raise
    error_handler.join()
