"""Issue 34: a CTranslate2 directory as the teacher. A tiny Transformer trained with two
SentencePiece models (German, English) is exported, and laid out as a converter leaves
an OPUS-MT model (model.bin, config.json, vocabularies, source.spm and target.spm);
onmt_qd translates either; a teacher cache built through CTranslate2 holds what the
checkpoint's holds; onmt_qd_teacher_translate continues after a kill; a user's recipe
file distils the converted directory into students whose export drops into its place;
and what is no usable teacher directory is refused in one line."""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

from pathlib import Path

import pytest
import yaml

from onmt_qd.deploy.ct2 import export, read_manifest
from onmt_qd.fileio import sha256
from onmt_qd.recipe import Pipeline, load_recipe
from test_bad_input import command, lines_of, refused
from test_deploy import TRANSFORMER
from test_recipe_own import TRANSFORMER_STUDENT, corpus_folder, own_recipe, write_recipe

CONVERTER_FILES = ("model.bin", "config.json", "source_vocabulary.json",
                   "target_vocabulary.json")


@pytest.fixture(scope="module")
def teacher_dirs(data, tmp_path_factory):
    """{export, opus, pt, spm_de, spm_en}: the Transformer's checkpoint, its onmt_qd
    export (float32) and a converter-style copy of it with source.spm / target.spm."""
    from onmt_qd.datasets import train_sentencepiece

    folder = tmp_path_factory.mktemp("ct2_teacher")
    spm = {lang: train_sentencepiece([data[f"train.{lang}"]], str(folder / f"spm_{lang}"), 300)
           for lang in ("de", "en")}
    with open(data["config"]) as handle:
        config = yaml.safe_load(handle)
    config.update(src_subword_model=spm["de"], tgt_subword_model=spm["en"], share_vocab=False,
                  src_vocab=str(folder / "vocab.de"), tgt_vocab=str(folder / "vocab.en"),
                  save_data=str(folder))
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    quiet = {"check": True, "capture_output": True,
             "env": {**os.environ, "OMP_NUM_THREADS": "1"}}
    subprocess.run([sys.executable, "-m", "onmt.bin.build_vocab", "-config", str(path),
                    "-n_sample", "-1"], **quiet)
    subprocess.run([sys.executable, "-m", "onmt.bin.train", "-config", str(path),
                    "-save_model", str(folder / "model"), *TRANSFORMER], **quiet)
    paths = {"pt": str(folder / "model_step_40.pt"), "export": str(folder / "export"),
             "opus": str(folder / "opus"), "spm_de": spm["de"], "spm_en": spm["en"],
             "config": str(path)}
    export(paths["pt"], paths["export"], "float32")
    os.makedirs(paths["opus"])
    for name in CONVERTER_FILES:
        shutil.copyfile(os.path.join(paths["export"], name), os.path.join(paths["opus"], name))
    shutil.copyfile(spm["de"], os.path.join(paths["opus"], "source.spm"))
    shutil.copyfile(spm["en"], os.path.join(paths["opus"], "target.spm"))
    return {k: Path(v) if k in ("export", "opus") else v for k, v in paths.items()}


def test_a_converter_directory_translates_as_its_export(teacher_dirs, data, tmp_path):
    outputs = []
    for model in (teacher_dirs["export"], teacher_dirs["opus"]):
        outputs.append(tmp_path / f"{os.path.basename(model)}.txt")
        assert command("translate", "-model", model, "-src", data["test.de"], "-output",
                       outputs[-1], "-beam_size", 2)[0] == 0
    assert lines_of(outputs[0]) == lines_of(outputs[1]) and any(lines_of(outputs[0]))
    assert len(lines_of(outputs[0])) == len(lines_of(data["test.de"]))


