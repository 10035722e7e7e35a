"""A recipe (recipes/NAME/recipe.yaml, or a user's own recipe file) and its profiles,
checked before anything trains: a typo in the students' options would otherwise surface
only after the teacher has trained."""
import os
import re
import tempfile
from dataclasses import dataclass, field, fields

import yaml

from onmt_qd.constants import DEFAULT_TOPK
from onmt_qd.recipe.identity import DEFAULT_FAMILY
from onmt_qd.recipe.runner import RecipeError

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "recipes")
# every key of a recipe file and what it means (docs/recipe_keys.md is made from these)
RECIPE_KEYS = {
    "dataset": ("name or {folder, src, tgt}", "required",
                "a registered dataset (multi30k, integ200k, wmt13), or a folder of parallel "
                "files: train.SRC/.TGT, valid.SRC/.TGT and every other NAME.SRC/.TGT pair as "
                "a test set"),
    "sentencepiece": ("bool", "false", "train one joint SentencePiece model (shared "
                      "vocabulary) of spm_vocab_size pieces on the training data"),
    "vocab_size": ("int", "50000", "the word vocabulary's size when not sentencepiece"),
    "train": ("onmt_qd_train options", "{}", "options shared by every model of every profile"),
    "profiles": ("name -> profile", "required", "the profiles (keys below)"),
    "teacher_model": ("path", "none", "a trained teacher used instead of training one: an "
                      "OpenNMT-py checkpoint (stock onmt_train or onmt_qd), or a CTranslate2 "
                      "translator directory (onmt_qd_export's, an Argos Translate package's "
                      "model/, a converted OPUS-MT model), whose students learn from its "
                      "translations (sequence-level); relative paths are relative to the "
                      "recipe file"),
    "sentencepiece_model": ("path", "none", "with teacher_model: the one joint SentencePiece "
                            "model (shared vocabulary) it was trained with (a CTranslate2 "
                            "teacher's is found in or beside its directory unless named)"),
    "source_sentencepiece_model": ("path", "none", "with a CTranslate2 teacher_model that "
                                   "has two: its source side's SentencePiece model"),
    "target_sentencepiece_model": ("path", "none", "with a CTranslate2 teacher_model that "
                                   "has two: its target side's SentencePiece model"),
    "mono": ("path", "none", "source-language text, one sentence per line, that the teacher "
             "translates too: students distilled on its translations (distill_data: teacher) "
             "train on the parallel data plus this; relative to the recipe file"),
}
SPM_KEYS = ("sentencepiece_model", "source_sentencepiece_model", "target_sentencepiece_model")
LOCAL_DATASET_KEYS = {"folder", "src", "tgt"}
DISTILL_DATA = ("gold", "teacher")
# a student family's name: part of its models' file and stage names (identity.py)
FAMILY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SPLITS = ("train", "valid", "test")
# the profile's whole-number keys and their smallest value (teacher_topk 0: the live
# teacher instead of the cache; quantized_epochs 0: quantized students from scratch)
WHOLE_NUMBERS = {"teacher_topk": 0, "quantized_epochs": 0, "jobs": 1, "teacher_average": 1,
                 "teacher_ensemble": 1, "translate_batch_size": 1, "diffquant_steps": 1,
                 "spm_vocab_size": 1}


def _key(default, meaning):
    """A profile key's dataclass field: its default (a type to call for a mutable one)
    and meaning (docs/recipe_keys.md is made from these)."""
    if callable(default):
        return field(default_factory=default, metadata={"meaning": meaning})
    return field(default=default, metadata={"meaning": meaning})


