"""The teacher cache (onmt_qd_teacher_cache, onmt_qd_train -teacher_cache): the top-K
loss against the full one, identity of entries under OpenNMT-py's batching, refusal of
mismatched, unfinished, damaged or outdated caches, cleanup of killed builds, quantized
training from a cache."""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import run_cli
from onmt_qd.compat import load_checkpoint
from onmt_qd.distill import cache as cache_format
from onmt_qd.distill import (LiveTeacher, distillation_loss, load_teacher, teacher_forced_logits,
                             topk_distillation_loss)
from onmt_qd.distill.cache import CacheWriter, TeacherCache, corpus_line
from onmt_qd.distill.cache_build import build_teacher_cache, topk_rows
from onmt_qd.distill.teacher import CachedTeacher
from test_bad_input import command, refused

PAD = 1
PROGRESS = re.compile(r"^onmt_qd_teacher_cache: [\d,]+/[\d,]+ sentences through the teacher, "
                      r"[\d.]+ sentences/s, about [\d.]+ (s|min) left$")


def logits_and_target(seed=0, n=12, vocab=7):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(2, vocab, (n,), generator=g)
    target[-3:] = PAD
    return torch.randn(n, vocab, generator=g) * 2, torch.randn(n, vocab, generator=g) * 2, target


def loss_and_grad(fn, student):
    student = student.clone().requires_grad_(True)
    loss, ce = fn(student)
    loss.backward()
    return loss.detach(), ce.detach(), student.grad


def test_topk_loss_with_the_whole_vocabulary_is_the_live_loss():
    student, teacher, target = logits_and_target()
    ids, logp, rest = topk_rows(teacher, teacher.size(1))
    for weight in (0.0, 0.7, 1.0):
        live = loss_and_grad(lambda s: distillation_loss(s, teacher, target, PAD, weight, 1.0),
                             student)
        cached = loss_and_grad(lambda s: topk_distillation_loss(s, ids, logp, rest, target, PAD,
                                                                weight), student)
        for a, b in zip(live, cached):
            assert torch.allclose(a, b, atol=1e-5), weight


def test_topk_loss_is_the_written_out_formula():
    student, teacher, target = logits_and_target(seed=1)
    k, weight = 3, 0.6
    ids, logp, rest = topk_rows(teacher, k)

    def written_out(s):
        keep = target != PAD
        p = F.softmax(s, -1)
        q_k = F.softmax(teacher, -1).gather(1, ids)
        q_r = 1 - q_k.sum(-1)
        p_k = p.gather(1, ids)
        p_r = 1 - p_k.sum(-1)
        kl = (q_k * (q_k / p_k).log()).sum(-1) + q_r * (q_r / p_r).log()
        ce = F.cross_entropy(s, target, ignore_index=PAD, reduction="none")
        return ((1 - weight) * ce + weight * kl)[keep].sum(), ce[keep].sum()

    expected = loss_and_grad(written_out, student)
    got = loss_and_grad(lambda s: topk_distillation_loss(s, ids, logp, rest, target, PAD, weight),
                        student)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, atol=1e-5)


