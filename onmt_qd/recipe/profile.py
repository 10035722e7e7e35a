"""A recipe (recipes/NAME/recipe.yaml) and its profiles, checked before anything trains:
a typo in the students' options would otherwise surface only after the teacher has
trained."""
import os
import tempfile
from dataclasses import dataclass, field, fields

import yaml

from onmt_qd.distill.rules import DEFAULT_TOPK
from onmt_qd.recipe.runner import RecipeError

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "recipes")
RECIPE_KEYS = {"dataset", "sentencepiece", "vocab_size", "train", "profiles"}
DISTILL_DATA = ("gold", "teacher")
MODELS = ("teacher", "student")
SPLITS = ("train", "valid", "test")
# the profile's whole-number keys and their smallest value (teacher_topk 0: the live
# teacher instead of the cache; quantized_epochs 0: quantized students from scratch)
WHOLE_NUMBERS = {"teacher_topk": 0, "quantized_epochs": 0, "jobs": 1,
                 "translate_batch_size": 1, "diffquant_steps": 1, "spm_vocab_size": 1}


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
    # 0: distilled students ask a live teacher instead of the cache
    teacher_topk: int = DEFAULT_TOPK
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
        from onmt_qd.quant import validate_bits

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
            for width in value:
                try:  # the rule of onmt_qd_quantize -bits and onmt_qd_train -quant_bits
                    validate_bits(width, f"{key} in {where}")
                except ValueError as exc:
                    raise RecipeError(str(exc)) from None
        profile = cls(name, **{**settings, **{key: tuple(v) for key, v in bits.items()}})
        if profile.distill_data not in DISTILL_DATA:
            raise RecipeError(f"distill_data in {where} must be one of "
                              f"{', '.join(DISTILL_DATA)}, got '{profile.distill_data}'")
        for key, least in WHOLE_NUMBERS.items():
            value = getattr(profile, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise RecipeError(f"{key} in {where} must be a whole number >= {least}, got "
                                  f"{value!r}")
        if profile.subset is not None and not (
                isinstance(profile.subset, dict) and set(profile.subset) <= set(SPLITS) and all(
                    type(n) is int and n >= 1 for n in profile.subset.values())):
            raise RecipeError(f"subset in {where} must map {', '.join(SPLITS)} to a number of "
                              f"lines >= 1, got {profile.subset!r}")
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
    from onmt_qd.distill.rules import check_topk
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
    settings = Profile.from_dict(profile, recipe["profiles"][profile], path)
    vocabulary = settings.spm_vocab_size if recipe.get("sentencepiece") else \
        recipe.get("vocab_size")
    if vocabulary and settings.teacher_topk:
        try:  # the rule of onmt_qd_teacher_cache -topk
            check_topk(settings.teacher_topk, f"teacher_topk in profile {profile} of {path}",
                       vocabulary)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
    check_training(recipe, settings, path)
    return recipe, settings


def student_options(options, bits):
    """A student's onmt_qd_train options for one of its models: the quantization
    options (bucket size, method, rounding) apply to its quantized students, which get
    ``bits``; its full-precision students train without them."""
    from onmt_qd.opts import QUANT_OPTIONS

    if bits:
        return {**options, "quant_bits": bits}
    return {k: v for k, v in options.items() if k not in QUANT_OPTIONS}


def check_training(recipe, profile, path):
    """Each model's options (a quantized student's with each of its widths) pass the
    checks onmt_qd_train runs before it reads any data: types, choices, ranges and
    combinations fail when the recipe is loaded, not when their stage starts after the
    teacher has trained. The options are written and read as the stages do."""
    from onmt_qd.opts import parse, train_parser
    from onmt_qd.train.checks import check_opts

    parser = train_parser()
    where = f"profile {profile.name} of {path}"
    widths = sorted({*profile.qd_bits, *profile.normal_loss_bits})
    with tempfile.TemporaryDirectory() as folder:
        config = os.path.join(folder, "options.yaml")
        for model, bits in [("teacher", None), ("student", None),
                            *(("student", b) for b in widths)]:
            options = {**recipe["train"], **profile.train, **getattr(profile, model)}
            if model == "student":
                options = student_options(options, bits)
            with open(config, "w") as handle:
                yaml.safe_dump(options, handle)
            try:  # the data and vocabulary are the data stage's: stand-ins
                opt = parse(parser, ["-config", config, "-data", "{}", "-src_vocab", config])
                if profile.gpu:
                    opt.world_size, opt.gpu_ranks = 1, [0]
                check_opts(opt)
            except (ValueError, AssertionError) as exc:
                quantized = f" (quantized to {bits} bits)" if bits else ""
                raise RecipeError(f"{model} options of {where}{quantized}: {exc}") from None
            if model == "student" and not bits and \
                    profile.quantized_epochs >= max(opt.epochs, 1):
                raise RecipeError(f"quantized_epochs in {where} must be smaller than the "
                                  f"student's epochs ({opt.epochs}): the quantized students "
                                  "resume that many epochs before its end")
