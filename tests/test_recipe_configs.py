"""Recipe files are checked before anything trains: a typo in a profile or in the
students' options must not wait for the teacher's minutes of training to show."""
import os
import shutil

import pytest
import yaml

from onmt_qd.recipe import RECIPES_DIR, Pipeline, RecipeError, load_recipe
from onmt_qd.opts import OptionError


def shipped():
    for name in sorted(os.listdir(RECIPES_DIR)):
        with open(os.path.join(RECIPES_DIR, name, "recipe.yaml")) as handle:
            for profile in yaml.safe_load(handle)["profiles"]:
                yield name, profile


@pytest.mark.parametrize("name,profile", list(shipped()))
def test_every_shipped_profile_names_only_known_options(name, profile):
    recipe, settings = load_recipe(name, profile)
    assert settings.families() and all(settings.teacher["layers"] >= options["layers"]
                                       for _, options in settings.families())


def edited_recipe(tmp_path, monkeypatch, edit):
    shutil.copytree(os.path.join(RECIPES_DIR, "multi30k"), tmp_path / "multi30k",
                    dirs_exist_ok=True)
    path = tmp_path / "multi30k" / "recipe.yaml"
    recipe = yaml.safe_load(path.read_text())
    edit(recipe)
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr("onmt_qd.recipe.profile.RECIPES_DIR", str(tmp_path))


def test_typo_in_student_options_fails_before_training(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch,
                  lambda r: r["profiles"]["quick"]["student"].update(hiden_size=64))
    with pytest.raises(OptionError, match=r"unknown key 'hiden_size' in student options "
                       r"of profile quick .*did you mean 'hidden_size'"):
        Pipeline("multi30k", "quick", tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_typo_in_profile_key_fails_with_a_suggestion(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch,
                  lambda r: r["profiles"]["quick"].update(diffquant_step=10))
    with pytest.raises(RecipeError, match=r"unknown key 'diffquant_step' in "
                       r"profile quick .*did you mean 'diffquant_steps'"):
        load_recipe("multi30k", "quick")


def signatures(tmp_path, profile="quick"):
    """Each stage's signature (evaluate's, deploy's and report's name the test sets,
    which only exist after the data stage)."""
    return {s.name: s.signature for s in Pipeline("multi30k", profile, tmp_path / "work").stages
            if s.name not in ("evaluate", "deploy", "report")}


def test_edited_settings_rerun_the_stages_they_change_and_no_others(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch, lambda r: None)
    before = signatures(tmp_path)
    edited_recipe(tmp_path, monkeypatch,
                  lambda r: r["profiles"]["quick"]["student"].update(epochs=9))
    after = signatures(tmp_path)
    changed = {name for name in before if before[name] != after[name]}
    students = {name for name in before if name.startswith(("student", "quantized_"))}
    assert students and changed == students  # data, teacher, PM, diffquant: unchanged
    edited_recipe(tmp_path, monkeypatch,
                  lambda r: r["profiles"]["quick"].update(spm_vocab_size=3000))
    assert signatures(tmp_path)["data"] != before["data"]
    # another profile in the same work folder: its data and teacher are not "done already"
    mini = signatures(tmp_path, "mini")
    assert mini["data"] != before["data"] and mini["teacher"] != before["teacher"]
