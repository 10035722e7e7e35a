"""The inference library (onmt_qd/inference): onmt_qd_eval reads and builds its model
once; a long translation says where it is on standard error, never on standard
output, and counting it changes no output."""
import gc
import os
import re
import warnings

import pytest
import torch

import onmt.model_builder
import onmt_qd.models
import onmt_qd.qdz
from conftest import run_cli
from onmt_qd import progress
from onmt_qd.inference.engine import (inference_engine, load_model, translate,
                                      translate_aligned)
from onmt_qd.inference.evaluate import evaluate
from onmt_qd.opts import parse, translate_parser

PROGRESS = re.compile(r"^onmt_qd_translate: (\d+)/(\d+) sentences translated, "
                      r"[\d.]+ sentences/s, about [\d.]+ (s|min) left$")


@pytest.fixture(scope="module")
def packed(teacher, tmp_path_factory):
    """The teacher quantized to 4 bits and compressed (.qdz)."""
    folder = tmp_path_factory.mktemp("packed")
    run_cli("quantize", "-model", teacher, "-bits", 4, "-output", folder / "q4.pt")
    run_cli("compress", "-model", folder / "q4.pt", "-output", folder / "q4.qdz")
    return str(folder / "q4.qdz")


@pytest.fixture
def with_blanks(data, tmp_path):
    """The test source with blank lines among its sentences (and at both ends)."""
    with open(data["test.de"], encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    lines = ["", *lines[:7], "", "  ", *lines[7:], ""]
    path = tmp_path / "blanks.de"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path), lines


def counted(monkeypatch, module, name):
    """Count the calls of ``module.name`` (still calling it)."""
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("kind", ["checkpoint", "compressed"])
def test_eval_reads_and_builds_the_model_once(kind, teacher, packed, data, monkeypatch):
    model = teacher if kind == "checkpoint" else packed
    loads = counted(monkeypatch, torch, "load")
    decodes = counted(monkeypatch, onmt_qd.qdz, "checkpoint_from_compressed")
    builds = counted(monkeypatch, onmt_qd.models, "build_base_model")
    shape_checks = []  # a .qdz's shape check builds on the meta device: no memory, no weights
    check_shapes = onmt_qd.qdz.check_model_shapes
    monkeypatch.setattr(onmt_qd.qdz, "check_model_shapes",
                        lambda c: shape_checks.append(1) or check_shapes(c))
    onmt_builds = counted(monkeypatch, onmt.model_builder, "build_base_model")
    result = evaluate(model, data["test.de"], data["test.en"], beam_size=2, batch_size=8)
    assert (len(loads), len(decodes)) == ((1, 0) if kind == "checkpoint" else (0, 1))
    assert (len(builds) - len(shape_checks), len(onmt_builds)) == (1, 0)
    assert len(shape_checks) == (kind == "compressed")
    assert result["sentences"] == 20 and result["ppl"] > 1 and result["n_params"] > 0


def test_evaluations_leave_no_file_open(teacher, data):
    """Each engine's output sink and log opened no file that the next one drops unclosed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(2):
            evaluate(teacher, data["test.de"], data["test.en"], beam_size=1, batch_size=20)
        gc.collect()
    assert not [w.message for w in caught if issubclass(w.category, ResourceWarning)]


def test_counting_progress_changes_no_output(teacher, with_blanks):
    """Translation with progress counted batch by batch gives exactly the output of
    OpenNMT-py's uncounted pass: same order, blank lines kept, -n_best of each."""
    path, lines = with_blanks
    opt = parse(translate_parser(), ["-model", teacher, "-src", path, "-output", "-",
                                     "-beam_size", "3", "-n_best", "2", "-batch_size", "3",
                                     "-max_length", "30"])
    count = progress.Progress("test", 20)
    with inference_engine(opt, lines, load_model(teacher, opt)) as engine:
        plain = translate_aligned(engine, lines)
        with_progress = translate_aligned(engine, lines, count)
    assert with_progress == plain
    assert count.done == 20  # every non-blank line, counted as its batch finished
    predictions = plain[1]
    assert len(predictions) == len(lines) and all(len(p) == 2 for p in predictions)
    assert [p == ["", ""] for p in predictions] == [not line.strip() for line in lines]