@dataclass(frozen=True)
class Profile:
    """One profile of a recipe: every key it may set, with its default. ``train``,
    ``teacher``, ``student`` and each of ``students`` are onmt_qd_train options (``train``
    over the recipe's, a model's over both). ``student`` and ``students`` name the
    student families: each gets every student of the profile, all from one teacher."""

    name: str
    teacher: dict | None = _key(None, "onmt_qd_train options of the teacher (required unless "
                                "the recipe names its teacher_model)")
    student: dict | None = _key(None, "onmt_qd_train options of the default student family")
    students: dict = _key(dict, "more student families: name -> onmt_qd_train options; "
                          "each gets every student of the profile, from the one teacher")
    subset: dict | None = _key(None, "train/valid/test -> the first N lines of that split "
                               "(none: the whole dataset)")
    spm_vocab_size: int = _key(8000, "SentencePiece pieces, with sentencepiece: true")
    gpu: bool = _key(False, "train and translate on GPU 0 (or world_size GPUs)")
    train: dict = _key(dict, "onmt_qd_train options over the recipe's train, for every model")
    quantized_epochs: int = _key(0, "0: quantized students train from scratch; N: they "
                                 "resume their full-precision run N epochs before its end")
    pm_bits: tuple = _key(tuple, "widths of post-training (PM) quantization of the distilled "
                          "full-precision student")
    qd_bits: tuple = _key(tuple, "widths of quantized distillation students")
    normal_loss_bits: tuple = _key(tuple, "widths of students quantized with the normal loss")
    diffquant_bits: tuple = _key(tuple, "widths of differentiable quantization")
    diffquant_steps: int = _key(300, "steps of differentiable quantization")
    teacher_topk: int = _key(DEFAULT_TOPK, "teacher tokens cached per position for "
                             "word-level distillation (0: ask the live teacher)")
    distill_data: str = _key("gold", "gold: distilled students train on the references; "
                             "teacher: on the teacher's beam-5 translations")
    # the spread of one student's BLEU across two quick runs (docs/results.md: 26.71 vs
    # 27.77 on test_2016_flickr)
    noise_bleu: float = _key(1.0, "BLEU margin a claim must hold by (the spread of one "
                             "student across runs)")
    filter_worst: float = _key(0.0, "with distill_data teacher: the share of translated "
                               "pairs, lowest teacher score per token first, the distilled "
                               "students do not train on (0: none)")
    filter_length_ratio: float = _key(0.0, "with distill_data teacher: drop translated pairs "
                                      "whose translation has more than this many times the "
                                      "source's words, or fewer than 1/this (0: none)")
    teacher_average: int = _key(1, "the teacher the students learn from: the mean of the "
                                "weights of its last N epochs' checkpoints (1: its best "
                                "checkpoint)")
    teacher_ensemble: int = _key(1, "the teacher the students learn from: an ensemble of N "
                                 "teachers trained alike from seeds seed .. seed+N-1 (its "
                                 "cache holds their mean distribution, its translations "
                                 "come from ensemble decoding; 1: one teacher)")
    jobs: int = _key(1, "stages (and models or parts within one) run side by side")
    world_size: int | str = _key(1, "data-parallel processes of each training stage and of "
                                 "the cache build: CPU processes (gloo), or GPUs 0..N-1 with "
                                 "gpu: true (all: every visible GPU)")
    translate_batch_size: int = _key(64, "sentences per batch when translating (evaluate, "
                                     "deploy, teacher translations)")

    def families(self):
        """(family, onmt_qd_train options) of each student family, ``student`` first."""
        default = [(DEFAULT_FAMILY, self.student)] if self.student is not None else []
        return default + list(self.students.items())

    def trained_models(self):
        """(where in the profile, options) of every model the recipe trains."""
        teacher = [("teacher", self.teacher)] if self.teacher is not None else []
        return teacher + [("student" if family == DEFAULT_FAMILY else f"students.{family}",
                           options) for family, options in self.families()]

    @classmethod
    def from_dict(cls, name, settings, path, given_teacher=False):
        """The profile ``name`` of the recipe at ``path``; every key is checked, each
        problem fails in one line. ``given_teacher``: the recipe names a trained
        teacher, so the profile trains none."""
        from onmt_qd.opts import check_keys, did_you_mean, train_parser
        from onmt_qd.quant import validate_bits

        where = f"profile {name} of {path}"
        known = {f.name for f in fields(cls)} - {"name"}
        for key in settings:
            if key not in known:
                raise RecipeError(f"unknown key '{key}' in {where}{did_you_mean(key, known)}")
        _check_models(settings, where, given_teacher)
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
        profile._check_values(where)
        parser = train_parser()
        check_keys(parser, profile.train, f"train options of {where}")
        for model, options in profile.trained_models():
            check_keys(parser, options, f"{model} options of {where}")
        return profile

    def _check_values(self, where):
        """The profile's own settings (not onmt_qd_train options): choices and ranges."""
        if self.distill_data not in DISTILL_DATA:
            raise RecipeError(f"distill_data in {where} must be one of "
                              f"{', '.join(DISTILL_DATA)}, got '{self.distill_data}'")
        for key, least in WHOLE_NUMBERS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise RecipeError(f"{key} in {where} must be a whole number >= {least}, got "
                                  f"{value!r}")
        if self.subset is not None and not (
                isinstance(self.subset, dict) and set(self.subset) <= set(SPLITS) and all(
                    type(n) is int and n >= 1 for n in self.subset.values())):
            raise RecipeError(f"subset in {where} must map {', '.join(SPLITS)} to a number of "
                              f"lines >= 1, got {self.subset!r}")
        size = self.world_size
        if size == "all" and not self.gpu:
            raise RecipeError(f"world_size all in {where} means every visible GPU, for a "
                              "profile with gpu: true; give a number of CPU processes instead")
        if size != "all" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise RecipeError(f"world_size in {where} must be a whole number >= 1 or all (every "
                              f"visible GPU), got {size!r}")
        worst, ratio = self.filter_worst, self.filter_length_ratio
        if isinstance(worst, bool) or not isinstance(worst, (int, float)) or \
                not 0 <= worst < 1:
            raise RecipeError(f"filter_worst in {where} must be a share from 0 to below 1, "
                              f"got {worst!r}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or \
                not (ratio == 0 or ratio >= 1):
            raise RecipeError(f"filter_length_ratio in {where} must be 0 (off) or at least "
                              f"1, got {ratio!r}")
        if (worst or ratio) and self.distill_data != "teacher":
            raise RecipeError(f"filter_worst and filter_length_ratio in {where} filter the "
                              "teacher's translations: set distill_data: teacher")
        noise = self.noise_bleu
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise RecipeError(f"noise_bleu in {where} must be a number of BLEU points >= 0, "
                              f"got {noise!r}")


def keys_reference() -> str:
    """docs/recipe_keys.md: every recipe-file and profile key with its type, default and
    meaning, made from RECIPE_KEYS and Profile's fields (a test keeps the file equal)."""
    def default_of(f):
        value = f.default_factory() if callable(f.default_factory) else f.default
        return "none" if value is None else str(value).lower() if isinstance(value, bool) \
            else "[]" if value == () else str(value)

    lines = ["# Recipe files and profiles: every key", "",
             "Made from `onmt_qd/recipe/profile.py` (`RECIPE_KEYS`, `Profile`); "
             "`tests/test_recipe_configs.py` checks that this file is what the code says. "
             "Remake it with `python -c \"from onmt_qd.recipe.profile import keys_reference; "
             "print(keys_reference(), end='')\" > docs/recipe_keys.md`.", "",
             "## Recipe file", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {default} | {meaning} |"
              for key, (kind, default, meaning) in RECIPE_KEYS.items()]
    lines += ["", "## Profile (under `profiles: NAME:`)", "",
              "| key | type | default | meaning |", "|---|---|---|---|"]
    def type_of(f):
        names = {"dict": "mapping", "tuple": "list", "None": "none", "NoneType": "none",
                 "str": "text", "int": "whole number", "float": "number", "bool": "true/false"}
        parts = [getattr(t, "__name__", str(t)) for t in getattr(f.type, "__args__", [f.type])]
        return " or ".join(names.get(p, p) for p in parts)

    lines += [f"| `{f.name}` | {type_of(f)} | {default_of(f)} | {f.metadata['meaning']} |"
              for f in fields(Profile) if f.name != "name"]
    return "\n".join(lines) + "\n"


def _check_models(settings, where, given_teacher):
    """The models a profile trains: a teacher unless the recipe gives one, and at least
    one student family, each a mapping of onmt_qd_train options under a valid name."""
    if given_teacher and "teacher" in settings:
        raise RecipeError(f"{where} sets teacher options, but the recipe names its "
                          "teacher_model: remove one of them")
    if not given_teacher and not isinstance(settings.get("teacher"), dict):
        raise RecipeError(f"{where} needs teacher: its onmt_qd_train options (or the "
                          "recipe a teacher_model)")
    students = settings.get("students", {})
    if not isinstance(students, dict) or not all(
            isinstance(v, dict) for v in students.values()):
        raise RecipeError(f"students in {where} must map a family name to its "
                          f"onmt_qd_train options, got {students!r}")
    for family in students:
        if not FAMILY_NAME.fullmatch(str(family)) or family == DEFAULT_FAMILY:
            raise RecipeError(f"student family '{family}' in {where}: a name is letters, "
                              "digits, _ and - (starting with a letter), not "
                              f"'{DEFAULT_FAMILY}' (that family is the student key)")
    if "student" in settings and not isinstance(settings["student"], dict):
        raise RecipeError(f"student in {where} must be its onmt_qd_train options")
    if "student" not in settings and not students:
        raise RecipeError(f"{where} needs student (its onmt_qd_train options) or "
                          "students (family name -> options)")


def recipe_path(name):
    """The file of recipe ``name``: a built-in recipe's name, or a path to a user's
    recipe file (anything with a slash or ending in .yaml)."""
    name = os.fspath(name)
    if os.sep in name or name.endswith((".yaml", ".yml")):
        if os.path.isdir(name):
            raise RecipeError(f"recipe file {name} is a directory: give the recipe's YAML "
                              "file in it")
        if not os.path.isfile(name):
            raise RecipeError(f"recipe file {name} does not exist")
        return os.path.abspath(name)
    path = os.path.join(RECIPES_DIR, name, "recipe.yaml")
    if not os.path.isfile(path):
        known = sorted(os.listdir(RECIPES_DIR))
        raise RecipeError(f"unknown recipe '{name}'; known: {', '.join(known)}, or the path "
                          "of a recipe file")
    return path


def load_recipe(name, profile):
    """(the recipe's settings, its Profile ``profile``), checked; ``name`` is a
    built-in recipe or a recipe file (``recipe_path``). A recipe file's relative paths
    are relative to its folder."""
    from onmt_qd.distill.rules import check_topk
    from onmt_qd.opts import check_keys, did_you_mean, train_parser

    path = recipe_path(name)
    with open(path, encoding="utf-8") as handle:
        try:
            recipe = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path} is not valid YAML: {exc}".splitlines()[0]) from None
        except UnicodeDecodeError as exc:
            raise RecipeError(f"recipe file {path} is not UTF-8 text (invalid byte "
                              f"0x{exc.object[exc.start]:02x}): save it as UTF-8 "
                              "(e.g. iconv -t UTF-8)") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("profiles"), dict):
        raise RecipeError(f"{path} needs profiles: a mapping of profile names to settings")
    if profile not in recipe["profiles"]:
        raise RecipeError(f"recipe {name} has no profile '{profile}'; "
                          f"known: {', '.join(recipe['profiles'])}")
    for key in recipe:
        if key not in RECIPE_KEYS:
            raise RecipeError(f"unknown key '{key}' in {path}{did_you_mean(key, RECIPE_KEYS)}")
    recipe.setdefault("train", {})
    check_keys(train_parser(), recipe["train"], f"train options of {path}")
    recipe = resolve_files(recipe, path)
    settings = Profile.from_dict(profile, recipe["profiles"][profile], path,
                                 given_teacher="teacher_model" in recipe)
    settings, recipe["family_defaults"] = with_family_defaults(recipe, settings)
    vocabulary = check_given_teacher(recipe, path) if "teacher_model" in recipe else \
        settings.spm_vocab_size if recipe.get("sentencepiece") else recipe.get("vocab_size")
    if vocabulary and settings.teacher_topk:
        try:  # the rule of onmt_qd_teacher_cache -topk
            check_topk(settings.teacher_topk, f"teacher_topk in profile {profile} of {path}",
                       vocabulary)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
    if "teacher_model" in recipe and settings.teacher_average > 1:
        raise RecipeError(f"teacher_average in profile {profile} of {path} averages the "
                          "checkpoints of a teacher the recipe trains, and the recipe names "
                          "its teacher_model: drop teacher_average")
    if "teacher_model" in recipe and settings.teacher_ensemble > 1:
        raise RecipeError(f"teacher_ensemble in profile {profile} of {path} trains the "
                          "members of an ensemble, and the recipe names its teacher_model: "
                          "drop teacher_ensemble")
    if settings.teacher and settings.teacher_average > settings.teacher.get("epochs", 1):
        raise RecipeError(f"teacher_average {settings.teacher_average} in profile {profile} "
                          f"of {path} is more than the teacher's epochs (one checkpoint "
                          "each): lower it, or give the teacher more epochs")
    if "mono" in recipe and settings.distill_data != "teacher":
        raise RecipeError(f"mono in {path}: the teacher translates it for students distilled "
                          f"on its translations, and profile {profile} has distill_data: "
                          f"{settings.distill_data}: set distill_data: teacher (or drop mono)")
    check_training(recipe, settings, path)
    return recipe, settings


