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


class Ran(Exception):
    """A stage's command, caught instead of run."""


def test_world_size_gives_training_and_the_cache_build_cpu_processes(tmp_path, monkeypatch):
    """world_size 2 on the CPU: every training stage and the cache build run 2 gloo
    processes, each on its own port; with 2 stages side by side on 8 cores, 2 threads
    each; a student trained so is another model than one process's (twice the batch)."""
    before = signatures(tmp_path / "one")
    edited_recipe(tmp_path, monkeypatch, lambda r: r["profiles"]["quick"].update(world_size=2))
    monkeypatch.setattr("onmt_qd.recipe.runner.usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("onmt_qd.recipe.stages.data_config", lambda work: {"data": {}})
    pipeline = Pipeline("multi30k", "quick", tmp_path / "work")

    def command(stage, args, log_name=None):
        raise Ran(yaml.safe_load(open(args[args.index("-config") + 1])))

    monkeypatch.setattr(pipeline, "command", command)
    stages = {stage.name: stage for stage in pipeline.stages}
    ports = set()
    for name in ("teacher", "teacher_cache", "quantized_distillation_2bit"):
        with pytest.raises(Ran) as ran:
            stages[name].run()
        config = ran.value.args[0]
        assert (config["world_size"], config["gpu_backend"]) == (2, "gloo"), name
        ports.add(config["master_port"])
    assert len(ports) == 3
    assert pipeline.runner.command_environment()["OMP_NUM_THREADS"] == "2"
    assert stages["quantized_distillation_2bit"].signature != before["quantized_distillation_2bit"]
    assert stages["teacher_cache"].signature == before["teacher_cache"]


@pytest.mark.parametrize("size, message", [
    ("all", "world_size all in profile quick .* means every visible GPU, for a profile with "
     "gpu: true"),
    (0, "world_size in profile quick .* must be a whole number >= 1 or all")])
def test_a_world_size_the_profile_cannot_use_is_refused(tmp_path, monkeypatch, size, message):
    edited_recipe(tmp_path, monkeypatch, lambda r: r["profiles"]["quick"].update(world_size=size))
    with pytest.raises(RecipeError, match=message):
        load_recipe("multi30k", "quick")


def test_world_size_all_is_every_visible_gpu(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch, lambda r: r["profiles"]["gpu"].update(world_size="all"))
    monkeypatch.setattr("onmt_qd.recipe.stages._cuda_devices", lambda: 4)
    options = Pipeline("multi30k", "gpu", tmp_path / "work").process_options()
    assert (options["world_size"], options["gpu_ranks"]) == (4, [0, 1, 2, 3])
    edited_recipe(tmp_path, monkeypatch, lambda r: r["profiles"]["gpu"].update(world_size=8))
    with pytest.raises(RecipeError, match="world_size 8 in profile gpu: torch sees 4 GPUs"):
        Pipeline("multi30k", "gpu", tmp_path / "work")


def test_the_evaluate_stage_shows_the_sentences_of_the_models_still_running(tmp_path):
    """Issue 36: "N/5 models evaluated" stood still for 17 minutes; each running
    model's own progress line (onmt_qd_eval's, in its log) now shows beside it."""
    from types import SimpleNamespace

    from onmt_qd.recipe.evaluation_stages import models_done
    from onmt_qd.recipe.identity import TEACHER, ModelId

    for folder in ("eval", "logs"):
        (tmp_path / folder).mkdir()
    (tmp_path / "eval" / "teacher.json").write_text("{}")
    (tmp_path / "logs" / "evaluate.student_fp.log").write_text(
        "onmt_qd_eval: 1,200/2,532 sentences translated, 40.1 sentences/s, about 33 s left\n")
    stub = SimpleNamespace(path=lambda *parts: str(tmp_path.joinpath(*parts)))
    models = [TEACHER, ModelId("student_fp"), ModelId("pm_quantization", 4)]
    line, done = models_done(stub, "eval", models, "evaluated", "evaluate")
    assert line == "1/3 models evaluated; student_fp 1,200/2,532 sentences"
    assert done == pytest.approx(1 / 3)


def test_the_keys_reference_is_what_the_code_accepts():
    """docs/recipe_keys.md is made from RECIPE_KEYS and Profile; a key added to the code
    without its line (or a changed default) fails here."""
    from onmt_qd.recipe.profile import keys_reference

    with open(os.path.join(os.path.dirname(RECIPES_DIR), "docs", "recipe_keys.md")) as handle:
        assert handle.read() == keys_reference()