def test_progress_goes_to_stderr_never_stdout(teacher, with_blanks, tmp_path, monkeypatch,
                                              capfd):
    path, lines = with_blanks
    args = ["-model", teacher, "-src", path, "-beam_size", "2", "-n_best", "2",
            "-batch_size", "3", "-max_length", "30"]
    monkeypatch.setattr(progress, "REPORT_SECONDS", 1e9)  # a short run stays silent
    translate(parse(translate_parser(), [*args, "-output", str(tmp_path / "quiet.txt")]))
    assert not [line for line in capfd.readouterr().err.splitlines() if PROGRESS.match(line)]
    monkeypatch.setattr(progress, "REPORT_SECONDS", 0)  # say where it is after every batch
    translate(parse(translate_parser(), [*args, "-output", "-"]))
    out, err = capfd.readouterr()
    assert out == (tmp_path / "quiet.txt").read_text(encoding="utf-8")
    assert len(out.splitlines()) == 2 * len(lines)
    reports = [PROGRESS.match(line) for line in err.splitlines() if PROGRESS.match(line)]
    done = [int(m.group(1)) for m in reports]
    assert len(done) >= 2 and done == sorted(done) and done[-1] < 20
    assert {int(m.group(2)) for m in reports} == {20}


def test_an_ensemble_of_one_model_with_itself_translates_as_the_model(teacher, data, tmp_path):
    """Several -model are averaged by OpenNMT-py's EnsembleModel, as onmt_translate does
    (one model twice averages to its own probabilities)."""
    args = ["-src", data["test.de"], "-beam_size", "2", "-max_length", "30"]
    translate(parse(translate_parser(), ["-model", teacher, *args,
                                         "-output", str(tmp_path / "one.txt")]))
    translate(parse(translate_parser(), ["-model", teacher, teacher, *args,
                                         "-output", str(tmp_path / "two.txt")]))
    assert (tmp_path / "two.txt").read_text() == (tmp_path / "one.txt").read_text()


@pytest.mark.parametrize("option, message", [
    (["-world_size", "2"], "-world_size 2: this translates in one process"),
    (["-quant_type", "bnb_8bit"], "-quant_type bnb_8bit: OpenNMT-py's bitsandbytes")])
def test_what_the_engine_would_not_do_is_refused_in_one_line(option, message, teacher, data,
                                                            tmp_path):
    from test_bad_input import refused

    refused("translate", "-model", teacher, "-src", data["test.de"], "-output",
            tmp_path / "out.txt", *option, message=message)
    assert not (tmp_path / "out.txt").exists()


def test_several_test_sets_are_each_scored_as_alone_and_pooled(teacher, data, tmp_path):
    """Two sets in one evaluation: each set's scores and translations are exactly those
    of evaluating it alone (its own batches), the pooled ones those of the concatenation;
    the model is built once."""
    from onmt_qd.evaluate.metrics import bleu_chrf
    from onmt_qd.fileio import read_text_lines as read_lines

    with open(data["test.de"], encoding="utf-8") as src, \
            open(data["test.en"], encoding="utf-8") as tgt:
        sources, references = src.readlines(), tgt.readlines()
    files = []
    for name, part in (("a", slice(0, 7)), ("b", slice(7, None))):
        (tmp_path / f"{name}.de").write_text("".join(sources[part]), encoding="utf-8")
        (tmp_path / f"{name}.en").write_text("".join(references[part]), encoding="utf-8")
        files.append((str(tmp_path / f"{name}.de"), str(tmp_path / f"{name}.en")))
    both = evaluate(teacher, [f[0] for f in files], [f[1] for f in files], beam_size=3,
                    batch_size=4, output=str(tmp_path / "both.hyp"))
    translations = []
    for (src, tgt), scored in zip(files, both["test_sets"]):
        alone = evaluate(teacher, src, tgt, beam_size=3, batch_size=4,
                         output=str(tmp_path / "alone.hyp"))
        assert (scored["bleu"], scored["chrf"]) == (alone["bleu"], alone["chrf"])
        assert scored["sentences"] == alone["sentences"] and scored["src"] == src
        translations += read_lines(tmp_path / "alone.hyp")
    assert read_lines(tmp_path / "both.hyp") == translations
    pooled = bleu_chrf(translations, [line.rstrip("\n") for line in references])
    assert (both["bleu"], both["chrf"]) == (round(pooled[0], 2), round(pooled[1], 2))
    assert both["sentences"] == 20 and set(both["machine"]) >= {"cores", "busy"}


def test_test_sets_without_their_references_are_refused_in_one_line(teacher, data, tmp_path):
    result = run_cli("eval", "-model", teacher, "-src", data["test.de"], data["test.de"],
                     "-tgt", data["test.en"], "-json", tmp_path / "out.json", check=False)
    assert result.returncode == 2 and "2 -src files and 1 -tgt files" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not os.listdir(tmp_path)
