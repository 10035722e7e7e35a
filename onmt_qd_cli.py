"""The onmt_qd_* console commands. This module sits outside the onmt_qd package so that
it runs before a command's module imports torch (a second or more): Ctrl-C while
a command is still importing ends it in one line, exit 130, not a KeyboardInterrupt
traceback. Once imported, each command's run_command says the same for a later Ctrl-C."""
import importlib
import os
import signal
import sys

from onmt_qd.compat import before_onmt_import

# A process that a console command spawns (a training rank, a data-loader worker) imports
# this module again, through the command's script, and never onmt_qd.bin: it is set up
# here, before it unpickles its work, which imports OpenNMT-py. (torch is not imported.)
before_onmt_import()


def _command(name, even_if_ignored=False):
    """The console entry point of onmt_qd_NAME (module onmt_qd.bin.NAME). A SIGINT the
    caller ignores (a job a script started with &) stays ignored, unless
    ``even_if_ignored``: the recipe, which a user stops with kill -INT, takes it."""
    def main():
        def interrupted(signum, frame):
            sys.stderr.write(f"onmt_qd_{name}: stopped by SIGINT (Ctrl-C)\n")
            sys.stderr.flush()
            os._exit(130)  # no cleanup to run: nothing has started

        takes = even_if_ignored or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        if takes:
            signal.signal(signal.SIGINT, interrupted)
        run = importlib.import_module(f"onmt_qd.bin.{name}").main
        if takes:  # Python's own: run_command turns its KeyboardInterrupt into one line
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return run()
    main.__name__ = f"onmt_qd_{name}"
    return main


train = _command("train")
quantize = _command("quantize")
diffquant = _command("diffquant")
compress = _command("compress")
translate = _command("translate")
eval = _command("eval")  # noqa: A001 - the command's name, as setup.py's entry points say
recipe = _command("recipe", even_if_ignored=True)
data = _command("data")
teacher_cache = _command("teacher_cache")
export = _command("export")
teacher_translate = _command("teacher_translate")
