"""A user's own experiment: a recipe file naming a folder of parallel files, a trained
teacher and its SentencePiece model (the session's), run to a report without training a
teacher; students of two families from one profile; and what such a file gets wrong
refused in one line, naming the recipe key, before any stage runs."""
import json
import os

import pytest
import yaml

from conftest import head
from onmt_qd.compat import load_checkpoint
from onmt_qd.fileio import sha256
from onmt_qd.recipe import Pipeline, load_recipe
from test_bad_input import refused

TRANSFORMER_STUDENT = {"encoder_type": "transformer", "decoder_type": "transformer",
                       "position_encoding": True, "layers": 1, "hidden_size": 16,
                       "word_vec_size": 16, "heads": 2, "transformer_ff": 32, "dropout": 0.1,
                       "epochs": 1}
LSTM_STUDENT = {"layers": 1, "hidden_size": 16, "word_vec_size": 16, "epochs": 1}


def corpus_folder(data, folder):
    """train (200 pairs) and valid from the session's data, and two test sets of
    different sizes, named as a user might."""
    os.makedirs(folder)
    for lang in ("de", "en"):
        head(data[f"train.{lang}"], os.path.join(folder, f"train.{lang}"), 200)
        head(data[f"valid.{lang}"], os.path.join(folder, f"valid.{lang}"), 20)
        head(data[f"test.{lang}"], os.path.join(folder, f"newstest_a.{lang}"), 12)
        head(data[f"valid.{lang}"], os.path.join(folder, f"newstest_b.{lang}"), 8)
    return folder


def own_recipe(data, teacher, students):
    """A user's recipe: paths relative to the recipe file's folder or absolute."""
    return {"dataset": {"folder": "corpus", "src": "de", "tgt": "en"},
            "teacher_model": teacher, "sentencepiece_model": data["spm"],
            # bucket_size: OpenNMT-py's default bucket (262144 examples) cycles a
            # 200-line corpus 1300 times before the first step
            "train": {"batch_size": 32, "bucket_size": 256, "optim": "adam",
                      "learning_rate": 0.002, "num_workers": 0, "report_every": 5, "seed": 1},
            "profiles": {"own": {"students": students, "pm_bits": [4], "teacher_topk": 0,
                                 "jobs": 2, "translate_batch_size": 32}}}


def write_recipe(folder, recipe, name="my_recipe.yaml"):
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        yaml.safe_dump(recipe, handle)
    return path


@pytest.fixture(scope="module")
def user_folder(data, teacher, tmp_path_factory):
    """A folder with the user's corpus and a recipe file; the teacher is the session's."""
    folder = tmp_path_factory.mktemp("own")
    corpus_folder(data, folder / "corpus")
    return folder


@pytest.fixture(scope="module")
def own_run(user_folder, data, teacher):
    """The recipe run to its report: one Transformer student family, one PM width."""
    recipe = write_recipe(user_folder, own_recipe(data, teacher,
                                                  {"transformer": TRANSFORMER_STUDENT}))
    work = user_folder / "work"
    Pipeline(recipe, "own", work).run()
    return work


def test_own_folder_and_teacher_run_to_a_report_without_training_a_teacher(own_run, data,
                                                                           teacher):
    with open(own_run / "results.json") as handle:
        results = json.load(handle)
    assert list(results["test_sets"]) == ["newstest_a", "newstest_b"]
    assert [results["test_sets"][n]["sentences"] for n in ("newstest_a", "newstest_b")] == [12, 8]
    assert {m["name"] for m in results["models"]} == {"teacher", *(f"transformer.{n}" for n in (
        "student_fp", "student_distilled_fp", "pm_quantization_4bit"))}
    # the teacher is the given file, copied (its stage's log says so): no training run
    assert sha256(own_run / "models" / "teacher.pt") == sha256(teacher)
    assert not os.path.exists(own_run / "models" / "teacher")  # a training run's folder
    log = (own_run / "logs" / "teacher.log").read_text()
    assert "copied, not trained" in log
    # the data stage took the teacher's vocabulary and SentencePiece model
    with open(own_run / "data_config.yaml") as handle:
        config = yaml.safe_load(handle)
    assert config["src_subword_model"] == data["spm"]
    with open(config["src_vocab"], encoding="utf-8") as handle:
        assert [line.split("\t")[0] for line in handle] == \
            load_checkpoint(teacher)["vocab"]["src"]
    assert all(row["id"].startswith("transformer.") for row in results["claims"])
    with open(own_run / "configs" / "transformer.student_fp.yaml") as handle:
        assert yaml.safe_load(handle)["encoder_type"] == "transformer"


