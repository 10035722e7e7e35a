"""What every command shares: a one-line error and non-zero exit for bad input."""
import errno
import os
import sys

from onmt_qd.fileio import OutputError


USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               OutputError)
# only a write fails so: a full disk or quota, a read-only file system
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


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
    (with ONMT_QD_DEBUG=1, the full traceback, underlying errors included). Ctrl-C
    is one line too, exit 130 as a shell reports it."""
    try:
        main_fn()
    except KeyboardInterrupt:
        if os.environ.get("ONMT_QD_DEBUG"):
            raise
        print(f"{name}: stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        error = _user_error(exc)
        if error is None:
            raise
        if os.environ.get("ONMT_QD_DEBUG"):
            _show_causes(exc)
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _user_error(exc):
    """``exc`` as the error a user can act on, or None for a bug. A failed write that
    did not go through fileio.atomic_output (a temporary file) is named here."""
    if isinstance(exc, USER_ERRORS):
        return exc
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return OutputError(exc.errno, exc.strerror, exc.filename or "a temporary file")
    return None