def test_line_numbers_of_strided_readers_are_undone(data):
    """OpenNMT-py 3.5.1 misnumbers lines when it reads with a stride (data-loader workers)."""
    from onmt.inputters.text_corpus import ParallelCorpus, ParallelCorpusIterator
    from onmt.transforms import TransformPipe

    with open(data["train.de"], encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    corpus = ParallelCorpus("train", data["train.de"], data["train.en"])
    for stride in (2, 3):
        for offset in range(stride):
            reader = ParallelCorpusIterator(corpus, TransformPipe.build_from([]), stride=stride,
                                            offset=offset)
            examples = [ex for ex, _, _ in reader]
            found = corpus_line([ex["cid_line_number"] for ex in examples], stride)
            assert [" ".join(ex["src"]) for ex in examples] == [lines[i] for i in found]


def cache_opts(data, *args, config=None, validate=True):
    """Options as onmt_qd_teacher_cache parses them (validated as training does, unless
    build_teacher_cache is to validate them)."""
    from onmt.utils.parse import ArgumentParser

    from onmt_qd.opts import parse, teacher_cache_parser

    opt = parse(teacher_cache_parser(), ["-config", config or data["config"], *map(str, args)])
    if validate:
        ArgumentParser.validate_prepare_opts(opt)
    return opt


def run_vocabs(opt):
    from onmt.inputters import build_vocab
    from onmt.transforms import get_specials, get_transforms_cls

    return build_vocab(opt, get_specials(opt, get_transforms_cls(opt._all_transform)))


@pytest.fixture(scope="module")
def cache(data, teacher, tmp_path_factory):
    """A top-8 cache of the fixture corpus, built as users do."""
    path = tmp_path_factory.mktemp("cache") / "top8"
    result = run_cli("teacher_cache", "-config", data["config"], "-teacher_model", teacher,
                     "-topk", 8, "-output", path)
    assert f"wrote {path}: 600 sentences, " in result.stderr  # every sentence of the corpus
    return str(path)


def training_batches(opt, vocabs, n):
    from onmt.constants import CorpusTask
    from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
    from onmt.transforms import get_transforms_cls

    iterator = build_dynamic_dataset_iter(opt, get_transforms_cls(opt._all_transform), vocabs,
                                          task=CorpusTask.TRAIN)
    for i, (batch, _) in enumerate(iterator):
        if i == n:
            return
        yield batch


def test_batches_get_their_own_sentences_under_shuffling_and_bucketing(data, teacher, cache):
    """Small buckets, shuffled batches, more than one epoch: each batch's cached top-1 is
    the live teacher's argmax on that very batch."""
    opt = cache_opts(data, "-teacher_cache", cache, "-bucket_size", 96, "-batch_size", 48)
    vocabs = run_vocabs(opt)
    cached = CachedTeacher.from_opts(opt, vocabs, torch.device("cpu"))
    live = load_teacher(teacher, vocabs, "cpu")
    checked = 0
    for batch in training_batches(opt, vocabs, 16):
        keep = batch["tgt"][:, 1:, 0].reshape(-1) != PAD
        with torch.no_grad():
            logp = F.log_softmax(teacher_forced_logits(live, batch), -1)[keep]
        distribution = cached.distribution(batch)
        top2 = logp.topk(2, -1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-3
        assert torch.equal(distribution.ids[keep][:, 0][clear], logp.argmax(-1)[clear])
        assert torch.allclose(distribution.logp[keep][:, 0], top2[:, 0], atol=2e-2)
        checked += int(keep.sum())
    assert checked > cached.cache.header["rows"]  # more than one epoch


def test_cache_of_the_whole_vocabulary_gives_the_live_loss_on_a_real_batch(data, teacher,
                                                                           tmp_path):
    """Same student logits, same batch: loss and gradient from the live teacher and from
    a K = V cache (stored in float16) agree."""
    vocab_size = len(load_checkpoint(teacher)["vocab"]["tgt"])
    opt = cache_opts(data, "-teacher_model", teacher, "-topk", vocab_size, "-output",
                     tmp_path / "full", validate=False)
    assert build_teacher_cache(opt) > 0
    opt.teacher_cache = str(tmp_path / "full")
    vocabs = run_vocabs(opt)
    cached = CachedTeacher.from_opts(opt, vocabs, torch.device("cpu"))
    live = LiveTeacher.from_checkpoint(teacher, vocabs, "cpu")
    batch = next(training_batches(opt, vocabs, 1))
    target = batch["tgt"][:, 1:, 0].reshape(-1)
    with torch.no_grad():
        student = teacher_forced_logits(live.model, batch)
    student = student + torch.randn(student.shape, generator=torch.Generator().manual_seed(0))
    results = [loss_and_grad(lambda s: t.distribution(batch).loss(s, target, PAD, 0.7, 1.0),
                             student) for t in (live, cached)]
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=2e-3, atol=2e-4)


def test_mismatched_cache_is_refused_in_one_line_and_nothing_is_written(data, teacher, cache,
                                                                        tmp_path):
    result = run_cli("train", "-config", data["config"], "-save_model", tmp_path / "student",
                     "-train_steps", 2, "-teacher_cache", cache, "-topk", 4, check=False)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert errors[-1].startswith("onmt_qd_train: error: teacher cache") and "top 8" in errors[-1]
    assert os.listdir(tmp_path) == []

    def refusal(config_change):
        with open(data["config"]) as handle:
            config = yaml.safe_load(handle)
        config_change(config)
        path = tmp_path / "config.yaml"
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        opt = cache_opts(data, "-teacher_cache", cache, config=str(path))
        with pytest.raises(ValueError) as error:
            CachedTeacher.from_opts(opt, run_vocabs(opt), torch.device("cpu"))
        return str(error.value)

    other_corpus = tmp_path / "other.en"
    with open(data["train.en"], encoding="utf-8") as handle:
        lines = handle.readlines()
    other_corpus.write_text("".join(lines[:100] + ["A changed line .\n"] + lines[101:]),
                            encoding="utf-8")
    other_vocab = tmp_path / "other.vocab"
    with open(data["root"] / "vocab.src", encoding="utf-8") as handle:  # shared
        other_vocab.write_text("".join(handle.readlines()[:-1]), encoding="utf-8")
    assert "corpora.train.tgt_sha256" in refusal(
        lambda c: c["data"]["train"].update(path_tgt=str(other_corpus)))
    assert "vocab_sha256" in refusal(lambda c: c.update(src_vocab=str(other_vocab)))
    assert "corpora.train.options.transforms" in refusal(
        lambda c: c["data"]["train"]["transforms"].append("filtertoolong"))
    with pytest.raises(ValueError, match="already holds a teacher cache of something else"):
        build_teacher_cache(cache_opts(data, "-teacher_model", teacher, "-topk", 4, "-output",
                                       cache, validate=False))


def test_killed_build_leaves_nothing_a_later_run_accepts_and_the_next_build_removes_it(
        data, teacher, tmp_path):
    output = tmp_path / "cache"
    # killed once its progress line shows it writing (reported after every batch here)
    with subprocess.Popen(
            [sys.executable, "-c", "import sys, onmt_qd.progress as p; p.REPORT_SECONDS = 0; "
             "from onmt_qd.bin.teacher_cache import main; sys.exit(main())",
             "-config", data["config"], "-teacher_model", teacher, "-output", str(output),
             "-batch_size", "1"],
            stderr=subprocess.PIPE, text=True) as build:
        for line in build.stderr:
            if PROGRESS.match(line):
                build.send_signal(signal.SIGKILL)
                break
    assert build.returncode == -signal.SIGKILL
    assert not output.exists()
    partial = tmp_path / f"cache.onmt_qd-{build.pid}.tmp"
    assert glob.glob(f"{output}*") == [str(partial)]
    with pytest.raises(ValueError, match="is not a teacher cache"):
        TeacherCache(str(partial))  # what onmt_qd_train -teacher_cache opens
    running = tmp_path / f"cache.onmt_qd-{os.getpid()}.tmp"  # a build that still runs
    running.mkdir()
    run_cli("teacher_cache", "-config", data["config"], "-teacher_model", teacher,
            "-output", f"{output}/")  # a trailing slash, as shells complete folder names
    assert not partial.exists() and running.exists()
    assert TeacherCache(str(output)).verify() > 0


def small_cache(folder, sentences=40, length=5, topk=4):
    """A cache written directly (no teacher): random rows, ``length`` per sentence."""
    rng = np.random.default_rng(0)
    rows = sentences * length
    arrays = {"ids": rng.integers(0, 100, (rows, topk)), "logp": rng.standard_normal((rows, topk)),
              "rest": rng.standard_normal(rows), "gold": rng.integers(0, 100, rows)}
    writer = CacheWriter(str(folder), {"train": sentences}, topk, vocab_size=100)
    writer.add(["train"] * sentences, np.arange(sentences), np.arange(sentences),
               np.full(sentences, length), arrays)
    writer.finish({"format": cache_format.FORMAT, "version": cache_format.VERSION, "topk": topk})
    return arrays


def damage(path, offset, size=8):
    """Overwrite ``size`` bytes at ``offset`` with 0xff (float16 NaN): same file size."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * size)


def test_damage_is_named_by_block_and_file(tmp_path, monkeypatch):
    """Blocks of 64 bytes: 8 rows of logp.bin. An intact cache verifies and reads back
    what was written; one changed row is refused by its block (row 104: block 13)."""
    monkeypatch.setattr(cache_format, "BLOCK_BYTES", 64)
    arrays = small_cache(tmp_path / "c")
    cache = TeacherCache(str(tmp_path / "c"))
    # ids, logp: 8 rows of 8 bytes a block; index: 3 of 20 bytes; rest, gold: 32 of 2 bytes
    assert cache.verify() == 14 + 25 + 25 + 7 + 7
    offsets, lengths, _ = cache.lookup(["train"] * 40, np.arange(40))
    assert np.array_equal(cache.gather(offsets, lengths, 5)["logp"],
                          arrays["logp"].astype(np.float16))
    damage(tmp_path / "c" / "logp.bin", 104 * 4 * 2)
    with pytest.raises(ValueError) as error:
        TeacherCache(str(tmp_path / "c")).verify()
    assert str(error.value) == (
        f"teacher cache {tmp_path / 'c'} is damaged: block 13 of {tmp_path / 'c' / 'logp.bin'} "
        "fails its checksum; remove it and rebuild it with onmt_qd_teacher_cache")


def test_damaged_or_outdated_cache_is_refused_in_one_line_naming_it(data, teacher, cache,
                                                                   tmp_path):
    """Values corrupted in place (same size): training refuses the cache by name, not
    with a diverging loss; so do -verify and a rebuild into it. A cache made before
    checksums is refused, with what to do."""
    assert command("teacher_cache", "-verify", cache)[0] == 0
    damaged = tmp_path / "damaged"
    shutil.copytree(cache, damaged)
    damage(damaged / "logp.bin", os.path.getsize(damaged / "logp.bin") // 2)
    result = run_cli("train", "-config", data["config"], "-save_model", tmp_path / "student",
                     "-train_steps", 2, "-teacher_cache", damaged, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"onmt_qd_train: error: teacher cache {damaged} is damaged: block 0 of "
        f"{damaged / 'logp.bin'} fails its checksum; remove it and rebuild it with "
        "onmt_qd_teacher_cache")
    assert "Traceback" not in result.stderr
    refused("teacher_cache", "-verify", damaged, message=f"teacher cache {damaged} is damaged")
    refused("teacher_cache", "-verify", cache, "-output", damaged,
            message="-verify checks an existing cache and takes no other option, got -output")
    rebuild = ["-config", data["config"], "-teacher_model", teacher, "-topk", 8, "-output"]
    assert last_error("teacher_cache", *rebuild, damaged).startswith(
        f"onmt_qd_teacher_cache: error: teacher cache {damaged} is damaged: block 0 of")

    old = tmp_path / "old"
    shutil.copytree(cache, old)
    header = json.loads((old / "header.json").read_text())
    del header["checksums"]
    (old / "header.json").write_text(json.dumps(dict(header, version=1)))
    message = (f"teacher cache {old} is version 1 (without checksums), this onmt_qd reads "
               "version 2: remove it and rebuild it with onmt_qd_teacher_cache")
    assert last_error("train", "-config", data["config"], "-save_model", tmp_path / "student",
                      "-teacher_cache", old) == f"onmt_qd_train: error: {message}"
    assert last_error("teacher_cache", *rebuild, old) == f"onmt_qd_teacher_cache: error: {message}"
    assert not glob.glob(str(tmp_path / "student*"))


def last_error(module, *args):
    """The error line of a command that logs before it refuses (no traceback)."""
    code, _, err = command(module, *args)
    assert code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_student_trains_quantized_from_the_cache(data, cache, tmp_path):
    """4-bit training with the cached teacher's loss ends elsewhere than 4-bit training
    without it (same batches)."""
    steps = ["-train_steps", 8, "-valid_steps", 8, "-save_checkpoint_steps", 8, "-quant_bits", 4]
    run_cli("train", "-config", data["config"], "-save_model", tmp_path / "plain", *steps)
    result = run_cli("train", "-config", data["config"], "-save_model", tmp_path / "cached",
                     *steps, "-teacher_cache", cache)
    assert f"Distilling from {cache}" in result.stderr
    plain = load_checkpoint(str(tmp_path / "plain_step_8.pt"))
    cached = load_checkpoint(str(tmp_path / "cached_step_8.pt"))
    assert plain["qd_valid"]["ppl"] != cached["qd_valid"]["ppl"]
    assert np.isfinite(cached["qd_valid"]["ppl"])
    assert any(not torch.equal(plain["qd_shadow"][k], cached["qd_shadow"][k])
               for k in plain["qd_shadow"])


def test_a_cache_error_found_mid_training_is_one_line_without_a_traceback(data, cache,
                                                                          tmp_path, monkeypatch):
    """A cache that passed the checks before the first step but does not hold a batch
    (here: the third batch asked for) ended in OpenNMT-py's traceback, printed by its
    training step's ``except Exception``, before the command's line."""
    asked = []
    real = CachedTeacher.distribution

    def fails_on_the_third(self, batch):
        asked.append(1)
        if len(asked) == 3:
            self._fail("train", 41, "is not in the cache")
        return real(self, batch)
    monkeypatch.setattr(CachedTeacher, "distribution", fails_on_the_third)
    code, _, err = command("train", "-config", data["config"], "-save_model",
                           tmp_path / "student" / "m", "-teacher_cache", cache,
                           "-train_steps", 5, "-hidden_size", 16, "-word_vec_size", 16)
    lines = [line for line in err.strip().splitlines() if "Traceback" in line or
             line.startswith("onmt_qd_train: error")]
    assert code == 2 and len(asked) == 3
    assert lines == ["onmt_qd_train: error: teacher cache " + cache + ": corpus 'train' line 42 "
                     "is not in the cache; the cache was made from other data: rebuild it "
                     "with onmt_qd_teacher_cache"]
