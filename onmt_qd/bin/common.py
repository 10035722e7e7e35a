"""What every command shares: a one-line error and non-zero exit for bad input."""
import os
import sys


USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError)


def run_command(main_fn, name):
    """Run ``main_fn``; a user error becomes 'NAME: error: message' and exit 2."""
    try:
        main_fn()
    except USER_ERRORS as exc:
        if os.environ.get("ONMT_QD_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(2)
