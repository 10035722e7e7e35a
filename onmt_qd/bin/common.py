"""What every command shares: a one-line error and non-zero exit for bad input."""
import os
import sys


USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError)


def _show_causes(exc):
    """Undo ``raise ... from None`` along the chain, so that a debug traceback shows
    the underlying error our one-line message replaced."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__suppress_context__ = False
        exc = exc.__cause__ or exc.__context__


def run_command(main_fn, name):
    """Run ``main_fn``; a user error becomes 'NAME: error: message' and exit 2
    (with ONMT_QD_DEBUG=1, the full traceback, underlying errors included)."""
    try:
        main_fn()
    except USER_ERRORS as exc:
        if os.environ.get("ONMT_QD_DEBUG"):
            _show_causes(exc)
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(2)
