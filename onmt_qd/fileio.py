"""Files in and out, so that bad input loses nothing: outputs are written under a
temporary name and renamed (a crash leaves the old file or the new one, never half of
one), a later run of the same command removes what a killed run left, and every output
is checked against the command's inputs before any work starts.

Pure standard library: every floor may import it."""
import contextlib
import glob
import os
import re
import shutil

TEMPORARY = re.compile(r"\.onmt_qd-(\d+)\.tmp$")


def temporary_name(path):
    """``PATH.onmt_qd-PID.tmp``: next to ``path`` (so the rename is atomic) and
    recognisable by a later run, which knows from the PID whether its writer is alive."""
    return f"{path}.onmt_qd-{os.getpid()}.tmp"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(prefix):
    """Remove ``PREFIX*.onmt_qd-PID.tmp`` files and folders whose writing process is
    gone (a run killed while writing); returns the removed paths."""
    removed = []
    for path in glob.glob(f"{glob.escape(prefix)}*.onmt_qd-*.tmp"):
        match = TEMPORARY.search(path)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
    return removed


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # a failure here means the data may not be on disk: it propagates
    finally:
        os.close(fd)


def _fsync_directory(path):
    """Make a rename durable (best effort: some systems cannot open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; on success it is flushed to disk and
    renamed onto ``path``, on any failure removed. Stale temporaries of ``path`` left
    by killed runs are removed first."""
    remove_stale_temporaries(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (through links, relative parts
    or hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_input_file(path, option):
    """A one-line error unless ``path`` is a readable file."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a directory, not a file")
    if not os.path.exists(path):
        raise ValueError(f"{option} {path} does not exist")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path} is not readable (check its permissions)")


def check_outputs(outputs, inputs=None):
    """Before any work: every output must go into an existing folder, must not be a
    directory, and must be neither one of the ``inputs`` nor another output. Both are
    {option: path} or [(option, path)]; None paths are options not given."""
    given = [(option, path) for option, path in dict(outputs).items() if path]
    sources = [(option, path) for option, path in _pairs(inputs or ()) if path]
    for i, (option, path) in enumerate(given):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ValueError(f"{option} {path}: folder {folder} does not exist; create it "
                             "first (mkdir -p) or choose another path")
        if os.path.isdir(path):
            raise ValueError(f"{option} {path} is a directory: give a file name")
        for other_option, other in sources + given[:i]:
            if same_file(path, other):
                raise ValueError(f"{option} {path} is the same file as {other_option} "
                                 f"{other}: writing it would destroy that file; choose "
                                 "another output path")


def _pairs(mapping):
    return mapping.items() if isinstance(mapping, dict) else mapping


@contextlib.contextmanager
def created_folder(path):
    """Create ``path`` (with parents) for the block; if the block fails, remove the
    folders it created that are still empty, so a failed run leaves no empty folders."""
    created = []
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def read_text_lines(path, option="-src"):
    """The lines of a UTF-8 text file split on "\\n" only (as ``wc -l`` and OpenNMT-py
    count them), without their line ends; invalid UTF-8 names the file and line."""
    check_input_file(path, option)
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    text = []
    for number, line in enumerate(lines, 1):
        try:
            text.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{option} {path} line {number}: invalid UTF-8 at byte "
                             f"{exc.start + 1} of the line; convert the file to UTF-8 "
                             "(e.g. iconv -t UTF-8)") from None
    return text
