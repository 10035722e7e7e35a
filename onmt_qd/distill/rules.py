"""The rules of distillation's settings, each written once: onmt_qd_train (and the recipe
profile, through its checks), onmt_qd_diffquant, onmt_qd_teacher_cache and the losses
call these, so a setting is refused with the same line wherever it is given."""
from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Sequence

# Above this the T^2-scaled KL loses its float32 precision: measured on random logits
# (8000 words, std 0.3 to 5) against float64, the loss is within 0.05% up to T = 100,
# 3% off at T = 300 and of the wrong sign at T = 10^4; T^2 overflows float32 above 1.8e19.
MAX_TEMPERATURE = 100.0


def teacher_paths(value: str | Sequence[str] | None) -> list[str]:
    """-teacher_model's files (a recipe gives one as a string): one teacher, or the
    members of an ensemble."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def check_teacher_model(path: str | Sequence[str] | None, needed_for: str | None = None,
                        option: str = "-teacher_model") -> None:
    """-teacher_model names an OpenNMT-py checkpoint that exists (a .qdz lacks the
    weights a teacher needs) or a CTranslate2 translator directory; several name the
    checkpoints of an ensemble. ``needed_for``: the command requires it, and why;
    ``option``: what the user set (a recipe's teacher_model key)."""
    from onmt_qd.compat import refuse_compressed

    paths = teacher_paths(path)
    if not paths:
        if needed_for:
            raise ValueError(f"-teacher_model is required: {needed_for}")
        return
    for one in paths:
        if os.path.isdir(one):  # a CTranslate2 translator (distill/ct2_teacher.py)
            if len(paths) > 1:
                raise ValueError(f"{option} {one} is a directory in an ensemble of "
                                 f"{len(paths)}: an ensemble's members are OpenNMT-py "
                                 "checkpoints (CTranslate2 decodes no ensemble); give the "
                                 "directory alone")
            from onmt_qd.ct2_format import check_translator_spec

            check_translator_spec(one, option)
            continue
        if not os.path.isfile(one):
            raise ValueError(f"teacher checkpoint {one} does not exist: train the teacher "
                             f"first or fix {option}")
        refuse_compressed(one)


def check_topk(topk: object, name: str = "-topk", vocabulary: int | None = None) -> None:
    """Tokens kept per position: at least 1, at most the vocabulary (when known)."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1 or (
            vocabulary is not None and topk > vocabulary):
        most = f" and at most the vocabulary size ({vocabulary})" if vocabulary else ""
        raise ValueError(f"{name} must be a whole number of at least 1{most}, got {topk!r}")


def check_cached_loss(temperature: float, label_smoothing: float) -> None:
    """A cache stores the teacher's T = 1 log-probabilities of K tokens: its loss is the
    KL at temperature 1 plus the plain cross-entropy."""
    if temperature != 1.0:
        raise ValueError("a cached teacher distills at temperature 1 (it stores T = 1 "
                         "log-probabilities): set -distill_temperature 1 or use -teacher_model")
    if label_smoothing:
        raise ValueError("the cached-teacher loss uses plain cross-entropy: unset "
                         "-label_smoothing or use -teacher_model")


def check_whole_targets(truncated: bool | int) -> None:
    """The KL is taken over every target position of a batch at once."""
    if truncated:
        raise ValueError("distillation needs whole targets: set -truncated_decoder 0")


def check_distill_opts(opt: Namespace, teacher_needed_for: str | None = None) -> None:
    """Every rule of the distillation options a training command takes (-distill_*,
    -teacher_model, -teacher_cache, -topk), before any data or model is read."""
    if not 0.0 <= opt.distill_weight <= 1.0:
        raise ValueError(f"-distill_weight must be in [0, 1], got {opt.distill_weight}")
    if not 0 < opt.distill_temperature <= MAX_TEMPERATURE:  # also refuses nan
        raise ValueError(f"-distill_temperature must be > 0 and at most {MAX_TEMPERATURE:g}, "
                         f"got {opt.distill_temperature} (above {MAX_TEMPERATURE:g} the "
                         "float32 distillation loss loses its precision)")
    check_teacher_model(opt.teacher_model, teacher_needed_for)
    if opt.teacher_model and opt.teacher_cache:
        raise ValueError("set either -teacher_model (live teacher) or -teacher_cache "
                         "(its cached outputs), not both")
    if opt.teacher_cache and os.path.isfile(opt.teacher_cache):
        raise ValueError(f"teacher cache {opt.teacher_cache} is a file; a teacher cache is "
                         "the folder onmt_qd_teacher_cache -output writes (a teacher "
                         "checkpoint goes to -teacher_model)")
    if opt.teacher_cache and not os.path.isdir(opt.teacher_cache):
        raise ValueError(f"teacher cache {opt.teacher_cache} does not exist: build it with "
                         "onmt_qd_teacher_cache or fix -teacher_cache")
    if opt.topk is not None:
        check_topk(opt.topk)
        if not opt.teacher_cache:
            raise ValueError("-topk applies to -teacher_cache: set both or neither")
    if opt.teacher_cache:
        check_cached_loss(opt.distill_temperature, opt.label_smoothing)
    if opt.teacher_model or opt.teacher_cache:
        check_whole_targets(opt.truncated_decoder)
