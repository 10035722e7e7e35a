"""A recipe (recipes/NAME/recipe.yaml) and its profiles, checked before anything trains:
a typo in the students' options would otherwise surface only after the teacher has
trained."""
import os
from dataclasses import dataclass, field, fields

import yaml

from onmt_qd.recipe.runner import RecipeError

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "recipes")
RECIPE_KEYS = {"dataset", "sentencepiece", "vocab_size", "train", "profiles"}
DISTILL_DATA = ("gold", "teacher")
MODELS = ("teacher", "student")


@dataclass(frozen=True)
class Profile:
    """One profile of a recipe: every key it may set, with its default. ``train``,
    ``teacher`` and ``student`` are onmt_qd_train options (``train`` over the recipe's)."""

    name: str
    teacher: dict
    student: dict
    subset: dict | None = None  # split -> its first N lines; None: the whole dataset
    spm_vocab_size: int = 8000
    gpu: bool = False
    train: dict = field(default_factory=dict)
    # 0: quantized students train from scratch; N: they resume their full-precision run
    # N epochs before its end
    quantized_epochs: int = 0
    pm_bits: tuple = ()
    qd_bits: tuple = ()
    normal_loss_bits: tuple = ()
    diffquant_bits: tuple = ()
    diffquant_steps: int = 300
    teacher_topk: int = 8  # 0: distilled students ask a live teacher instead of the cache
    distill_data: str = "gold"  # or teacher: students learn from its translations
    # the spread of one student's BLEU across two quick runs (docs/results.md: 26.71 vs
    # 27.77 on test_2016_flickr); a claim holds only by more than this
    noise_bleu: float = 1.0
    jobs: int = 1  # stages (and models or parts within one) side by side
    translate_batch_size: int = 64

    @classmethod
    def from_dict(cls, name, settings, path):
        """The profile ``name`` of the recipe at ``path``; every key is checked, each
        problem fails in one line."""
        from onmt_qd.opts import check_keys, did_you_mean, train_parser

        where = f"profile {name} of {path}"
        known = {f.name for f in fields(cls)} - {"name"}
        for key in settings:
            if key not in known:
                raise RecipeError(f"unknown key '{key}' in {where}{did_you_mean(key, known)}")
        for model in MODELS:
            if not isinstance(settings.get(model), dict):
                raise RecipeError(f"{where} needs {model}: its onmt_qd_train options")
        bits = {key: value for key, value in settings.items() if key.endswith("_bits")}
        for key, value in bits.items():
            if not isinstance(value, list):
                raise RecipeError(f"{key} in {where} must be a list of bit widths, "
                                  f"got {value!r}")
        profile = cls(name, **{**settings, **{key: tuple(v) for key, v in bits.items()}})
        if profile.distill_data not in DISTILL_DATA:
            raise RecipeError(f"distill_data in {where} must be one of "
                              f"{', '.join(DISTILL_DATA)}, got '{profile.distill_data}'")
        if not isinstance(profile.teacher_topk, int) or profile.teacher_topk < 0:
            raise RecipeError(f"teacher_topk in {where} must be a whole number >= 0 (0: a "
                              "live teacher instead of the cache)")
        for key in ("jobs", "translate_batch_size"):
            value = getattr(profile, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecipeError(f"{key} in {where} must be a whole number >= 1, got {value!r}")
        noise = profile.noise_bleu
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise RecipeError(f"noise_bleu in {where} must be a number of BLEU points >= 0, "
                              f"got {noise!r}")
        parser = train_parser()
        check_keys(parser, profile.train, f"train options of {where}")
        for model in MODELS:
            check_keys(parser, getattr(profile, model), f"{model} options of {where}")
        return profile


def load_recipe(name, profile):
    """(the recipe's settings, its Profile ``profile``), checked."""
    from onmt_qd.opts import check_keys, did_you_mean, train_parser

    path = os.path.join(RECIPES_DIR, name, "recipe.yaml")
    if not os.path.isfile(path):
        known = sorted(os.listdir(RECIPES_DIR))
        raise RecipeError(f"unknown recipe '{name}'; known: {', '.join(known)}")
    with open(path) as handle:
        recipe = yaml.safe_load(handle)
    if profile not in recipe["profiles"]:
        raise RecipeError(f"recipe {name} has no profile '{profile}'; "
                          f"known: {', '.join(recipe['profiles'])}")
    for key in recipe:
        if key not in RECIPE_KEYS:
            raise RecipeError(f"unknown key '{key}' in {path}{did_you_mean(key, RECIPE_KEYS)}")
    check_keys(train_parser(), recipe["train"], f"train options of {path}")
    return recipe, Profile.from_dict(profile, recipe["profiles"][profile], path)
