"""The teacher cache on disk: for every target position of the training corpora, the
teacher's K most probable tokens, their log-probabilities and the log of the mass left
outside them (teacher-forced, T = 1), found by (corpus, line).

A cache is a folder of raw little-endian arrays, read through numpy memmaps (nothing is
unpickled, nothing is loaded whole):
  header.json  format, K, dtypes, sizes, corpora, and the fingerprint of what it was made
               from (teacher checkpoint, corpus files, transforms and their options,
               vocabulary)
  index.bin    per corpus line: offset of its first row, row count (-1: not cached, e.g.
               dropped by filtertoolong), checksum of its source token ids
  ids.bin      [rows, K] token ids (uint16; int32 for vocabularies over 65,536)
  logp.bin     [rows, K] float16 log-probabilities
  rest.bin     [rows] float16 log of the remaining mass (-inf when K = vocabulary size)
  gold.bin     [rows] the gold target token of each row, checked at batch time

The header holds a CRC-32 of every block of about 1 MiB of each of these files, checked
before training reads the cache (one sequential read, about 2.5 GB/s), so damaged values
are refused by name instead of surfacing as a diverging loss.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from onmt.constants import CorpusTask
from onmt.inputters.inputter import vocabs_to_dict
from onmt.transforms import AVAILABLE_TRANSFORMS
from onmt.utils.parse import ArgumentParser

from onmt_qd.constants import TEACHER_CACHE_VERSION

FORMAT = "onmt_qd teacher cache"
VERSION = TEACHER_CACHE_VERSION
HEADER = "header.json"
INDEX_DTYPE = np.dtype([("offset", "<i8"), ("length", "<i4"), ("checksum", "<i8")])
LOGP_DTYPE = np.dtype("<f2")
ROW_ARRAYS = ("ids", "logp", "rest", "gold")
BLOCK_BYTES = 1 << 20

# Transforms whose output depends on the input alone (given the options checked in
# check_deterministic): a cache made once is right for every epoch.
DETERMINISTIC_TRANSFORMS = {"sentencepiece", "bpe", "onmt_tokenize", "filtertoolong",
                            "prefix", "suffix", "normalize", "clean"}
SUBWORD_TRANSFORMS = {"sentencepiece", "bpe", "onmt_tokenize"}

# OpenNMT-py's vocabularies: "src" and "tgt" (pyonmttok vocabularies) beside its settings.
Vocabs = dict[str, Any]
# header.json, and the fingerprint in it: JSON values.
Json = dict[str, Any]


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<i4")


def _crc32(rows: np.ndarray) -> int:
    """CRC-32 of the rows' bytes (``.data``: numpy's type stubs give an array the buffer
    protocol only from Python 3.12)."""
    return zlib.crc32(rows.data)


def block_checksums(array: np.ndarray) -> Json:
    """{"block_rows": R, "crc32": [...]}: the CRC-32 of every R rows of ``array``, R
    chosen so that a block holds about BLOCK_BYTES (at least one row)."""
    rows = max(1, BLOCK_BYTES // max(1, array[:1].nbytes))
    return {"block_rows": rows,
            "crc32": [_crc32(array[start:start + rows])
                      for start in range(0, len(array), rows)]}


def file_digest(path: str) -> tuple[str, int]:
    """(sha256 hex, number of lines) of a file, in one streaming pass."""
    sha, lines, last = hashlib.sha256(), 0, b"\n"
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return sha.hexdigest(), lines + (last != b"\n")


def check_deterministic(opt: Namespace) -> None:
    """Refuse transforms that draw random numbers in training: the cache would hold the
    teacher's view of one draw while every epoch trains on another."""
    for name in sorted(opt._all_transform):
        if name not in DETERMINISTIC_TRANSFORMS:
            raise ValueError(f"transform '{name}' is random or not supported by the teacher "
                             f"cache (supported: {', '.join(sorted(DETERMINISTIC_TRANSFORMS))}); "
                             "distill from the live teacher with -teacher_model instead")
        if name in SUBWORD_TRANSFORMS:
            for side in ("src", "tgt"):
                nbest = getattr(opt, f"{side}_subword_nbest")
                alpha = getattr(opt, f"{side}_subword_alpha")
                if nbest not in (0, 1) or alpha != 0:
                    raise ValueError(
                        f"transform '{name}' samples subwords in training (-{side}_subword_nbest "
                        f"{nbest}, -{side}_subword_alpha {alpha}): the cache would be wrong every "
                        f"epoch; set -{side}_subword_nbest 1 and -{side}_subword_alpha 0, or "
                        "distill from the live teacher with -teacher_model")