def test_two_student_families_share_the_teacher_and_get_every_model(user_folder, data, teacher,
                                                                    tmp_path):
    """A profile naming an LSTM family (``student``) and a Transformer family: each gets
    its own students, quantized models and report rows, from the one teacher."""
    recipe = own_recipe(data, teacher, {"transformer": TRANSFORMER_STUDENT})
    recipe["profiles"]["own"].update(student=LSTM_STUDENT, qd_bits=[2])
    pipeline = Pipeline(write_recipe(user_folder, recipe, "two.yaml"), "own", tmp_path / "work")
    names = [m.name for m in pipeline.evaluated]
    per_family = ["student_fp", "student_distilled_fp", "pm_quantization_4bit",
                  "quantized_distillation_2bit"]
    assert sorted(names) == sorted(["teacher", *per_family,
                                    *(f"transformer.{n}" for n in per_family)])
    assert {m.family for m in pipeline.evaluated} == {None, "student", "transformer"}
    stages = {s.name: s for s in pipeline.stages}
    assert set(names) <= set(stages) and list(stages).count("teacher") == 1
    assert "teacher" in stages["transformer.quantized_distillation_2bit"].needs
    assert stages["transformer.pm_quantization_4bit"].needs == (
        "transformer.student_distilled_fp",)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(dataset={"folder": "nowhere", "src": "de", "tgt": "en"}),
     "dataset in .*: dataset folder .*nowhere does not exist"),
    (lambda r: r.update(dataset={"folder": "corpus", "src": "de", "tgt": "fr"}),
     "dataset in .*has no train.fr"),
    (lambda r: r.update(dataset={"folder": "corpus", "src": "de"}),
     "dataset in .* must be a dataset's name or {folder, src, tgt}"),
    (lambda r: r.update(dataset="europarl"), "dataset in .*unknown dataset 'europarl'"),
    (lambda r: r.pop("dataset"), "dataset in .* must be"),
    (lambda r: r.update(teacher_model="missing.pt"), "teacher_model in .*missing.pt does not exist"),
    (lambda r: r.update(teacher_model="corpus/train.de"),
     "teacher_model in .*train.de is not an OpenNMT-py checkpoint"),
    (lambda r: r.update(sentencepiece_model="missing.model"), "sentencepiece_model in .*does not exist"),
    (lambda r: r.pop("teacher_model"), "sentencepiece_model in .* is for a given teacher_model"),
    (lambda r: r.update(sentencepiece=True), "sentencepiece: true.*name its sentencepiece_model"),
    (lambda r: r.update(teacher_modle="x.pt"), "unknown key 'teacher_modle'.*teacher_model"),
    (lambda r: r.pop("profiles"), "needs profiles"),
    (lambda r: r["profiles"]["own"].update(teacher={"layers": 1}), "remove one of them"),
    (lambda r: r["profiles"]["own"].pop("students"), "needs student .* or students"),
    (lambda r: r["profiles"]["own"].update(students={"student": {}}),
     "student family 'student'"),
    (lambda r: r["profiles"]["own"].update(students={"a.b": {}}), "student family 'a.b'"),
    (lambda r: r["profiles"]["own"].update(students=[TRANSFORMER_STUDENT]),
     "students in .* must map a family name"),
    (lambda r: r["profiles"]["own"]["students"]["transformer"].update(hedas=2),
     "unknown key 'hedas' in students.transformer options.*heads"),
    (lambda r: r["profiles"]["own"]["students"]["transformer"].update(heads="two"),
     "students.transformer options of profile own.*heads"),
    (lambda r: r["profiles"]["own"].update(pm_bits=[9]), "pm_bits in profile own"),
    (lambda r: r["profiles"]["own"].update(qd_bits=4), "qd_bits in profile own .* a list"),
    (lambda r: r["profiles"]["own"].update(teacher_topk=10**6), "teacher_topk in profile own"),
])
def test_a_wrong_recipe_file_is_refused_in_one_line_naming_its_key(user_folder, data, teacher,
                                                                   edit, message):
    recipe = own_recipe(data, teacher, {"transformer": dict(TRANSFORMER_STUDENT)})
    edit(recipe)
    path = write_recipe(user_folder, recipe, "bad.yaml")
    with pytest.raises(ValueError, match=message) as refusal:
        load_recipe(path, "own")
    assert len(str(refusal.value).splitlines()) == 1


