"""Sequence-level distillation in a recipe (distill_data: teacher): the teacher's
translations have exactly one line per source line (blank lines included), and a
student trains on them (the chunks they are made in: test_ct2_teacher.py)."""

import pytest
import yaml

from conftest import MULTI30K, head, needs_multi30k
from test_recipe_configs import edited_recipe
from onmt_qd.recipe import Pipeline, RecipeError, load_recipe

BLANK = {3, 17}  # blank on both sides
BLANK_SOURCE = 25  # whitespace only in the source


def stand_in_mirror(folder):
    folder.mkdir()
    for split, n in (("train", 40), ("val", 20), ("test_2016_flickr", 10)):
        for lang in ("de", "en"):
            head(f"{MULTI30K}/{split}.{lang}", folder / f"{split}.{lang}", n)
    for lang in ("de", "en"):
        lines = (folder / f"train.{lang}").read_text(encoding="utf-8").splitlines()
        for i in BLANK:
            lines[i] = ""
        if lang == "de":
            lines[BLANK_SOURCE] = "  "
        (folder / f"train.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_profile(recipe):
    profile = recipe["profiles"]["mini"]
    # bucket_size: the recipe's (10000 examples) reads the 40 lines 250 times before the
    # first step
    profile.update(subset={"train": 40, "valid": 20, "test": 10}, spm_vocab_size=300,
                   distill_data="teacher", train={"bucket_size": 64})
    profile["teacher"].update(hidden_size=32, word_vec_size=32, epochs=1)
    profile["student"].update(hidden_size=16, word_vec_size=16, epochs=1, distill_weight=0.0)


MONO = ["Ein Hund läuft im Park.", "", "Zwei Kinder spielen Fußball.", "Eine Frau liest."]


def with_mono(recipe):
    tiny_profile(recipe)
    recipe["mono"] = "mono.de"  # beside the recipe file
    recipe["profiles"]["mini"]["filter_worst"] = 0.1


@needs_multi30k
def test_teacher_translations_are_aligned_and_a_student_trains_on_them(tmp_path, monkeypatch,
                                                                       capsys):
    """Of the training source, then of the recipe's monolingual text (its blank line
    left out): the distilled student trains on both, less the tenth of the translated
    pairs the teacher scores lowest (filter_worst); another filter does not translate
    again."""
    edited_recipe(tmp_path, monkeypatch, with_mono)
    (tmp_path / "multi30k" / "mono.de").write_text("\n".join(MONO) + "\n", encoding="utf-8")
    stand_in_mirror(tmp_path / "mirror")
    work = tmp_path / "work"
    pipeline = Pipeline("multi30k", "mini", work, mirror=str(tmp_path / "mirror"))
    names = [s.name for s in pipeline.stages]
    assert "teacher_translations" in names and "teacher_cache" not in names  # weight 0
    pipeline.run(["data", "teacher", "teacher_translations", "teacher_translations_filter",
                  "student_distilled_fp"])

    source = (work / "data" / "distill.de").read_text(encoding="utf-8").split("\n")[:-1]
    assert source[:40] == (work / "data" / "train.de").read_text(
        encoding="utf-8").split("\n")[:40] and source[40:] == [m for m in MONO if m]
    distilled = (work / "data" / "train.teacher.en").read_text(encoding="utf-8").split("\n")
    assert distilled[-1] == "" and len(distilled[:-1]) == len(source) == 43
    distilled = distilled[:-1]
    assert {i for i, line in enumerate(distilled) if not line} >= BLANK | {BLANK_SOURCE}
    log = (work / "logs" / "teacher_translations.log").read_text()
    assert "chunk 1/1, 43/43 sentences translated" in log
    assert not (work / "data" / "train.teacher.en.parts").exists()

    config = yaml.safe_load((work / "configs" / "student_distilled_fp.yaml").read_text())
    assert config["data"]["train"]["path_tgt"] == str(work / "data" / "distill.kept.en")
    assert config["data"]["train"]["path_src"] == str(work / "data" / "distill.kept.de")
    assert "distill_src" not in config
    scores = [float(v) for v in (work / "data" / "train.teacher.en.scores").read_text().split()]
    kept = (work / "data" / "distill.kept.de").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(scores) == 43 and len(kept) == 39  # 40 scored (3 blank), the 4 worst dropped
    lowest = sorted((s, i) for i, s in enumerate(scores) if source[i].strip())[:4]
    assert not {source[i] for _, i in lowest} & set(kept)
    assert "kept 39 of 43 pairs (dropped 4 by score, 0 more by length ratio)" in \
        (work / "logs" / "teacher_translations_filter.log").read_text()

    def filter_more(recipe):  # another filter: the translations are kept, refiltered
        with_mono(recipe)
        recipe["profiles"]["mini"]["filter_worst"] = 0.2
    edited_recipe(tmp_path, monkeypatch, filter_more)
    capsys.readouterr()
    Pipeline("multi30k", "mini", work, mirror=str(tmp_path / "mirror")).run(
        ["data", "teacher", "teacher_translations", "teacher_translations_filter"])
    assert "teacher_translations: done already, skipped" in capsys.readouterr().out
    assert "kept 35 of 43 pairs" in \
        (work / "logs" / "teacher_translations_filter.log").read_text()
    assert "teacher_cache" not in config and "teacher_model" not in config
    assert (work / "models" / "student_distilled_fp.pt").exists()


def test_unknown_distill_data_fails_before_training(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch,
                  lambda recipe: recipe["profiles"]["quick"].update(distill_data="teachers"))
    with pytest.raises(RecipeError, match="distill_data .* must be one of gold, teacher"):
        load_recipe("multi30k", "quick")


def test_mono_text_needs_students_that_learn_from_translations(tmp_path, monkeypatch):
    def edit(recipe):
        recipe["mono"] = "mono.de"
    edited_recipe(tmp_path, monkeypatch, edit)
    with pytest.raises(RecipeError, match="mono in .* is not a file"):
        load_recipe("multi30k", "quick")
    (tmp_path / "multi30k" / "mono.de").write_text("Ein Satz.\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="has distill_data: gold: set distill_data: teacher"):
        load_recipe("multi30k", "quick")


@needs_multi30k
def test_teacher_average_gives_the_students_the_mean_of_its_last_epochs(tmp_path,
                                                                         monkeypatch):
    import torch

    from onmt_qd.compat import load_checkpoint

    def two_epochs(recipe):
        tiny_profile(recipe)
        recipe["profiles"]["mini"]["teacher"]["epochs"] = 2
        recipe["profiles"]["mini"]["teacher_average"] = 2
    edited_recipe(tmp_path, monkeypatch, two_epochs)
    stand_in_mirror(tmp_path / "mirror")
    work = tmp_path / "work"
    Pipeline("multi30k", "mini", work, mirror=str(tmp_path / "mirror")).run(["data", "teacher"])
    epochs = sorted((work / "models" / "teacher").glob("model_step_*.pt"),
                    key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert len(epochs) == 2
    first, last = (load_checkpoint(str(p)) for p in epochs)
    teacher = load_checkpoint(str(work / "models" / "teacher.pt"))
    assert "optim" not in teacher and teacher["vocab"] == last["vocab"]
    for part in ("model", "generator"):
        for name, weight in teacher[part].items():
            torch.testing.assert_close(weight, (first[part][name] + last[part][name]) / 2)
    assert any(not torch.equal(first["model"][n], last["model"][n]) for n in first["model"])
    assert "the mean of model_step_" in (work / "logs" / "teacher.log").read_text()


def test_teacher_average_is_refused_beyond_the_teachers_epochs(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch,
                  lambda recipe: recipe["profiles"]["quick"].update(teacher_average=7))
    with pytest.raises(RecipeError, match="teacher_average 7 .* is more than the teacher's "
                       "epochs"):
        load_recipe("multi30k", "quick")


def test_filter_pairs_drops_by_length_ratio_and_keeps_blank_pairs(tmp_path):
    from onmt_qd.recipe.data import filter_pairs

    sources = ["ein kleiner Hund", "", "zwei Katzen schlafen hier", "ja"]
    targets = ["a small dog", "", "", "yes yes yes yes yes"]
    for name, lines in (("src", sources), ("tgt", targets)):
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "scores").write_text("-0.1\n0\n-0.2\n-0.3\n")
    kept = (str(tmp_path / "kept.src"), str(tmp_path / "kept.tgt"))
    line = filter_pairs(str(tmp_path / "src"), str(tmp_path / "tgt"), str(tmp_path / "scores"),
                        kept, 0.0, 3.0)
    assert (tmp_path / "kept.tgt").read_text(encoding="utf-8").split("\n")[:-1] == \
        ["a small dog", ""]
    assert line == "kept 2 of 4 pairs (dropped 0 by score, 2 more by length ratio)"
