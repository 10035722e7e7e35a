"""A student family's stages: the full-precision students (normal loss and distilled),
then the quantized ones in the profile's order: post-training (PM) quantization of the
distilled student, quantized distillation, quantized with the normal loss and
differentiable quantization."""
from __future__ import annotations

from typing import TYPE_CHECKING

from onmt_qd.recipe import progress
from onmt_qd.recipe.identity import (DIFFERENTIABLE_QUANTIZATION, PM_QUANTIZATION,
                                     QUANTIZED_DISTILLATION, QUANTIZED_NORMAL_LOSS,
                                     STUDENT_DISTILLED_FP, STUDENT_FP, ModelId)
from onmt_qd.recipe.profile import Profile
from onmt_qd.recipe.runner import Stage
from onmt_qd.recipe.signatures import settings_digest
from onmt_qd.recipe.training_stages import train_stage

if TYPE_CHECKING:
    from onmt_qd.recipe.stages import Pipeline

# what differentiable quantization takes from the training options: how batches are
# made (its optimizer and learning rate are its own)
BATCH_KEYS = ("batch_type", "batch_size", "valid_batch_size", "num_workers")


def full_precision_stages(pipeline: Pipeline, family: str, options: dict) -> list[Stage]:
    """The family's full-precision students: normal loss, and distilled."""
    return [train_stage(pipeline, ModelId(STUDENT_FP, family=family), options),
            train_stage(pipeline, ModelId(STUDENT_DISTILLED_FP, family=family), options,
                        teacher=True)]


def quantized_models(profile: Profile, family: str) -> list[ModelId]:
    """The family's quantized students, each method's bit widths in the profile's order."""
    return [ModelId(method, bits, family) for method, widths in (
        (PM_QUANTIZATION, profile.pm_bits), (QUANTIZED_DISTILLATION, profile.qd_bits),
        (QUANTIZED_NORMAL_LOSS, profile.normal_loss_bits),
        (DIFFERENTIABLE_QUANTIZATION, profile.diffquant_bits)) for bits in widths]


def quantized_stage(pipeline: Pipeline, model: ModelId, options: dict) -> Stage:
    """The stage that makes quantized student ``model``: PM quantization and
    differentiable quantization start from the distilled full-precision student;
    quantized distillation and the normal loss train (from scratch, or resuming the
    full-precision run of their loss: train_stage)."""
    fp_distilled = ModelId(STUDENT_DISTILLED_FP, family=model.family)
    if model.method == QUANTIZED_DISTILLATION:
        return train_stage(pipeline, model, options, teacher=True,
                           warm_start=fp_distilled.name)
    if model.method == QUANTIZED_NORMAL_LOSS:
        return train_stage(pipeline, model, options,
                           warm_start=ModelId(STUDENT_FP, family=model.family).name)
    if model.method == PM_QUANTIZATION:
        return Stage(model.name, lambda: pipeline.command(model.name, pipeline.py(
            "quantize", "-model", pipeline.model_path(fp_distilled.name), "-bits", model.bits,
            "-output", pipeline.model_path(model.name))), [pipeline.model_path(model.name)],
            needs=[fp_distilled.name])
    p = pipeline.profile
    return Stage(model.name, lambda: diffquant(pipeline, model, fp_distilled),
                 [pipeline.model_path(model.name)], f"data={p.distill_data} " +
                 settings_digest({"steps": p.diffquant_steps, **batch_options(pipeline)}),
                 needs=["teacher", fp_distilled.name],
                 progress=lambda: progress.counted(pipeline.path("logs", f"{model.name}.log"),
                                                   "steps"))


def batch_options(pipeline: Pipeline) -> dict:
    """What differentiable quantization takes from the training options."""
    train = pipeline.train_options()
    return {k: train[k] for k in BATCH_KEYS if k in train}


def diffquant(pipeline: Pipeline, model: ModelId, start: ModelId) -> None:
    """Learns the points of ``start``'s weights against the live teacher (on its
    translations when distill_data is teacher)."""
    config = pipeline.training_data(distilled=True)
    config.update(batch_options(pipeline))
    pipeline.command(model.name, pipeline.py(
        "diffquant", "-config", pipeline.write_config(model.name, config),
        "-model", pipeline.model_path(start.name),
        "-teacher_model", *pipeline.teacher_files(), "-bits", model.bits,
        "-train_steps", pipeline.profile.diffquant_steps,
        "-output", pipeline.model_path(model.name),
        *(["-gpu_ranks", 0] if pipeline.gpu else [])))