def test_the_command_refuses_a_missing_recipe_file_in_one_line(tmp_path):
    refused("recipe", tmp_path / "mine.yaml", "-work_dir", tmp_path / "work",
            message=f"recipe file {tmp_path / 'mine.yaml'} does not exist")
    assert not (tmp_path / "work").exists()


def test_a_recipe_file_that_is_a_directory_or_not_utf8_is_named_in_one_line(tmp_path):
    (tmp_path / "recipe.yaml").mkdir()
    refused("recipe", tmp_path / "recipe.yaml", "-work_dir", tmp_path / "work",
            message="recipe.yaml is a directory: give the recipe's YAML file")
    (tmp_path / "latin1.yaml").write_bytes("dataset: m\u00fcller\n".encode("latin-1"))
    refused("recipe", tmp_path / "latin1.yaml", "-work_dir", tmp_path / "work",
            message=f"recipe file {tmp_path / 'latin1.yaml'} is not UTF-8 text")
    assert not (tmp_path / "work").exists()


def word_level_copy(teacher, path):
    """The teacher's checkpoint as if trained on words: no sentencepiece transform."""
    import torch

    checkpoint = load_checkpoint(teacher)
    opt = checkpoint["opt"]
    opt.transforms = []
    opt.data = {name: {**corpus, "transforms": []} for name, corpus in opt.data.items()}
    torch.save(checkpoint, path)
    return str(path)


def test_a_subword_model_that_is_not_the_teachers_is_refused(user_folder, data, teacher,
                                                             tmp_path):
    """A sentencepiece_model given for a word-level teacher, or the target language's
    model for the source side, was accepted and three stages ran (a CTranslate2
    teacher's directories: test_ct2_teacher.py)."""
    from onmt_qd.datasets import train_sentencepiece

    english = train_sentencepiece([data["train.en"]], str(tmp_path / "english"), 400)
    for edit, message in (
            ({"sentencepiece_model": english}, "is not the teacher's subword model"),
            ({"teacher_model": word_level_copy(teacher, tmp_path / "words.pt")},
             "was not trained on SentencePiece pieces")):
        recipe = {**own_recipe(data, teacher, {"lstm": dict(LSTM_STUDENT)}), **edit}
        with pytest.raises(ValueError, match=message) as refusal:
            load_recipe(write_recipe(user_folder, recipe, "bad.yaml"), "own")
        assert len(str(refusal.value).splitlines()) == 1


def test_a_transformer_gets_transformer_defaults_for_what_the_recipe_leaves_unset(
        user_folder, data, teacher):
    """Issue 36: Transformer students silently got OpenNMT-py's RNN defaults (dropout
    0.3, uniform +-0.1); a group the recipe sets at any level stays the user's."""
    bare = {k: v for k, v in TRANSFORMER_STUDENT.items() if k != "dropout"}
    recipe = own_recipe(data, teacher, {"transformer": bare, "lstm": dict(LSTM_STUDENT)})
    settings_of = {}
    for gpu in (False, True):
        recipe["profiles"]["own"]["gpu"] = gpu
        loaded, profile = load_recipe(write_recipe(user_folder, recipe, "defaults.yaml"), "own")
        settings_of[gpu] = loaded["family_defaults"], profile.students
    filled, students = settings_of[False]
    # the recipe's train sets optim and learning_rate: only initialisation and dropout
    assert filled == {"students.transformer": {"param_init": 0.0, "param_init_glorot": True,
                                               "dropout": 0.0, "attention_dropout": 0.0}}
    assert students["transformer"]["dropout"] == 0.0 and "dropout" not in students["lstm"]
    assert settings_of[True][0]["students.transformer"]["dropout"] == 0.1  # GPU: cheap masks