def resolve_files(recipe, path):
    """The recipe with its dataset as a Dataset (a registered name, or a user's folder
    of parallel files) and its teacher_model and sentencepiece_model as absolute paths
    (relative to the recipe file's folder); a missing sentencepiece_model fails here,
    the teacher_model in check_given_teacher, both before any stage."""
    from onmt_qd import datasets

    here = os.path.dirname(path)
    recipe = dict(recipe)
    given = recipe.get("dataset")
    try:
        if isinstance(given, str):
            recipe["dataset"] = datasets.dataset(given)
        elif isinstance(given, dict) and set(given) == LOCAL_DATASET_KEYS:
            recipe["dataset"] = datasets.LocalFolderDataset.from_folder(
                os.path.join(here, str(given["folder"])), str(given["src"]), str(given["tgt"]))
        else:
            raise RecipeError(f"dataset in {path} must be a dataset's name or "
                              "{folder, src, tgt}: a folder of parallel files and the "
                              f"languages' file suffixes, got {given!r}")
    except datasets.DatasetError as exc:
        raise RecipeError(f"dataset in {path}: {exc}") from None
    for key in ("teacher_model", *SPM_KEYS, "mono"):
        if key in recipe:
            recipe[key] = os.path.abspath(os.path.join(here, str(recipe[key])))
    if "mono" in recipe and not os.path.isfile(recipe["mono"]):
        raise RecipeError(f"mono in {path}: {recipe['mono']} is not a file: give a text file "
                          "of source-language sentences, one per line")
    for key in SPM_KEYS:
        if key in recipe and not os.path.isfile(recipe[key]):
            raise RecipeError(f"{key} in {path}: {recipe[key]} does not exist")
    given = [key for key in SPM_KEYS if key in recipe]
    if given and "teacher_model" not in recipe:
        raise RecipeError(f"{given[0]} in {path} is for a given teacher_model; without "
                          "one, set sentencepiece: true and the data stage trains one")
    pair = [key for key in SPM_KEYS[1:] if key in recipe]
    if pair and (len(pair) == 1 or "sentencepiece_model" in recipe):
        raise RecipeError(f"{path}: give source_sentencepiece_model and "
                          "target_sentencepiece_model together, or sentencepiece_model alone "
                          "(one model for both sides)")
    if pair and not os.path.isdir(recipe["teacher_model"]):
        raise RecipeError(f"{pair[0]} in {path} is for a CTranslate2 teacher_model with "
                          "two tokenizers; an OpenNMT-py checkpoint teacher takes "
                          "sentencepiece_model")
    return recipe


