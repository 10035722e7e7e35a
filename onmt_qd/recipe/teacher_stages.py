"""The teacher's stages: the teacher (trained, or the recipe's copied in), then what
carries its knowledge to the distilled students: its translations of the training
source (through CTranslate2 where it can) and its cached top-k outputs."""
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from onmt_qd.constants import TEACHER_CACHE_VERSION as CACHE_VERSION
from onmt_qd.fileio import atomic_output
from onmt_qd.recipe import progress
from onmt_qd.recipe.data import filter_pairs
from onmt_qd.recipe.identity import TEACHER
from onmt_qd.recipe.runner import Stage
from onmt_qd.recipe.signatures import given_digest
from onmt_qd.recipe.training_stages import train_stage

if TYPE_CHECKING:
    from onmt_qd.recipe.stages import Pipeline

# a Transformer teacher translates the training source through CTranslate2 at this
# quantization (docs/results.md, "Teacher translations through CTranslate2")
TEACHER_QUANTIZATION = "int8"


def teacher_stage(pipeline: Pipeline) -> Stage:
    """The teacher's training, or, when the recipe names a trained teacher, its
    copy into the work folder (its log says so; checked by every stage that loads
    it): a checkpoint as models/teacher.pt, a CTranslate2 directory as the onmt_qd
    export models/teacher.ct2 (its tokenizers inside). A changed teacher (by
    SHA-256) is copied again and its students remade."""
    recipe = pipeline.recipe
    given = recipe.get("teacher_model")
    if given is None:
        return train_stage(pipeline, TEACHER, pipeline.profile.teacher)
    translator = recipe.get("teacher_translator")

    def copy():
        if translator:
            from onmt_qd.deploy.foreign import import_translator

            import_translator(translator, pipeline.teacher_file())
        else:
            with atomic_output(pipeline.teacher_file()) as temporary:
                shutil.copyfile(given, temporary)
        with open(pipeline.path("logs", f"{TEACHER.name}.log"), "a") as handle:
            handle.write(f"teacher: the recipe's teacher_model {given} copied, "
                         f"not trained ({given_digest(recipe)})\n")
    return Stage(TEACHER.name, copy, [pipeline.teacher_file()],
                 lambda: f"given={given} {given_digest(recipe)}", needs=["data"])


def ensemble_stages(pipeline: Pipeline) -> list[Stage]:
    """The other members of a teacher ensemble (teacher_ensemble N): teacher_2 ..
    teacher_N, trained as the teacher is from the next seeds (a seed below 0, random
    in OpenNMT-py, stays so)."""
    options = pipeline.profile.teacher
    seed = {**pipeline.train_options(), **(options or {})}.get("seed", -1)
    return [train_stage(pipeline, TEACHER, {**options, "seed": seed + k if seed >= 0 else seed},
                        name=name)
            for k, name in enumerate(pipeline.teacher_members()[1:], 1)]


def translations_stage(pipeline: Pipeline) -> Stage:
    """Sequence-level distillation data (distill_data teacher)."""
    return Stage("teacher_translations", lambda: translate_training_source(pipeline),
                 [pipeline.teacher_translations_path(),
                  pipeline.teacher_translations_path(".scores"),
                  pipeline.path("data", "teacher.ct2")],
                 f"beam=5 ctranslate2_quantization={TEACHER_QUANTIZATION}",
                 needs=pipeline.teacher_members(), progress=lambda: progress.counted(
                     pipeline.path("logs", "teacher_translations.log"), "sentences translated"))


def translate_training_source(pipeline: Pipeline) -> None:
    """The teacher's beam-5 translation of every training source line and of the
    recipe's mono text, one line each (empty stays empty), by
    onmt_qd_teacher_translate: chunks a rerun after a kill continues from, progress
    in the stage's log. The teacher translates through CTranslate2 where it can
    (teacher_translator)."""
    p = pipeline.profile
    pipeline.command("teacher_translations", pipeline.py(
        "teacher_translate", "-model", *teacher_translator(pipeline),
        "-src", pipeline.distilled_source(),
        "-output", pipeline.teacher_translations_path(),
        "-scores", pipeline.teacher_translations_path(".scores"), "-beam_size", 5,
        "-batch_size", p.translate_batch_size, "-gpu", 0 if pipeline.gpu else -1))


def filter_stage(pipeline: Pipeline) -> Stage:
    """The translated pairs the profile's filter_* keys keep: a stage of its own, so
    that another filter does not translate the corpus again."""
    p = pipeline.profile

    def run():
        kept = filter_pairs(pipeline.distilled_source(), pipeline.teacher_translations_path(),
                            pipeline.teacher_translations_path(".scores"),
                            pipeline.distilled_pair(), p.filter_worst, p.filter_length_ratio)
        with open(pipeline.path("logs", "teacher_translations_filter.log"), "a") as handle:
            handle.write(f"teacher_translations_filter: {kept}\n")
    return Stage("teacher_translations_filter", run, list(pipeline.distilled_pair()),
                 f"worst={p.filter_worst} length_ratio={p.filter_length_ratio}",
                 needs=["teacher_translations"])


def teacher_translator(pipeline: Pipeline) -> list[str]:
    """What translates the training source: a CTranslate2 teacher as given; a
    Transformer checkpoint exported to CTranslate2 at TEACHER_QUANTIZATION first
    (data/teacher.ct2); an LSTM, which CTranslate2 does not convert, as it is
    (OpenNMT-py); an ensemble's checkpoints decoded together by OpenNMT-py, since
    CTranslate2 decodes no ensemble."""
    from onmt_qd.qdz import load_any
    from onmt_qd.recipe.deployment import deployment

    teachers = pipeline.teacher_files()
    if "teacher_translator" in pipeline.recipe or len(teachers) > 1:
        return teachers
    engine, skipped = deployment(load_any(teachers[0])["opt"], gpu=False)
    if engine != "CTranslate2" or skipped:
        return teachers
    exported = pipeline.path("data", "teacher.ct2")
    pipeline.command("teacher_translations", pipeline.py(
        "export", "-model", teachers[0], "-output", exported,
        "-quantization", TEACHER_QUANTIZATION))
    return [exported]


def cache_stage(pipeline: Pipeline) -> Stage:
    """What word-level distilled students learn from when the profile caches (uses_cache)."""
    p = pipeline.profile
    return Stage("teacher_cache", lambda: build_teacher_cache(pipeline),
                 [pipeline.teacher_cache_path()],
                 f"topk={p.teacher_topk} data={p.distill_data} format={CACHE_VERSION}",
                 needs=[s for s in pipeline.knowledge_stages() if s != "teacher_cache"],
                 progress=lambda: progress.counted(pipeline.path("logs", "teacher_cache.log"),
                                                   "sentences"))


def build_teacher_cache(pipeline: Pipeline) -> None:
    """The teacher's top-k outputs over the corpus the distilled students train on."""
    config = pipeline.training_data(distilled=True)
    config.update(pipeline.train_options())
    config.update(pipeline.process_options())
    pipeline.command("teacher_cache", pipeline.py(
        "teacher_cache", "-config", pipeline.write_config("teacher_cache", config),
        "-teacher_model", *pipeline.teacher_files(),
        "-topk", pipeline.profile.teacher_topk, "-output", pipeline.teacher_cache_path()))
