"""Outputs through links and to standard output, standard input, failed writes, and the
refusals of issue 24: one line each, and nothing half-written or replaced."""
import contextlib
import errno
import io
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
import torch

import onmt_qd.fileio
from onmt_qd.codec import read_compressed, write_compressed
from onmt_qd.compat import allow_onmt_checkpoints, load_checkpoint
from test_bad_input import DECODING, command, lines_of, q4, refused, translated  # noqa: F401

NO_SPACE = "No space left on device (errno 28); free space or choose another path"


def with_blank_lines(data, translated):
    """(source with blank lines among the test sentences, the output expected for it)."""
    source = lines_of(data["test.de"])
    return (["", *source[:5], "", "", *source[5:], ""],
            ["", *translated[:5], "", "", *translated[5:], ""])


def failed(module, *args, message):
    """Like ``refused``, for a failure after the model is loaded: OpenNMT-py has logged
    its progress, and the error is the last line, with no traceback."""
    code, _, err = command(module, *args)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith(f"onmt_qd_{module}: error: ") and message in last, err


@pytest.fixture
def no_system_rename(monkeypatch):
    """A writer that renamed onto /dev/stdout or /dev/null would replace the system's
    own link or device (we run as root here): fail instead."""
    replace = os.replace

    def guarded(source, target, *args, **kwargs):
        assert not os.path.realpath(target).startswith(("/dev/", "/proc/")), target
        return replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", guarded)


def test_an_output_link_is_written_through(q4, data, teacher, translated, tmp_path):
    (tmp_path / "old.txt").write_text("old\n")
    (tmp_path / "out.txt").symlink_to("old.txt")
    assert command("translate", "-model", q4["pt"], "-src", data["test.de"], "-output",
                   tmp_path / "out.txt", *DECODING)[0] == 0
    assert os.readlink(tmp_path / "out.txt") == "old.txt"
    assert lines_of(tmp_path / "old.txt") == translated
    (tmp_path / "models").mkdir()
    (tmp_path / "q.pt").symlink_to(tmp_path / "models" / "q2.pt")  # not there yet
    assert command("quantize", "-model", teacher, "-bits", 2, "-output", tmp_path / "q.pt")[0] == 0
    assert (tmp_path / "q.pt").is_symlink()
    assert load_checkpoint(tmp_path / "models" / "q2.pt")["qd_quant"]["policy"]["bits"] == 2
    assert sorted(os.listdir(tmp_path)) == ["models", "old.txt", "out.txt", "q.pt"]
    assert os.listdir(tmp_path / "models") == ["q2.pt"]