def check_given_teacher(recipe, path):
    """A trained teacher fixes the vocabulary and the subword model: the data stage
    takes both from it instead of building new ones (recipe/data.py). Returns the size
    of its target vocabulary (None for a CTranslate2 teacher: the data stage finds it)."""
    from onmt_qd.compat import load_checkpoint
    from onmt_qd.distill.rules import check_teacher_model

    if recipe.get("sentencepiece"):
        raise RecipeError(f"{path} names a teacher_model and sentencepiece: true; the teacher's "
                          "vocabulary fixes its subwords: name its sentencepiece_model "
                          "instead (or none for pre-tokenized data)")
    if os.path.isdir(recipe["teacher_model"]):
        recipe["teacher_translator"] = translator_teacher(recipe, path)
        return None
    try:  # the rule of -teacher_model: exists, not a .qdz
        check_teacher_model(recipe["teacher_model"], option="teacher_model")
    except ValueError as exc:
        raise RecipeError(f"teacher_model in {path}: {exc}") from None
    try:
        checkpoint = load_checkpoint(recipe["teacher_model"])
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise RecipeError(f"teacher_model in {path}: {recipe['teacher_model']} is not an "
                          f"OpenNMT-py checkpoint ({str(exc).splitlines()[0]})") from None
    missing = [k for k in ("model", "vocab", "opt") if k not in checkpoint]
    if missing:
        raise RecipeError(f"teacher_model in {path}: {recipe['teacher_model']} has no "
                          f"{missing[0]}: it is not an OpenNMT-py model checkpoint")
    if "sentencepiece_model" in recipe:
        check_teacher_subwords(recipe, checkpoint, path)
    return len(checkpoint["vocab"]["tgt"])