def _option_value(value: object) -> Any:  # JSON
    """JSON form of an option; a file is represented by its contents' digest."""
    if isinstance(value, str) and os.path.isfile(value):
        return {"sha256": file_digest(value)[0]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_option_value(v) for v in value]
    return str(value)


def transform_options(opt: Namespace) -> Json:
    """Every option the used transforms declare, with its value in this run."""
    options = {}
    for name in sorted(opt._all_transform):
        parser = ArgumentParser()
        AVAILABLE_TRANSFORMS[name].add_options(parser)
        for action in parser._actions:
            if action.dest != "help":
                options[action.dest] = _option_value(getattr(opt, action.dest, None))
    return options


def vocab_digest(vocabs: Vocabs) -> str:
    tokens = vocabs_to_dict(vocabs)
    text = "\n".join(tokens["src"]) + "\0" + "\n".join(tokens["tgt"])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_fingerprint(opt: Namespace, vocabs: Vocabs) -> Json:
    """What a cache must have been made from to serve this run: training corpora (file
    contents, line counts, transforms, per-corpus options), transform options, decoder
    start token and vocabulary."""
    corpora = {}
    for name, corpus in opt.data.items():
        if name == CorpusTask.VALID:
            continue
        if corpus.get("path_txt"):
            raise ValueError(f"corpus '{name}' is a language-model text corpus (path_txt): "
                             "the teacher cache supports parallel corpora only")
        src_sha, src_lines = file_digest(corpus["path_src"])
        tgt_sha, tgt_lines = file_digest(corpus["path_tgt"])
        corpora[name] = {
            "src_sha256": src_sha, "tgt_sha256": tgt_sha, "lines": min(src_lines, tgt_lines),
            "options": {k: _option_value(v) for k, v in sorted(corpus.items())
                        if k not in ("path_src", "path_tgt", "path_align", "weight")}}
    return {"corpora": corpora, "transforms": transform_options(opt),
            "decoder_start_token": opt.decoder_start_token, "vocab_sha256": vocab_digest(vocabs)}


