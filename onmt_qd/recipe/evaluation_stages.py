"""The stages after training, over every model a recipe makes: compress the quantized
ones, evaluate them all on the test sets, run each through its deployment path, and
write the report."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from onmt_qd.recipe import progress
from onmt_qd.recipe.identity import TEACHER, ModelId
from onmt_qd.recipe.runner import Stage

if TYPE_CHECKING:
    from onmt_qd.recipe.stages import Pipeline

DEPLOY_BEAM = 5  # the evaluate stage's beam (onmt_qd_eval's default)


def covered(pipeline: Pipeline) -> str:
    """The evaluated models' names: what the stages here cover."""
    return ",".join(m.name for m in pipeline.evaluated)


def evaluated_on(pipeline: Pipeline) -> str:
    """What the evaluate, deploy and report signatures share: the models, the test sets
    (known once the data stage ran: asked when the stage's turn comes), the batch."""
    return (f"{covered(pipeline)} on {','.join(pipeline.test_sets())} each alone "
            f"batch={pipeline.profile.translate_batch_size}")


def compress_stage(pipeline: Pipeline) -> Stage:
    """Every quantized model's .qdz file and its size report (sizes/NAME.json)."""
    quantized = pipeline.quantized
    return Stage("compress", lambda: compress_all(pipeline),
                 [pipeline.path("sizes")] +
                 [pipeline.model_path(m.name, ".qdz") for m in quantized],
                 covered(pipeline), needs=[m.name for m in quantized],
                 progress=lambda: models_done(pipeline, "sizes", quantized, "compressed"))


def compress_all(pipeline: Pipeline) -> None:
    os.makedirs(pipeline.path("sizes"), exist_ok=True)
    pipeline.side_by_side(lambda name: pipeline.command("compress", pipeline.py(
        "compress", "-model", pipeline.model_path(name),
        "-output", pipeline.model_path(name, ".qdz"),
        "-report_json", pipeline.path("sizes", f"{name}.json")), log_name=f"compress.{name}"),
        [m.name for m in pipeline.quantized])


def evaluate_stage(pipeline: Pipeline) -> Stage:
    """Every model on the test sets by onmt_qd_eval (eval/NAME.json and .hyp)."""
    return Stage("evaluate", lambda: evaluate_all(pipeline), [pipeline.path("eval")],
                 lambda: evaluated_on(pipeline),
                 needs=["data", *(m.name for m in pipeline.evaluated), "compress"],
                 progress=lambda: models_done(pipeline, "eval", pipeline.evaluated,
                                              "evaluated", "evaluate"))


def evaluate_all(pipeline: Pipeline) -> None:
    os.makedirs(pipeline.path("eval"), exist_ok=True)
    sources, references = test_files(pipeline)
    pipeline.side_by_side(lambda model: pipeline.command("evaluate", pipeline.py(
        "eval", "-model", *pipeline.evaluated_files(model), "-src", *sources,
        "-tgt", *references, "-json", pipeline.path("eval", f"{model.name}.json"),
        "-output", pipeline.path("eval", f"{model.name}.hyp"),
        "-batch_size", pipeline.profile.translate_batch_size,
        "-gpu", 0 if pipeline.gpu else -1), log_name=f"evaluate.{model.name}"),
        pipeline.evaluated)


def deploy_stage(pipeline: Pipeline) -> Stage:
    """Every evaluated model through its deployment path (recipe/deployment.py).
    It needs the evaluate stage so that it runs alone: its speeds are timed on
    every core, one model at a time."""
    from importlib.metadata import version

    from onmt_qd.recipe.deployment import QUANTIZATION

    return Stage("deploy", lambda: deploy_all(pipeline), [pipeline.path("deployed")],
                 lambda: f"{evaluated_on(pipeline)} {QUANTIZATION} gpu={pipeline.gpu} "
                         f"ctranslate2={version('ctranslate2')}",
                 needs=["data", *(m.name for m in pipeline.evaluated), "compress", "evaluate"],
                 progress=lambda: models_done(pipeline, "deployed", pipeline.evaluated,
                                              "deployed"))


def deploy_all(pipeline: Pipeline) -> None:
    from onmt_qd.deploy.ct2 import cpu_threads

    os.makedirs(pipeline.path("deployed"), exist_ok=True)
    sources, references = test_files(pipeline)
    plan = {"models": [{"name": m.name, "files": pipeline.evaluated_files(m),
                        "reference": m == TEACHER} for m in pipeline.evaluated],
            "src": sources, "tgt": references, "beam_size": DEPLOY_BEAM,
            "batch_size": pipeline.profile.translate_batch_size, "gpu": pipeline.gpu,
            "threads": cpu_threads(), "folder": pipeline.path("deployed")}
    pipeline.command("deploy", [sys.executable, "-m", "onmt_qd.bin.recipe_deploy",
                                pipeline.write_config("deploy", plan)])


def report_stage(pipeline: Pipeline) -> Stage:
    """report.md, results.json and the plot, from the evaluate and deploy stages' files."""
    def report():
        from onmt_qd.recipe.report import write_report

        write_report(pipeline)
    return Stage("report", report, [pipeline.path("report.md")],
                 lambda: f"{evaluated_on(pipeline)} noise={pipeline.profile.noise_bleu}",
                 needs=["evaluate", "deploy"])


def test_files(pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """(sources, references): the test sets' files in the report's order. Each set
    is translated in a run of its own, so its scores are those of onmt_qd_eval on
    it alone; the pooled scores are over the concatenation of those translations."""
    sets = pipeline.test_sets().values()
    return [files["src"] for files in sets], [files["tgt"] for files in sets]


def models_done(pipeline: Pipeline, folder: str, models: list[ModelId], done: str,
                log_prefix: str | None = None) -> tuple[str, float]:
    """How many of ``models`` have their JSON in ``folder`` (compress, evaluate);
    with ``log_prefix``, the sentences each model still running has translated
    (its command's progress in logs/PREFIX.NAME.log), so a long one moves too."""
    finished = [os.path.exists(pipeline.path(folder, f"{m.name}.json")) for m in models]
    line = f"{sum(finished)}/{len(models)} models {done}"
    for model in (m for m, over in zip(models, finished) if log_prefix and not over):
        where = progress.counted(pipeline.path("logs", f"{log_prefix}.{model.name}.log"),
                                 "sentences")
        if where:
            line += f"; {model.name} {where[0]}"
    return line, sum(finished) / len(models) if models else 0.0
