"""Runs one command of a recipe's stage so that it dies with the recipe, ``kill -9``
included: ``python -I -S supervisor.py RECIPE_PID COMMAND...``.

The recipe starts this process in a process group of its own; the command and whatever
it starts (OpenNMT-py's data loaders, a cache build's workers) stay in that group. When
the recipe dies, Linux sends this process SIGTERM (its parent-death signal), and it
kills the whole group, itself included. A command's own children would otherwise
outlive it and keep writing into the work folder.

Standard library only, started by its path: importing onmt_qd would load torch (3 s)
for every command."""
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop(signum=None, frame=None):
    """Kill this process group: the command, its children and this process."""
    os.killpg(0, signal.SIGKILL)


def main():
    recipe, command = int(sys.argv[1]), sys.argv[2:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != recipe:  # the recipe died before the signal was asked for
        stop()
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()
