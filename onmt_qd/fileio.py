"""Files in and out, so that bad input loses nothing: outputs are written under a
temporary name and renamed (a crash leaves the old file or the new one, never half of
one), a later run of the same command removes what a killed run left, and every output
is checked against the command's inputs before any work starts. An output that is a
symbolic link is written through (its target is replaced, the link stays); standard
output ("-", /dev/stdout), a pipe or a device is written in place, never renamed onto.

Pure standard library: every floor may import it."""
import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import stat
import sys

TEMPORARY = re.compile(r"\.onmt_qd-(\d+)\.tmp$")
STDOUT = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
STDIN = "-"
# what a user can do about a failed write, by errno
WRITE_ADVICE = {errno.ENOSPC: "free space or choose another path",
                errno.EDQUOT: "free space (disk quota) or choose another path",
                errno.EACCES: "check the folder's permissions or choose another path",
                errno.EPERM: "check the folder's permissions or choose another path",
                errno.EROFS: "the file system is read-only: choose another path"}


class OutputError(OSError):
    """A write that failed, named by the file the user asked for (not its temporary)."""

    def __str__(self):
        advice = WRITE_ADVICE.get(self.errno, "choose another path")
        return f"cannot write {self.filename}: {self.strerror} (errno {self.errno}); {advice}"


def is_stdout(path):
    return path in STDOUT


def is_stream(path):
    """Standard output, or a path naming a pipe, terminal, socket or device (/dev/null,
    a FIFO, a shell's >(...)): written in place, since renaming onto it would replace
    the device or the link to it."""
    if is_stdout(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


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
    """Yield a temporary path next to ``path`` (next to its target, for a symbolic
    link); on success it is flushed to disk and renamed onto that, on any failure
    removed. Stale temporaries left by killed runs are removed first. A stream
    (is_stream) is yielded as is, to be written in place. A failed write is an
    OutputError naming ``path``."""
    if is_stream(path):
        stream = "/dev/stdout" if is_stdout(path) else path
        with named_write_errors(path, stream):
            yield stream
        return
    target = os.path.realpath(path)  # through a link: the link stays a link
    remove_stale_temporaries(target)
    temporary = temporary_name(target)
    try:
        with named_write_errors(path, temporary, target):
            yield temporary
            _fsync_file(temporary)
            os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    _fsync_directory(os.path.dirname(target))


@contextlib.contextmanager
def named_write_errors(path, *written):
    """An OSError of writing (one that names no file, or one of ``written``) becomes
    an OutputError naming ``path``; reading another file may fail as it does."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, OutputError) or exc.errno is None or \
                exc.filename not in (None, path, *written):
            raise
        raise OutputError(exc.errno, exc.strerror, path) from exc


@contextlib.contextmanager
def open_output(path):
    """A UTF-8 text file open for ``path``, written atomically (atomic_output); for
    standard output, Python's own stream, so that what the command prints stays in
    order with it."""
    if is_stdout(path):
        with named_write_errors(path):
            yield sys.stdout
            sys.stdout.flush()
        return
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        yield handle


def same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (through links, relative parts
    or hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_input_file(path, option, stdin=False):
    """A one-line error unless ``path`` is a readable file (or, for a text input that
    may be read from standard input, "-")."""
    if stdin and path == STDIN:
        return
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a directory, not a file")
    if not os.path.exists(path):
        raise ValueError(f"{option} {path} does not exist")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option} {path} is not readable (check its permissions)")


def check_outputs(outputs, inputs=None):
    """Before any work: every output must go into an existing folder, must not be a
    directory, and must be neither one of the ``inputs`` nor another output. Both are
    {option: path} or [(option, path)]; None paths are options not given. Streams
    (standard input and output, devices, pipes) are written in place: not checked."""
    to_stdout = [option for option, path in dict(outputs).items() if path and is_stdout(path)]
    if len(to_stdout) > 1:
        raise ValueError(f"{' and '.join(to_stdout)} both name standard output, which "
                         "takes one output: write the other to a file")
    given = [(option, path) for option, path in dict(outputs).items()
             if path and not is_stream(path)]
    sources = [(option, path) for option, path in _pairs(inputs or ()) if path]
    for i, (option, path) in enumerate(given):
        folder = os.path.dirname(os.path.realpath(path))
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


def check_one_stdin(inputs):
    """At most one of the inputs ({option: path}) reads standard input."""
    readers = [option for option, path in _pairs(inputs) if path == STDIN]
    if len(readers) > 1:
        raise ValueError(f"{' and '.join(readers)} both name standard input, which holds "
                         "one file: give the other as a file")


def check_not_stdout(option, path, what):
    """For binary outputs of commands that print their report on standard output."""
    if path and is_stdout(path):
        raise ValueError(f"{option} {path}: {what} cannot go to standard output, where this "
                         "command prints its report; give a file name")


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


BOM = "\ufeff".encode("utf-8")


def check_no_bom(path, option):
    """A text file another reader (OpenNMT-py's corpus reader) takes as it is must not
    start with a byte-order mark, which would become part of its first word."""
    with open(path, "rb") as handle:
        if handle.read(len(BOM)) == BOM:
            raise ValueError(f"{option} {path} starts with a byte-order mark (U+FEFF), which "
                             "would be read as part of its first word: remove it (e.g. "
                             "sed -i '1s/^\\xEF\\xBB\\xBF//' FILE) and run again")


def check_corpora_no_bom(corpora):
    """check_no_bom for both sides of every corpus of a data config ({name: {path_src,
    path_tgt, ...}}, or its YAML text as options hold it before OpenNMT-py parses it),
    the files OpenNMT-py reads itself."""
    if isinstance(corpora, str):
        import yaml

        corpora = yaml.safe_load(corpora)
    for name, corpus in (corpora if isinstance(corpora, dict) else {}).items():
        for side in ("path_src", "path_tgt"):
            path = (corpus or {}).get(side)
            if path and os.path.isfile(path):
                check_no_bom(path, f"data: {name}: {side}")


def read_text_lines(path, option="-src"):
    """The lines of a UTF-8 text file split on "\\n" only (as ``wc -l`` and OpenNMT-py
    count them), without their line ends and a leading byte-order mark (said on
    standard error); invalid UTF-8 names the file and line. "-" reads standard input."""
    check_input_file(path, option, stdin=True)
    if path == STDIN:
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as handle:
            data = handle.read()
    if data.startswith(BOM):
        # an editor's byte-order mark would stay inside the first word (-> <unk>)
        data = data[len(BOM):]
        print(f"{option} {path}: removed the byte-order mark (U+FEFF) at its start",
              file=sys.stderr)
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


def sha256(path):
    """The SHA-256 of a file, read in 1 MiB blocks (files may be large models)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
