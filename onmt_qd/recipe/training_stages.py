"""The stages onmt_qd_train runs: the teacher's training and every student's, full
precision or quantized, distilled or not. A unit of its own because the teacher and the
students train the same way; what differs is in the options and the signature."""
from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING

from onmt_qd.recipe import progress
from onmt_qd.recipe.identity import TEACHER, ModelId
from onmt_qd.recipe.profile import student_options
from onmt_qd.recipe.runner import RecipeError, Stage
from onmt_qd.recipe.signatures import settings_digest

if TYPE_CHECKING:
    from onmt_qd.recipe.stages import Pipeline


def train_stage(pipeline: Pipeline, model_id: ModelId, model: dict, teacher: bool = False,
                warm_start: str | None = None, name: str | None = None) -> Stage:
    """A training stage. Quantized students train from scratch, as in the paper,
    unless the profile sets ``quantized_epochs`` (to save time): then they resume
    the full-precision run of the same loss (``warm_start``) that many epochs before
    its end, optimizer and learning-rate schedule included, and finish it
    quantized, so they see exactly as many epochs as the full-precision student.
    Distilled students (``teacher``) learn from the teacher's cache, or its live
    outputs when the profile sets teacher_topk 0, and from its translations when
    distill_data is teacher. ``name``: the stage's and its files' (a member of a teacher
    ensemble: teacher_2 ..), by default the model's."""
    p, name = pipeline.profile, name or model_id.name
    bits = model_id.bits if model_id.quantized else None
    resumes = bool(bits and warm_start and p.quantized_epochs)
    averaged = model_id == TEACHER and p.teacher_average > 1

    def run():
        config = pipeline.training_data(distilled=teacher)
        config.update(pipeline.train_options())
        config.update(model if model_id == TEACHER else student_options(model, bits))
        config["keep_checkpoint"] = 1 if bits else -1
        if resumes:
            config.update(train_from=epoch_checkpoint(
                pipeline, warm_start, model["epochs"] - p.quantized_epochs))
        config["save_model"] = pipeline.path("models", name, "model")
        if teacher and pipeline.uses_cache():
            config.update(teacher_cache=pipeline.teacher_cache_path(), topk=p.teacher_topk)
        elif teacher and pipeline.word_level:
            config["teacher_model"] = pipeline.teacher_files()
        config.update(pipeline.process_options())
        pipeline.command(name, pipeline.py("train", "-config", pipeline.write_config(name, config)))
        if averaged:
            average_teacher(pipeline, name, model["epochs"])
        else:
            os.replace(pipeline.path("models", name, "model_best.pt"), pipeline.model_path(name))
    distillation = f"data={p.distill_data} teacher=" + (
        f"cache top{p.teacher_topk}" if pipeline.uses_cache() else
        "live" if pipeline.word_level else "none") + " " if teacher else ""
    signature = distillation + settings_digest(
        {**pipeline.train_options(), **model,
         **({"teacher_average": p.teacher_average} if averaged else {}), "quant_bits": bits,
         "quantized_epochs": p.quantized_epochs if resumes else None,
         # N processes train with N times the batch (the cache is the same bytes)
         **({"world_size": pipeline.world_size} if pipeline.world_size > 1 else {})})
    needs = ["data", *(pipeline.knowledge_stages() if teacher else ())]
    if resumes:
        needs.append(warm_start)
    return Stage(name, run, [pipeline.path("models", name), pipeline.model_path(name)],
                 signature, needs, lambda: progress.training(pipeline.path("logs", f"{name}.log")))


def average_teacher(pipeline: Pipeline, name: str, epochs: int) -> None:
    """models/NAME.pt (the teacher, or a member of its ensemble): the mean of its last
    teacher_average epoch checkpoints (said in its log)."""
    from onmt_qd.compat import save_atomic
    from onmt_qd.models import average_checkpoints

    last = [epoch_checkpoint(pipeline, name, epoch) for epoch in
            range(epochs - pipeline.profile.teacher_average + 1, epochs + 1)]
    save_atomic(average_checkpoints(last), pipeline.model_path(name))
    with open(pipeline.path("logs", f"{name}.log"), "a") as handle:
        handle.write(f"{name}: the mean of {', '.join(map(os.path.basename, last))}\n")


def epoch_checkpoint(pipeline: Pipeline, name: str, epoch: int) -> str:
    """The checkpoint a full-precision run saved at the end of ``epoch``."""
    saved = sorted(glob.glob(pipeline.path("models", name, "model_step_*.pt")),
                   key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    if not 1 <= epoch <= len(saved):
        raise RecipeError(f"{name} has no checkpoint for epoch {epoch}: "
                          "quantized_epochs must be smaller than the student's epochs")
    return saved[epoch - 1]