def translator_teacher(recipe, path):
    """The CTranslate2 teacher_model directory, checked (deploy/foreign.py): a
    translator with its tokenizers, named by the recipe or found in or beside it."""
    from onmt_qd.deploy.foreign import inspect_translator

    shared = recipe.get("sentencepiece_model")
    try:
        return inspect_translator(recipe["teacher_model"], "teacher_model",
                                  recipe.get("source_sentencepiece_model", shared),
                                  recipe.get("target_sentencepiece_model", shared))
    except ValueError as exc:
        raise RecipeError(f"{path}: {exc}") from None


def word_level(recipe, profile):
    """Whether the profile's distilled students learn from the teacher's outputs at
    each reference token (distill_weight > 0 in any family), not only from its data."""
    from onmt_qd.opts import train_parser

    options = {**recipe["train"], **profile.train}
    default = options.get("distill_weight", train_parser().get_default("distill_weight"))
    return any(family.get("distill_weight", default) > 0 for _, family in profile.families())


def check_teacher_subwords(recipe, checkpoint, path):
    """The recipe's sentencepiece_model must be the teacher's own: a word-level
    teacher has none, and a model whose pieces are not the teacher's vocabulary (the
    target language's model for the source side) would tokenize every stage wrongly."""
    import sentencepiece

    from onmt_qd.deploy.foreign import MIN_PIECE_COVERAGE, is_special_token
    from onmt_qd.models import sentencepiece_models

    given = recipe["sentencepiece_model"]
    if sentencepiece_models(checkpoint["opt"]) is None:
        raise RecipeError(f"sentencepiece_model in {path}: teacher_model "
                          f"{recipe['teacher_model']} was not trained on SentencePiece pieces "
                          "(it is word-level): drop sentencepiece_model")
    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=given)
    except (OSError, RuntimeError) as exc:
        raise RecipeError(f"sentencepiece_model in {path}: {given} is not a SentencePiece "
                          f"model ({str(exc).splitlines()[0]})") from None
    pieces = {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
    for side in ("src", "tgt"):
        tokens = [t for t in checkpoint["vocab"][side] if not is_special_token(t)]
        covered = sum(t in pieces for t in tokens) / max(len(tokens), 1)
        if covered < MIN_PIECE_COVERAGE:
            raise RecipeError(f"sentencepiece_model in {path}: {given} is not the teacher's "
                              f"subword model (only {covered:.0%} of its {side} vocabulary "
                              "are pieces of it; was the other language's model given?): "
                              "name the SentencePiece model the teacher was trained with")


# What a Transformer the recipe trains gets for the options no level of the recipe file
# sets (OpenNMT-py's defaults suit RNNs: dropout 0.3, SGD at 1.0, uniform +-0.1, from
# which a Transformer diverges). Measured on the multi30k transformer profile, 2 CPU
# cores (docs/results.md, "Multi30K transformer profile"): Adam at 0.001 held constant
# (then the plateau rule) against a noam warm-up to 0.006 (one-epoch valid perplexity
# 12.4 against 39.4); no dropout on the CPU (a mask costs more than the product it
# follows, and the 1+1x128 student reached 6.5 after 3 epochs without it, after 4 with
# 0.1); on a GPU, where masks are cheap, 0.1 (gpu_transformer's, not measured).
# Each group is filled only when none of its keys is set.
TRANSFORMER_DEFAULTS = (
    {"optim": "adam", "learning_rate": 0.001},
    {"param_init": 0.0, "param_init_glorot": True},
    {"dropout": 0.0, "attention_dropout": 0.0},
)
GPU_TRANSFORMER_DROPOUT = {"dropout": 0.1, "attention_dropout": 0.1}


def family_defaults(options, shared, gpu):
    """The TRANSFORMER_DEFAULTS a model's ``options`` get (none for a recurrent model),
    given the recipe's and profile's ``shared`` training options."""
    merged = {**shared, **options}
    if merged.get("encoder_type") != "transformer":
        return {}
    filled = {}
    for group in TRANSFORMER_DEFAULTS:
        if "dropout" in group and gpu:
            group = GPU_TRANSFORMER_DROPOUT
        if not any(key in merged for key in group):
            filled.update(group)
    return filled


def with_family_defaults(recipe, profile):
    """(the profile with every Transformer's unset options filled, {where: filled})."""
    import dataclasses

    shared = {**recipe["train"], **profile.train}
    filled = {}

    def fill(where, options):
        if options is None:
            return None
        extra = family_defaults(options, shared, profile.gpu)
        if extra:
            filled[where] = extra
        return {**options, **extra}
    profile = dataclasses.replace(
        profile, teacher=fill("teacher", profile.teacher),
        student=fill("student", profile.student),
        students={name: fill(f"students.{name}", options)
                  for name, options in profile.students.items()})
    return profile, filled


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
    from onmt_qd.opts import train_parser

    parser = train_parser()
    where = f"profile {profile.name} of {path}"
    widths = sorted({*profile.qd_bits, *profile.normal_loss_bits})
    with tempfile.TemporaryDirectory() as folder:
        config = os.path.join(folder, "options.yaml")
        for model, model_options in profile.trained_models():
            for bits in [None, *(widths if model != "teacher" else ())]:
                check_model(recipe, profile, model, model_options, bits, where, parser, config)


def check_model(recipe, profile, model, model_options, bits, where, parser, config):
    """One model's options, written to ``config`` and read as its stage does."""
    from onmt_qd.opts import parse
    from onmt_qd.train.checks import check_opts

    options = {**recipe["train"], **profile.train, **model_options}
    if model != "teacher":
        options = student_options(options, bits)
    with open(config, "w") as handle:
        yaml.safe_dump(options, handle)
    try:  # the data and vocabulary are the data stage's: stand-ins
        opt = parse(parser, ["-config", config, "-data", "{}", "-src_vocab", config])
        if profile.gpu:
            opt.world_size, opt.gpu_ranks = 1, [0]
        elif profile.world_size > 1:
            opt.world_size, opt.gpu_backend = profile.world_size, "gloo"
        check_opts(opt)
    except (ValueError, AssertionError) as exc:
        quantized = f" (quantized to {bits} bits)" if bits else ""
        raise RecipeError(f"{model} options of {where}{quantized}: {exc}") from None
    if model != "teacher" and not bits and \
            profile.quantized_epochs >= max(opt.epochs, 1):
        raise RecipeError(f"quantized_epochs in {where} must be smaller than the "
                          f"student's epochs ({opt.epochs}): the quantized students "
                          "resume that many epochs before its end")