def _flatten(value: object, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items: dict[str, Any] = {}
        for key, sub in value.items():
            items.update(_flatten(sub, f"{prefix}{key}."))
        return items
    return {prefix[:-1]: value}


def _short(value: object) -> str:
    text = json.dumps(value)
    return text[:60] + "..." if len(text) > 60 else text


def first_difference(cached: Json, wanted: Json) -> str | None:
    """'KEY is A in the cache, B in this run' for the first key that differs, or None."""
    flat_cached, flat_wanted = _flatten(cached), _flatten(wanted)
    for key in sorted(set(flat_cached) | set(flat_wanted)):
        if flat_cached.get(key) != flat_wanted.get(key):
            return (f"{key} is {_short(flat_cached.get(key, 'absent'))} in the cache, "
                    f"{_short(flat_wanted.get(key, 'absent'))} in this run")
    return None


def corpus_line(numbers: npt.ArrayLike, stride: int) -> np.ndarray:
    """Line numbers of the examples OpenNMT-py 3.5.1 tags ``cid_line_number``.

    With a stride s > 1 (data-loader workers times data-parallel GPUs) its reader takes
    the lines whose block line // s is congruent to the offset modulo s, but numbers the
    i-th line it takes i*s + offset; this undoes that numbering (identity for s = 1)."""
    lines = np.asarray(numbers, dtype=np.int64)
    if stride == 1:
        return lines
    offset, taken = lines % stride, lines // stride
    return (taken // stride) * stride * stride + offset * stride + taken % stride


_CHECKSUM_PRIME = 1048573  # below 2**20: ids below 2**32 summed over 2**11 positions fit int64


def source_checksum(src_ids: torch.Tensor, src_len: torch.Tensor) -> torch.Tensor:
    """Per sentence, a position-weighted sum of its source token ids (exact int64): tells
    one sentence's cache entries from another's with the same target."""
    positions = torch.arange(1, src_ids.size(1) + 1, device=src_ids.device, dtype=torch.int64)
    weights = positions * 2654435761 % _CHECKSUM_PRIME + 1
    real = positions.unsqueeze(0) <= src_len.unsqueeze(1)
    return ((src_ids.long() + 1) * weights * real).sum(1)


def row_dtypes(vocab_size: int) -> dict[str, np.dtype]:
    return {"ids": id_dtype(vocab_size), "logp": LOGP_DTYPE, "rest": LOGP_DTYPE,
            "gold": id_dtype(vocab_size)}


def corpus_bases(corpus_lines: Mapping[str, int]) -> dict[str, int]:
    """{corpus: index position of its first line}: the corpora one after another."""
    bases: dict[str, int] = {}
    total = 0
    for name, lines in corpus_lines.items():
        bases[name] = total
        total += lines
    return bases


def index_positions(bases: Mapping[str, int], cids: Sequence[str],
                    lines: np.ndarray) -> np.ndarray:
    """Index positions of the given corpus lines."""
    return np.array([bases[c] for c in cids], dtype=np.int64) + lines


class CacheWriter:
    """Appends each batch's rows as it comes (nothing is held in memory) and fills the
    (corpus, line) index; ``finish`` writes the header that makes the folder a cache."""

    def __init__(self, folder: str, corpus_lines: Mapping[str, int], topk: int,
                 vocab_size: int) -> None:
        os.makedirs(folder)
        self.folder, self.topk = folder, topk
        self.dtypes = row_dtypes(vocab_size)
        self.bases = corpus_bases(corpus_lines)
        self.index = np.memmap(os.path.join(folder, "index.bin"), INDEX_DTYPE, "w+",
                               shape=(max(sum(corpus_lines.values()), 1),))
        self.index["length"] = -1
        self.files = {name: open(os.path.join(folder, f"{name}.bin"), "wb") for name in ROW_ARRAYS}
        self.rows = self.sentences = 0

    def add(self, cids: Sequence[str], lines: np.ndarray, checksums: np.ndarray,
            lengths: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """One batch: ``lengths[b]`` rows for sentence b (line ``lines[b]`` of corpus
        ``cids[b]``); ``arrays`` (ids, logp, rest, gold) hold the rows of all sentences,
        sentence after sentence."""
        self.add_at(index_positions(self.bases, cids, lines), checksums, lengths, arrays)

    def add_at(self, positions: np.ndarray, checksums: np.ndarray, lengths: np.ndarray,
               arrays: Mapping[str, np.ndarray]) -> None:
        """``add`` with the sentences given by their index positions."""
        if (self.index["length"][positions] >= 0).any():
            raise ValueError("a corpus line came twice while building the teacher cache")
        offsets = self.rows + np.cumsum(lengths) - lengths
        self.index["offset"][positions] = offsets
        self.index["length"][positions] = lengths
        self.index["checksum"][positions] = checksums
        for name in ROW_ARRAYS:
            np.ascontiguousarray(arrays[name], dtype=self.dtypes[name]).tofile(self.files[name])
        self.rows += int(lengths.sum())
        self.sentences += len(lengths)

    def finish(self, header: Json) -> None:
        for handle in self.files.values():
            handle.close()
        self.index.flush()
        header = dict(header, rows=self.rows, sentences=self.sentences,
                      bases=self.bases, index_lines=len(self.index),
                      dtypes={k: v.str for k, v in self.dtypes.items()})
        header["checksums"] = {name: block_checksums(array)
                               for name, array in map_files(self.folder, header).items()}
        with open(os.path.join(self.folder, HEADER), "w") as header_file:
            json.dump(header, header_file, indent=1)


class NotACacheError(ValueError):
    """The folder holds no teacher cache at all (rather than a damaged or outdated one)."""


def map_files(folder: str, header: Json) -> dict[str, np.ndarray]:
    """{file name: read-only memmap} of the arrays ``header`` describes, each refused
    unless its size is the one the header gives."""
    rows, topk, dtypes = header["rows"], header["topk"], header["dtypes"]
    layout = {"index.bin": (INDEX_DTYPE, (header["index_lines"],)),
              "ids.bin": (np.dtype(dtypes["ids"]), (rows, topk)),
              "logp.bin": (np.dtype(dtypes["logp"]), (rows, topk)),
              "rest.bin": (np.dtype(dtypes["rest"]), (rows,)),
              "gold.bin": (np.dtype(dtypes["gold"]), (rows,))}
    files: dict[str, np.ndarray] = {}
    for name, (dtype, shape) in layout.items():
        path = os.path.join(folder, name)
        expected = int(np.prod(shape)) * dtype.itemsize
        if not os.path.isfile(path) or os.path.getsize(path) != expected:
            raise ValueError(f"teacher cache {folder} is incomplete ({name} is missing or "
                             "has the wrong size): remove it and rebuild it with "
                             "onmt_qd_teacher_cache")
        files[name] = np.zeros(shape, dtype) if expected == 0 else np.memmap(path, dtype, "r",
                                                                             shape=shape)
    return files


class TeacherCache:
    """A finished cache, memory-mapped (``verify`` checks its contents)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(os.path.join(path, HEADER)) as handle:
                self.header = json.load(handle)
        except (OSError, ValueError):
            raise NotACacheError(f"{path} is not a teacher cache (no readable {HEADER}): "
                                 "build one with onmt_qd_teacher_cache") from None
        header = self.header if isinstance(self.header, dict) else {}
        version = header.get("version")
        if header.get("format") != FORMAT or not isinstance(version, int):
            raise NotACacheError(f"{path} is not a teacher cache ({HEADER} is another "
                                 "file's): build one with onmt_qd_teacher_cache")
        if version != VERSION:
            raise ValueError(f"teacher cache {path} is version {version}"
                             f"{' (without checksums)' if version < 2 else ''}, this onmt_qd "
                             f"reads version {VERSION}: remove it and rebuild it with "
                             "onmt_qd_teacher_cache")
        try:
            self.topk = header["topk"]
            self.files = map_files(path, header)
            self.checksums = {name: (header["checksums"][name]["block_rows"],
                                     header["checksums"][name]["crc32"]) for name in self.files}
        except (KeyError, TypeError) as error:
            raise ValueError(f"teacher cache {path} is damaged: {HEADER} lacks or mangles "
                             f"{error}; remove it and rebuild it with onmt_qd_teacher_cache") \
                from None
        for name, (rows, crc32) in self.checksums.items():
            if not (isinstance(rows, int) and rows > 0 and isinstance(crc32, list)
                    and len(crc32) == -(-len(self.files[name]) // rows)):
                raise ValueError(f"teacher cache {path} is damaged: {HEADER} has no valid "
                                 f"checksums of {name}; remove it and rebuild it with "
                                 "onmt_qd_teacher_cache")
        self.index = self.files["index.bin"]
        self.arrays = {name: self.files[f"{name}.bin"] for name in ROW_ARRAYS}

    def verify(self) -> int:
        """Raise, naming the block and file, unless every block of every file matches
        its checksum (one sequential read of the cache); returns the number of blocks."""
        for name, (rows, checksums) in self.checksums.items():
            array = self.files[name]
            for block, checksum in enumerate(checksums):
                if _crc32(array[block * rows:(block + 1) * rows]) != checksum:
                    raise ValueError(f"teacher cache {self.path} is damaged: block {block} of "
                                     f"{os.path.join(self.path, name)} fails its checksum; "
                                     "remove it and rebuild it with onmt_qd_teacher_cache")
        return sum(len(checksums) for _, checksums in self.checksums.values())

    def check(self, fingerprint: Json, topk: int | None = None) -> None:
        """Raise unless the cache was made from what ``fingerprint`` describes (and holds
        ``topk`` tokens per position when asked)."""
        if topk is not None and topk != self.topk:
            raise ValueError(f"teacher cache {self.path} holds the top {self.topk} tokens per "
                             f"position, -topk asks for {topk}: rebuild it with -topk {topk} "
                             "or drop -topk")
        difference = first_difference(self.header["fingerprint"], fingerprint)
        if difference:
            raise ValueError(f"teacher cache {self.path} was made from other data: {difference}; "
                             "rebuild it with onmt_qd_teacher_cache")

    def lookup(self, cids: Sequence[str], lines: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, lengths, checksums) of the given corpus lines."""
        entries = self.index[index_positions(self.header["bases"], cids, lines)]
        return entries["offset"], entries["length"], entries["checksum"]

    def gather(self, offsets: np.ndarray, lengths: np.ndarray, width: int
               ) -> dict[str, np.ndarray]:
        """Rows of each sentence padded to ``width`` (padding repeats its last row):
        ids, logp, rest, gold as arrays of B*width rows, in OpenNMT-py's loss order."""
        steps = np.arange(width)[None, :]
        rows = offsets[:, None] + np.minimum(steps, np.maximum(lengths[:, None] - 1, 0))
        rows = rows.ravel()
        return {name: np.asarray(array[rows]) for name, array in self.arrays.items()}
