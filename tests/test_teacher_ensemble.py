"""Issue 35 item 2: an ensemble of teachers. Several -teacher_model checkpoints teach the
mean of their members' probabilities (live, and in the cache), onmt_qd_eval and the
deploy stage score an ensemble as onmt_translate decodes it, a recipe's
teacher_ensemble trains the other members from the next seeds, and a CTranslate2
directory in an ensemble is refused in one line."""
import json
import shutil
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import head, needs_multi30k, run_cli
from onmt_qd.distill import load_teacher, teacher_forced_logits
from onmt_qd.distill.cache_build import build_teacher_cache, teacher_digest
from onmt_qd.distill.rules import check_teacher_model
from onmt_qd.distill.teacher import CachedTeacher
from onmt_qd.recipe import Pipeline, RecipeError, load_recipe
from test_recipe_configs import edited_recipe
from test_recipe_distill_data import stand_in_mirror
from test_recipe_own import TRANSFORMER_STUDENT, corpus_folder, own_recipe, write_recipe
from test_teacher_cache import PAD, cache_opts, run_vocabs, training_batches


@pytest.fixture(scope="module")
def members(teacher, tmp_path_factory):
    """(the fixture teacher, its epoch-2 checkpoint, a byte copy of the teacher)."""
    epochs = sorted(Path(teacher).parent.glob("model_step_*.pt"),
                    key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    copy = tmp_path_factory.mktemp("ensemble") / "copy.pt"
    shutil.copyfile(teacher, copy)
    return teacher, str(epochs[1]), str(copy)


def first_batch(data):
    opt = cache_opts(data)
    vocabs = run_vocabs(opt)
    return vocabs, next(training_batches(opt, vocabs, 1))


def test_an_ensemble_teaches_the_mean_of_its_members_probabilities(data, members):
    teacher, earlier, copy = members
    vocabs, batch = first_batch(data)
    with torch.no_grad():
        one, other = (F.softmax(teacher_forced_logits(load_teacher(p, vocabs, "cpu"), batch), -1)
                      for p in (teacher, earlier))
        ensemble = teacher_forced_logits(load_teacher([teacher, earlier], vocabs, "cpu"), batch)
        twice = teacher_forced_logits(load_teacher([teacher, copy], vocabs, "cpu"), batch)
    assert not torch.allclose(one, other, atol=1e-3)  # two different members
    torch.testing.assert_close(ensemble.exp(), (one + other) / 2)
    torch.testing.assert_close(twice.exp(), one)  # a teacher twice is that teacher


def test_the_cache_of_an_ensemble_holds_its_mean_distribution(data, members, tmp_path):
    teacher, earlier, _ = members
    opt = cache_opts(data, "-teacher_model", teacher, earlier, "-topk", 4, "-output",
                     tmp_path / "cache", validate=False)
    assert build_teacher_cache(opt) > 0
    opt.teacher_cache, opt.teacher_model = str(tmp_path / "cache"), None
    vocabs, batch = first_batch(data)
    cached = CachedTeacher.from_opts(opt, vocabs, torch.device("cpu"))
    assert cached.cache.header["teacher_sha256"] == teacher_digest([teacher, earlier])
    assert teacher_digest([teacher, earlier]) not in (teacher_digest(teacher),
                                                      teacher_digest([earlier, teacher]))
    keep = batch["tgt"][:, 1:, 0].reshape(-1) != PAD
    with torch.no_grad():
        logp = teacher_forced_logits(load_teacher([teacher, earlier], vocabs, "cpu"), batch)
    top = logp[keep].topk(4, -1)
    stored = cached.distribution(batch)
    torch.testing.assert_close(stored.logp[keep], top.values, atol=2e-2, rtol=0)


def test_eval_scores_an_ensemble_and_counts_every_member(data, members, tmp_path):
    teacher, _, copy = members
    head(data["test.de"], tmp_path / "src", 20)
    head(data["test.en"], tmp_path / "tgt", 20)
    results = {}
    for name, models in (("one", [teacher]), ("twice", [teacher, copy])):
        run_cli("eval", "-model", *models, "-src", tmp_path / "src", "-tgt", tmp_path / "tgt",
                "-json", tmp_path / f"{name}.json", "-output", tmp_path / f"{name}.hyp")
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    one, twice = results["one"], results["twice"]
    assert (tmp_path / "one.hyp").read_text() == (tmp_path / "twice.hyp").read_text()
    assert twice["bleu"] == one["bleu"] and twice["ppl"] == pytest.approx(one["ppl"], rel=1e-4)
    assert (twice["n_params"], twice["size_bytes"]) == (2 * one["n_params"],
                                                        2 * one["size_bytes"])
    assert twice["model"] == f"{teacher} {copy}"


def test_the_deploy_stage_times_an_ensemble_as_reference_and_says_why_it_deploys_none(
        data, members, tmp_path):
    from onmt_qd.bin.recipe_deploy import deploy_model

    teacher, earlier, _ = members
    head(data["test.de"], tmp_path / "src", 10)
    head(data["test.en"], tmp_path / "tgt", 10)
    plan = {"folder": str(tmp_path), "src": [str(tmp_path / "src")],
            "tgt": [str(tmp_path / "tgt")], "beam_size": 2, "batch_size": 10, "gpu": False}
    reference, deployed = deploy_model({"name": "teacher", "files": [teacher, earlier],
                                        "reference": True}, plan)
    assert reference["role"] == "reference" and reference["model"] == f"{teacher} {earlier}"
    assert deployed["skipped"] == "an ensemble of 2 models: CTranslate2 decodes no ensemble"


def test_a_directory_in_an_ensemble_is_refused_in_one_line(members, tmp_path):
    from onmt_qd.inference.engine import check_inference

    teacher = members[0]
    with pytest.raises(ValueError, match=r"^-teacher_model \S+ is a directory in an ensemble "
                       r"of 2: an ensemble's members are OpenNMT-py checkpoints \(CTranslate2 "
                       r"decodes no ensemble\); give the directory alone$"):
        check_teacher_model([teacher, str(tmp_path)])
    with pytest.raises(ValueError, match=r"^-model: 2 models with a directory among them"):
        check_inference(Namespace(models=[teacher, str(tmp_path)]), 10)


def ensemble_profile(recipe):
    profile = recipe["profiles"]["mini"]
    profile.update(subset={"train": 40, "valid": 20, "test": 10}, spm_vocab_size=300,
                   teacher_ensemble=2, teacher_topk=4, train={"bucket_size": 64})
    profile["teacher"].update(hidden_size=32, word_vec_size=32, epochs=1)


@needs_multi30k
def test_teacher_ensemble_trains_its_members_from_the_next_seeds(tmp_path, monkeypatch):
    edited_recipe(tmp_path, monkeypatch, ensemble_profile)
    stand_in_mirror(tmp_path / "mirror")
    work = tmp_path / "work"
    pipeline = Pipeline("multi30k", "mini", work, mirror=str(tmp_path / "mirror"))
    cache = next(s for s in pipeline.stages if s.name == "teacher_cache")
    assert {"teacher", "teacher_2"} <= set(cache.needs)
    pipeline.run(["data", "teacher", "teacher_2", "teacher_cache"])
    seeds = [yaml.safe_load((work / "configs" / f"{name}.yaml").read_text())["seed"]
             for name in ("teacher", "teacher_2")]
    assert seeds == [3435, 3436]
    members = [str(work / "models" / f"{name}.pt") for name in ("teacher", "teacher_2")]
    assert pipeline.teacher_files() == members
    header = json.loads((work / "models" / "teacher_cache" / "header.json").read_text())
    assert header["teacher_sha256"] == teacher_digest(members)


def test_teacher_ensemble_is_refused_with_a_given_teacher(tmp_path, data, members):
    recipe = own_recipe(data, members[0], {"transformer": TRANSFORMER_STUDENT})
    recipe["profiles"]["own"]["teacher_ensemble"] = 2
    corpus_folder(data, tmp_path / "corpus")
    with pytest.raises(RecipeError, match="teacher_ensemble in profile own .* names its "
                       "teacher_model: drop teacher_ensemble"):
        load_recipe(write_recipe(tmp_path, recipe), "own")