def test_a_cache_built_through_ctranslate2_is_the_checkpoints(teacher_dirs, tmp_path):
    """Word-level distillation from a CTranslate2 teacher: onmt_qd_teacher_cache of the
    float32 export holds, position by position, the top-k the checkpoint gives."""
    import numpy as np

    from onmt_qd.distill.cache import TeacherCache, map_files

    caches = {}
    for name in ("pt", "export"):
        assert command("teacher_cache", "-config", teacher_dirs["config"], "-teacher_model",
                       teacher_dirs[name], "-topk", 4, "-output", tmp_path / name)[0] == 0
        cache = TeacherCache(str(tmp_path / name))
        caches[name] = map_files(cache.path, cache.header)
    onmt, ct2 = caches["pt"], caches["export"]
    assert np.array_equal(onmt["gold.bin"], ct2["gold.bin"]) and len(onmt["gold.bin"]) > 1000
    assert np.mean(onmt["ids.bin"][:, 0] == ct2["ids.bin"][:, 0]) > 0.99
    difference = np.abs(onmt["logp.bin"][:, 0].astype(float) - ct2["logp.bin"][:, 0])
    assert difference.mean() < 0.01 and difference.max() < 0.1
    # differentiable quantization learns its points against the live CTranslate2 teacher
    assert command("diffquant", "-config", teacher_dirs["config"], "-model", teacher_dirs["pt"],
                   "-teacher_model", teacher_dirs["export"], "-bits", 2, "-train_steps", 2,
                   "-grad_norm_batches", 1, "-output", tmp_path / "dq.pt")[0] == 0
    assert (tmp_path / "dq.pt").is_file()


def decoder_only(folder):
    """A directory whose model.bin header names CTranslate2's decoder-only spec."""
    os.makedirs(folder)
    name = b"TransformerDecoderSpec"
    with open(os.path.join(folder, "model.bin"), "wb") as handle:
        handle.write(struct.pack("I", 6) + struct.pack("H", len(name) + 1) + name + b"\0" +
                     struct.pack("I", 8) + struct.pack("I", 0) + struct.pack("I", 0))
    return folder


def without_tokenizers(teacher_dirs, folder):
    os.makedirs(folder / "model")
    for name in CONVERTER_FILES:
        shutil.copyfile(os.path.join(teacher_dirs["opus"], name), folder / "model" / name)
    return folder / "model"


def bad_directories(teacher_dirs, folder):
    """(directory, recipe keys, message) of each teacher directory onmt_qd refuses."""
    (folder / "empty").mkdir()
    (folder / "checkpoints").mkdir()
    shutil.copyfile(teacher_dirs["pt"], folder / "checkpoints" / "model_step_40.pt")
    return [
        (folder / "empty", {}, "is not a CTranslate2 model directory (no model.bin)"),
        (folder / "checkpoints", {}, "not a CTranslate2 model (no model.bin): give the "
         "checkpoint file itself"),
        (decoder_only(folder / "lm"), {}, "is a decoder-only language model"),
        (without_tokenizers(teacher_dirs, folder), {}, "cannot tell how it tokenizes"),
        (teacher_dirs["opus"], {"source_sentencepiece_model": teacher_dirs["spm_en"],
                                "target_sentencepiece_model": teacher_dirs["spm_de"]},
         "is not its source tokenizer"),
    ]


def test_directories_that_are_no_teacher_are_refused_in_one_line(teacher_dirs, data,
                                                                 tmp_path):
    """By the recipe when it loads, and by onmt_qd_translate before it translates."""
    corpus_folder(data, tmp_path / "corpus")
    for directory, keys, message in bad_directories(teacher_dirs, tmp_path):
        recipe = {**ct2_recipe(data, directory), **keys}
        with pytest.raises(ValueError, match=re.escape(message)) as refusal:
            load_recipe(write_recipe(tmp_path, recipe, "bad.yaml"), "own")
        assert len(str(refusal.value).splitlines()) == 1
        if not keys:
            refused("translate", "-model", directory, "-src", data["test.de"], "-output",
                    tmp_path / "out.txt", message=message)
    assert not (tmp_path / "out.txt").exists()