def test_standard_input_and_output_keep_one_line_per_source_line(q4, data, translated):
    source, expected = with_blank_lines(data, translated)
    result = subprocess.run(
        [sys.executable, "-m", "onmt_qd.bin.translate", "-model", q4["qdz"], "-src", "-",
         "-output", "-", *DECODING], input="\n".join(source) + "\n", capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == expected  # and no log line among them


def test_dev_stdout_is_standard_output_not_a_file(q4, data, translated, tmp_path,
                                                 monkeypatch, no_system_rename):
    source, expected = with_blank_lines(data, translated)
    stdin = io.TextIOWrapper(io.BytesIO(("\n".join(source) + "\n").encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, err = command("translate", "-model", q4["pt"], "-src", "-", "-output",
                             "/dev/stdout", *DECODING)
    assert code == 0, err
    assert out.split("\n")[:-1] == expected


def test_eval_reads_standard_input_and_writes_json_to_standard_output(q4, data, tmp_path,
                                                                      monkeypatch):
    args = ["-model", q4["pt"], "-tgt", data["test.en"], "-beam_size", 2]
    assert command("eval", *args, "-src", data["test.de"], "-json", tmp_path / "r.json")[0] == 0
    from_file = json.loads((tmp_path / "r.json").read_text())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(open(data["test.de"], "rb")))
    code, out, err = command("eval", *args, "-src", "-", "-json", "-")
    assert code == 0, err
    from_stdin, end = json.JSONDecoder().raw_decode(out)
    assert out[end:].lstrip().startswith("BLEU")  # the summary follows the JSON
    assert {k: from_stdin[k] for k in ("bleu", "chrf", "ppl", "sentences")} == \
        {k: from_file[k] for k in ("bleu", "chrf", "ppl", "sentences")}


def read_pipe(path, module, *args):
    """(exit status, stdout, the bytes a reader got) of ``module`` writing to pipe ``path``."""
    received = []
    reader = threading.Thread(target=lambda: received.append(path.read_bytes()), daemon=True)
    reader.start()
    code, out, _ = command(module, *args, "-output", path)
    reader.join(timeout=60)  # a writer that replaced the pipe leaves the reader waiting
    assert received, f"nothing reached the reader of {path}"
    return code, out, received[0]


def test_a_pipe_is_written_in_place(q4, teacher, tmp_path):
    """A model written to a named pipe (or a shell's >(gzip > m.gz)) reaches its reader."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    code, _, received = read_pipe(pipe, "quantize", "-model", teacher, "-bits", 2)
    assert code == 0
    allow_onmt_checkpoints()
    model = torch.load(io.BytesIO(received), weights_only=True)
    assert model["qd_quant"]["policy"]["bits"] == 2
    code, out, received = read_pipe(pipe, "compress", "-model", q4["pt"])
    assert code == 0 and received.startswith(b"ONMTQDZ\0")
    assert f"wrote {pipe}: {len(received):,} bytes" in out
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and os.listdir(tmp_path) == ["pipe"]


@contextlib.contextmanager
def full_tmpfs(folder):
    """A 64 KiB tmpfs at ``folder``, filled up; skips where mounting is not allowed."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with contextlib.suppress(OSError), open(folder / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(q4, data, teacher, tmp_path,
                                                            monkeypatch):
    with full_tmpfs(tmp_path / "full") as full:
        for module, args in (
                ("quantize", ["-model", teacher, "-bits", 4]),
                ("compress", ["-model", q4["pt"]]),
                ("translate", ["-model", q4["pt"], "-src", data["test.de"], *DECODING])):
            output = full / f"out.{module}"
            failed(module, *args, "-output", output,
                    message=f"cannot write {output}: {NO_SPACE}")
            assert os.listdir(full) == ["filler"]
        monkeypatch.setattr(tempfile, "tempdir", str(full))  # the source is copied there
        failed("translate", "-model", q4["pt"], "-src", data["test.de"], "-output",
               tmp_path / "o.txt", *DECODING, message=f"cannot write {full}/")
        assert os.listdir(full) == ["filler"] and not (tmp_path / "o.txt").exists()


@pytest.mark.parametrize("number, advice", [
    (errno.ENOSPC, NO_SPACE),
    (errno.EROFS, "Read-only file system (errno 30); the file system is read-only: "
                  "choose another path"),
    (errno.EACCES, "Permission denied (errno 13); check the folder's permissions or "
                   "choose another path")])
def test_a_failed_write_is_one_line_and_leaves_no_partial_file(q4, data, teacher, tmp_path,
                                                               monkeypatch, number, advice):
    """The write fails when the data is flushed to disk (simulated, so that it runs
    everywhere): after the temporary file is written, before it is renamed."""
    flush = onmt_qd.fileio._fsync_file

    def failing(path):
        if str(path).startswith(str(tmp_path)):
            raise OSError(number, os.strerror(number))
        flush(path)

    monkeypatch.setattr(onmt_qd.fileio, "_fsync_file", failing)
    out = tmp_path / "out"
    out.mkdir()
    for module, args, option in (
            ("quantize", ["-model", teacher, "-bits", 4], "-output"),
            ("compress", ["-model", q4["pt"]], "-output"),
            ("translate", ["-model", q4["pt"], "-src", data["test.de"], *DECODING], "-output"),
            ("eval", ["-model", q4["pt"], "-src", data["test.de"], "-tgt", data["test.en"],
                      "-beam_size", 2], "-json")):
        failed(module, *args, option, out / module,
               message=f"cannot write {out / module}: {advice}")
        assert os.listdir(out) == []


def test_refused_in_one_line_before_any_work(q4, data, teacher, tmp_path):
    out = tmp_path / "o.txt"
    translate = ["-model", q4["qdz"], "-src", data["test.de"], "-output", out]
    refused("translate", *translate, "-beam_size", 100000,
            message="-beam_size 100000 is more than 1000")
    refused("eval", "-model", q4["qdz"], "-src", data["test.de"], "-tgt", data["test.en"],
            "-beam_size", 100000, message="-beam_size 100000 is more than 1000")
    many = tmp_path / "many.de"  # 200 sentences at once, 1000 hypotheses each
    many.write_text("".join(open(data["test.de"]).readlines() * 10))
    refused("translate", "-model", q4["qdz"], "-src", many, "-output", out, "-beam_size",
            1000, "-batch_size", 200,
            message="-beam_size 1000 x -batch_size 200 is 200,000 hypotheses at once here, "
            "more than 100,000")
    refused("quantize", "-model", teacher, "-bits", 4, "-output", tmp_path / "q.qdz",
            message="onmt_qd_quantize writes an OpenNMT-py checkpoint (.pt), not a "
            "compressed .qdz; write OUT.pt, then onmt_qd_compress")
    for module, args in (("quantize", ["-model", teacher, "-bits", 4]),
                         ("compress", ["-model", q4["pt"]])):
        refused(module, *args, "-output", "-", message="cannot go to standard output")
    refused("eval", "-model", q4["qdz"], "-src", data["test.de"], "-tgt", data["test.en"],
            "-json", "-", "-output", "/dev/stdout",
            message="-json and -output both name standard output")
    refused("eval", "-model", q4["qdz"], "-src", "-", "-tgt", "-",
            message="-src and -tgt both name standard input")
    assert os.listdir(tmp_path) == ["many.de"]


def other_hidden_size(meta, plain):
    meta["opt"]["hidden_size"] //= 2


def without_generator_bias(meta, plain):
    meta["order"].remove("generator.bias")
    del plain["generator.bias"]


@pytest.mark.parametrize("edit, detail", [
    (other_hidden_size, "its model options give '"),
    (without_generator_bias, "its model options give 'generator.bias' shape (")])
def test_a_header_edited_apart_from_its_tensors_is_named(q4, data, tmp_path, edit, detail):
    """Edited and checksummed again: the file reads, but describes another model."""
    meta, quantized, plain = read_compressed(q4["qdz"])
    edit(meta, plain)
    edited = tmp_path / "edited.qdz"
    write_compressed(edited, meta, quantized, plain)
    damaged = f"{edited} is damaged or inconsistent: its header does not describe its tensors"
    line = refused("translate", "-model", edited, "-src", data["test.de"], "-output",
                   tmp_path / "o.txt", message=damaged)
    assert detail in line
    refused("quantize", "-model", edited, "-bits", 2, "-output", tmp_path / "q.pt",
            message=damaged)
    assert os.listdir(tmp_path) == ["edited.qdz"]
