"""A user's own experiment: a recipe file naming a folder of parallel files and a
teacher trained by stock onmt_train, run to a report without training a teacher; and
what such a file gets wrong refused in one line before any stage runs."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import head

TRANSFORMER_STUDENT = {"encoder_type": "transformer", "decoder_type": "transformer",
                       "position_encoding": True, "layers": 1, "hidden_size": 32,
                       "word_vec_size": 32, "heads": 2, "transformer_ff": 64, "dropout": 0.1,
                       "epochs": 2}


def stock_teacher(data, folder):
    """A tiny LSTM teacher trained by OpenNMT-py's own onmt_train: no onmt_qd keys."""
    save = os.path.join(folder, "stock")
    subprocess.run([sys.executable, "-m", "onmt.bin.train", "-config", data["config"],
                    "-save_model", save, *map(str, ("-train_steps", 60, "-valid_steps", 60,
                    "-save_checkpoint_steps", 60, "-hidden_size", 48, "-word_vec_size", 48))],
                   check=True, capture_output=True)
    return save + "_step_60.pt"


def corpus_folder(data, folder):
    """train/valid from the session's data, and two test sets of different sizes."""
    os.makedirs(folder)
    for lang in ("de", "en"):
        for split in ("train", "valid"):
            head(data[f"{split}.{lang}"], os.path.join(folder, f"{split}.{lang}"), 10**6)
        head(data[f"test.{lang}"], os.path.join(folder, f"newstest_a.{lang}"), 20)
        head(data[f"valid.{lang}"], os.path.join(folder, f"newstest_b.{lang}"), 12)
    return folder


def write_recipe(path, **recipe):
    with open(path, "w") as handle:
        yaml.safe_dump(recipe, handle)
    return str(path)


def own_recipe(tmp, data, teacher):
    return dict(
        dataset={"folder": "corpus", "src": "de", "tgt": "en"}, teacher_model=teacher,
        sentencepiece_model=data["spm"],
        train={"batch_size": 32, "optim": "adam", "learning_rate": 0.002, "num_workers": 0,
               "report_every": 10, "seed": 1},
        profiles={"own": {"students": {"transformer": TRANSFORMER_STUDENT},
                          "pm_bits": [4], "qd_bits": [4], "teacher_topk": 4}})


def run_recipe(recipe_file, work):
    return subprocess.run([sys.executable, "-m", "onmt_qd.bin.recipe", recipe_file, "-profile",
                           "own", "-work_dir", work], capture_output=True, text=True)


@pytest.fixture(scope="module")
def own(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    corpus_folder(data, tmp / "corpus")
    teacher = stock_teacher(data, str(tmp))
    recipe_file = write_recipe(tmp / "my_recipe.yaml", **own_recipe(tmp, data, teacher))
    result = run_recipe(recipe_file, str(tmp / "work"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp, teacher, data


def test_own_folder_and_teacher_run_to_a_report_without_training_a_teacher(own):
    tmp, teacher, _ = own
    work = tmp / "work"
    with open(work / "results.json") as handle:
        results = json.load(handle)
    assert list(results["test_sets"]) == ["newstest_a", "newstest_b"]
    assert [results["test_sets"][n]["sentences"] for n in ("newstest_a", "newstest_b")] == [20, 12]
    names = {m["name"] for m in results["models"]}
    assert names == {"teacher", *(f"transformer.{n}" for n in (
        "student_fp", "student_distilled_fp", "pm_quantization_4bit",
        "quantized_distillation_4bit"))}
    assert not os.path.exists(work / "logs" / "teacher.log")  # no teacher was trained
    with open(teacher, "rb") as given, open(work / "models" / "teacher.pt", "rb") as copied:
        assert given.read() == copied.read()
    assert all(row["id"].startswith("transformer.") for row in results["claims"])
    with open(work / "configs" / "transformer.student_fp.yaml") as handle:
        assert yaml.safe_load(handle)["encoder_type"] == "transformer"


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(dataset={"folder": "nowhere", "src": "de", "tgt": "en"}),
     "does not exist"),
    (lambda r: r.update(dataset={"folder": "corpus", "src": "de", "tgt": "fr"}),
     "has no train.fr"),
    (lambda r: r.update(teacher_model="missing.pt"), "teacher_model in"),
    (lambda r: r.update(sentencepiece=True), "sentencepiece_model instead"),
    (lambda r: r["profiles"]["own"].update(teacher={"layers": 1}), "remove one of them"),
    (lambda r: r["profiles"]["own"]["students"].update({"student": {}}), "student family"),
    (lambda r: r["profiles"]["own"]["students"]["transformer"].update(hedas=2),
     "students.transformer options"),
])
def test_a_wrong_recipe_file_is_refused_before_any_stage(own, tmp_path, change, message):
    tmp, teacher, data = own
    recipe = own_recipe(tmp, data, teacher)
    os.symlink(tmp / "corpus", tmp_path / "corpus")
    change(recipe)
    result = run_recipe(write_recipe(tmp_path / "bad.yaml", **recipe), str(tmp_path / "work"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "work" / "data")