def translate_command(model, source, output, *options):
    return [sys.executable, "-m", "onmt_qd.bin.teacher_translate", "-model", str(model),
            "-src", str(source), "-output", str(output), "-beam_size", "2", *map(str, options)]


def test_teacher_translations_continue_after_a_kill(teacher_dirs, data, tmp_path):
    """Killed once its first chunk is written, a rerun translates only the chunks not
    written yet, and the result is the uninterrupted run's; other settings start over."""
    source = tmp_path / "train.de"
    lines = lines_of(data["train.de"])
    source.write_text("\n".join((lines * 3)[:1500]) + "\n", encoding="utf-8")
    output, parts = tmp_path / "out.en", tmp_path / "out.en.parts"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(translate_command(teacher_dirs["opus"], source, output,
                                             "-chunk_lines", 25), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while run.poll() is None and not (parts.is_dir() and any(parts.glob("chunk*.out"))):
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait()
    written = len(list(parts.glob("chunk*.out")))
    assert 1 <= written < 60 and not output.exists()
    resumed = subprocess.run(translate_command(teacher_dirs["opus"], source, output,
                                               "-chunk_lines", 25), env=env, check=True,
                             capture_output=True, text=True).stdout
    assert f"{written} of 60 chunks already translated" in resumed
    assert "chunk 60/60, 1,500/1,500 sentences translated" in resumed
    assert not parts.exists()
    whole = tmp_path / "whole.en"
    subprocess.run(translate_command(teacher_dirs["opus"], source, whole, "-chunk_lines", 25),
                   env=env, check=True, capture_output=True)
    assert lines_of(output) == lines_of(whole) and len(lines_of(whole)) == 1500

    parts.mkdir()  # chunks of another beam are not taken
    (parts / "signature.json").write_text(json.dumps({"beam_size": 5}))
    (parts / "chunk000000.out").write_text("stale\n" * 25)
    again = subprocess.run(translate_command(teacher_dirs["opus"], source, output,
                                             "-chunk_lines", 25), env=env, check=True,
                           capture_output=True, text=True)
    assert "translating again from the start" in again.stderr
    assert lines_of(output) == lines_of(whole)


def ct2_recipe(data, teacher):
    """own_recipe with a CTranslate2 teacher: one Transformer student family, 4-bit PM
    and quantized distillation, students distilled on the teacher's translations and
    from its cached top-4 (word-level: CTranslate2 fills the cache)."""
    recipe = own_recipe(data, str(teacher), {"transformer": dict(TRANSFORMER_STUDENT)})
    del recipe["sentencepiece_model"]
    recipe["profiles"]["own"].update(distill_data="teacher", qd_bits=[4], teacher_topk=4)
    return recipe


def test_a_recipe_distils_a_converted_teacher_into_a_drop_in_student(teacher_dirs, data,
                                                                      tmp_path):
    """The converter-style directory (two tokenizers found in it) is the teacher of a
    user's recipe run to its report; the students tokenize with its SentencePiece
    models and index its vocabularies, and the 4-bit student's export, put in the place
    of the teacher's files, translates with the teacher's tokenizers as a client of the
    directory would."""
    corpus_folder(data, tmp_path / "corpus")
    work = tmp_path / "work"
    Pipeline(write_recipe(tmp_path, ct2_recipe(data, teacher_dirs["opus"])), "own",
             work).run()
    with open(work / "data_config.yaml") as handle:
        config = yaml.safe_load(handle)
    assert (config["src_subword_model"], config["tgt_subword_model"]) == (
        os.path.join(teacher_dirs["opus"], "source.spm"),
        os.path.join(teacher_dirs["opus"], "target.spm"))
    assert config["share_vocab"] is False
    for side, stem in (("src", "source"), ("tgt", "target")):  # the students' = the teacher's
        with open(config[f"{side}_vocab"], encoding="utf-8") as handle:
            assert [line.split("\t")[0] for line in handle] == json.loads(
                (teacher_dirs["opus"] / f"{stem}_vocabulary.json").read_text())
    assert "teacher_cache" in (work / "configs" /
                               "transformer.student_distilled_fp.yaml").read_text()
    translations = lines_of(work / "data" / "train.teacher.en")
    assert len(translations) == 200 and any(translations)
    assert "200/200 sentences translated" in (work / "logs" /
                                              "teacher_translations.log").read_text()
    with open(work / "results.json") as handle:
        results = json.load(handle)
    assert {m["name"] for m in results["models"]} == {"teacher", *(f"transformer.{n}" for n in (
        "student_fp", "student_distilled_fp", "pm_quantization_4bit",
        "quantized_distillation_4bit"))}
    teacher = next(m for m in results["models"] if m["name"] == "teacher")
    assert teacher["path"].endswith("teacher.ct2")
    # deployed as given: timed once, its deployed run the reference run, one report row
    assert [r["role"] for r in teacher["runs"]] == ["reference", "deployed"]
    assert teacher["runs"][1]["same_run_as"] == "reference"
    assert (work / "report.md").read_text().count("| teacher (CTranslate2") == 1

    package = tmp_path / "package"  # the teacher as its users run it...
    shutil.copytree(teacher_dirs["opus"], package)
    student = work / "deployed" / "transformer.quantized_distillation_4bit.ct2"
    for name in CONVERTER_FILES:  # ...and the student's files in its place
        shutil.copyfile(student / name, package / name)
    manifest = read_manifest(student)  # the student's tokenizers are the teacher's
    assert sha256(student / manifest["source_spm"]) == sha256(package / "source.spm")
    assert sha256(student / manifest["target_spm"]) == sha256(package / "target.spm")
    sentences = lines_of(data["test.de"])
    dropped_in = client_translation(package, "source.spm", "target.spm", sentences)
    assert dropped_in == client_translation(student, manifest["source_spm"],
                                            manifest["target_spm"], sentences)
    assert dropped_in != client_translation(teacher_dirs["opus"], "source.spm",
                                            "target.spm", sentences)


def client_translation(folder, source_spm, target_spm, sentences):
    """What a program using the directory does: SentencePiece, CTranslate2, beam 5."""
    import ctranslate2
    import sentencepiece

    source = sentencepiece.SentencePieceProcessor(model_file=str(folder / source_spm))
    target = sentencepiece.SentencePieceProcessor(model_file=str(folder / target_spm))
    results = ctranslate2.Translator(str(folder)).translate_batch(
        [source.encode(s, out_type=str) for s in sentences], beam_size=5)
    return [target.decode(r.hypotheses[0]) for r in results]


def test_a_marian_ordered_vocabulary_is_rebuilt_whole(data, tmp_path):
    """A Marian model's vocabulary (</s> first, <pad>, no <s> or <blank>) becomes the
    students' with every token of it, in OpenNMT-py's order; a token its vocabulary
    files cannot hold is refused in one line."""
    from onmt_qd.recipe.data import teacher_vocabulary
    from onmt_qd.recipe.runner import RecipeError

    with open(data["config"]) as handle:
        config = yaml.safe_load(handle)
    with open(config["src_vocab"], encoding="utf-8") as handle:
        pieces = [line.split("\t")[0] for line in handle if not line.startswith("<")]
    marian = ["</s>", "<unk>", *pieces, "<pad>"]
    config.update(src_vocab=str(tmp_path / "vocab.src"), tgt_vocab=str(tmp_path / "vocab.tgt"))
    options = teacher_vocabulary({"src": marian, "tgt": marian}, config, "marian",
                                 same_order=False)
    assert options["src_vocab_size"] == len(marian) + 2  # room for <s> and <blank>
    with pytest.raises(RecipeError, match="holds 'a b', a token OpenNMT-py's vocabulary"):
        teacher_vocabulary({"src": [*marian, "a b"], "tgt": marian}, config, "marian",
                           same_order=False)
