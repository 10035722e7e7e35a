"""onmt_qd_teacher_translate: a teacher's translation of a whole training source (the
data of sequence-level distillation), in chunks that survive a kill. Each chunk's
translations are written whole (atomically) into ``OUTPUT.parts/`` as soon as the chunk
is done, with a record of what they were made with; a rerun with the same source, model
and search settings translates only the chunks not written yet, and a changed setting
starts over. When every chunk is there, they are joined into OUTPUT (one line per
source line, blank for blank), their scores into -scores if given (the engine's: the
log-probability per token of each translation, as its length penalty normalizes it),
and the parts removed."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from argparse import Namespace
from typing import Any

SIGNATURE = "signature.json"
# the options that do not change what a chunk's translations are
NOT_SEARCH_OPTIONS = ("models", "src", "output", "scores", "batch_size", "batch_type", "gpu",
                      "chunk_lines", "log_file", "verbose", "report_time", "config",
                      "save_config")


def model_digest(model: str) -> str:
    """SHA-256 of a model file, or of a directory's files that decide its translations."""
    from onmt_qd.ct2_format import directory_digest
    from onmt_qd.fileio import sha256

    return directory_digest(model) if os.path.isdir(model) else sha256(model)


def chunk_signature(opt: Namespace, lines: int) -> dict[str, Any]:
    """What the chunks in OUTPUT.parts were made from."""
    from onmt_qd.fileio import sha256

    from onmt_qd.opts import teacher_translate_parser

    parser = teacher_translate_parser()
    search = {name: value for name, value in sorted(vars(opt).items())
              if name not in NOT_SEARCH_OPTIONS and not name.startswith("_")
              and value != parser.get_default(name)}
    return {"src_sha256": sha256(opt.src), "lines": lines, "chunk_lines": opt.chunk_lines,
            "model_sha256": [model_digest(model) for model in opt.models],
            "search": json.loads(json.dumps(search, default=str))}


def prepare_parts(folder: str, signature: dict[str, Any]) -> None:
    """OUTPUT.parts holding only chunks made with ``signature``: kept on a rerun with
    the same settings, emptied (and said so) when they were made with others."""
    path = os.path.join(folder, SIGNATURE)
    if os.path.isdir(folder):
        try:
            with open(path, encoding="utf-8") as handle:
                same = json.load(handle) == signature
        except (OSError, ValueError):
            same = False
        if same:
            return
        print(f"{folder}: chunks of an earlier run with other settings (source, model or "
              "search): translating again from the start", file=sys.stderr, flush=True)
        shutil.rmtree(folder)
    os.makedirs(folder)
    from onmt_qd.fileio import atomic_output

    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump(signature, handle, sort_keys=True)


def chunk_file(folder: str, index: int, suffix: str = ".out") -> str:
    """A chunk's translations (.out, written last: its presence marks a whole chunk) or
    their scores (.scores)."""
    return os.path.join(folder, f"chunk{index:06d}{suffix}")


def check_chunked_options(opt: Namespace) -> None:
    """One line per source line, into a file the parts can sit beside."""
    from onmt_qd.fileio import is_stream

    if opt.n_best != 1:
        raise ValueError(f"-n_best {opt.n_best}: teacher translations are one line per "
                         "source line; leave -n_best out")
    if opt.chunk_lines < 1:
        raise ValueError(f"-chunk_lines must be at least 1, got {opt.chunk_lines}")
    for option, path in (("-src", opt.src), ("-output", opt.output)):
        if is_stream(path):
            raise ValueError(f"{option} {path}: give a file; the chunks done are kept "
                             "beside -output so that a rerun continues")


def translate_in_chunks(opt: Namespace) -> None:
    """-src translated by -model into -output, chunk by chunk (module docstring)."""
    from onmt_qd.fileio import atomic_output, read_text_lines, remove_stale_temporaries
    from onmt_qd.inference.engine import (check_decoding, check_files, check_inference,
                                          non_blank)
    from onmt_qd.inference.engines import open_engine

    check_chunked_options(opt)
    check_decoding(opt.beam_size, opt.batch_size, opt.n_best, opt.max_length)
    check_files(opt, {"-output": opt.output, "-scores": opt.scores})
    lines = read_text_lines(opt.src, "-src")
    check_inference(opt, len(non_blank(lines)))
    folder = opt.output + ".parts"
    remove_stale_temporaries(folder + os.sep)
    prepare_parts(folder, chunk_signature(opt, len(lines)))
    starts = range(0, len(lines), opt.chunk_lines)
    sizes = [min(opt.chunk_lines, len(lines) - start) for start in starts]
    todo = [k for k in range(len(starts)) if not os.path.isfile(chunk_file(folder, k))]
    done = len(lines) - sum(sizes[k] for k in todo)
    if done:
        print(f"onmt_qd_teacher_translate: {len(starts) - len(todo)} of {len(starts)} chunks "
              f"already translated ({done:,} sentences): continuing", flush=True)
    if todo:
        with open_engine(opt) as engine:
            began = time.perf_counter()
            for count, k in enumerate(todo, 1):
                chunk = lines[starts[k]:starts[k] + opt.chunk_lines]
                scores, predictions = engine.translate(chunk)
                with atomic_output(chunk_file(folder, k, ".scores")) as temporary, \
                        open(temporary, "w", encoding="utf-8") as handle:
                    handle.writelines(f"{s[0]}\n" for s in scores)
                with atomic_output(chunk_file(folder, k)) as temporary, \
                        open(temporary, "w", encoding="utf-8", newline="\n") as handle:
                    handle.writelines(f"{p[0]}\n" for p in predictions)
                done += len(chunk)
                rate = sum(sizes[j] for j in todo[:count]) / (time.perf_counter() - began)
                print(f"onmt_qd_teacher_translate: chunk {len(starts) - len(todo) + count}/"
                      f"{len(starts)}, {done:,}/{len(lines):,} sentences translated, "
                      f"{rate:.1f} sentences/s", flush=True)
    join_chunks(folder, sizes, opt.output)
    if opt.scores:
        join_chunks(folder, sizes, opt.scores, ".scores")
    shutil.rmtree(folder)


def join_chunks(folder: str, sizes: list[int], output: str, suffix: str = ".out") -> None:
    """Concatenate the chunks' ``suffix`` files into ``output`` (atomically) once each
    is seen to hold one line per line of its part of the source (``sizes``)."""
    from onmt_qd.datasets import count_lines
    from onmt_qd.fileio import atomic_output

    for k, size in enumerate(sizes):
        if count_lines(chunk_file(folder, k, suffix)) != size:
            raise ValueError(f"{chunk_file(folder, k, suffix)} holds "
                             f"{count_lines(chunk_file(folder, k, suffix))} lines for {size} "
                             "source lines (changed by hand?): remove it and run again")
    with atomic_output(output) as temporary, open(temporary, "wb") as out:
        for k in range(len(sizes)):
            with open(chunk_file(folder, k, suffix), "rb") as handle:
                shutil.copyfileobj(handle, out)
