"""The paper's translation experiments as a recipe's stages: data, teacher, students
(full precision, distilled, PM-quantized, quantized-distilled, quantized with the
normal loss, differentiable quantization), compression, evaluation and the report.
Each stage runs an onmt_qd command (``python -m onmt_qd.bin.NAME``) in a subprocess.

``Pipeline`` holds one recipe and profile run in a work folder: its settings, the
paths and options its stages share, and a ``Runner`` that runs them. The stages
themselves are built by unit: teacher_stages.py, training_stages.py,
student_stages.py and evaluation_stages.py."""
import os
import sys
from collections.abc import Callable, Iterable

import yaml

from onmt_qd.recipe.data import RECIPE_ONLY_KEYS, data_config, data_settings, prepare_data, \
    test_sets
from onmt_qd.recipe.evaluation_stages import compress_stage, deploy_stage, evaluate_stage, \
    report_stage
from onmt_qd.recipe.identity import STUDENT_DISTILLED_FP, STUDENT_FP, TEACHER, ModelId
from onmt_qd.recipe.profile import load_recipe, word_level
from onmt_qd.recipe.runner import RecipeError, Runner, Stage
from onmt_qd.recipe.signatures import settings_digest
from onmt_qd.recipe.student_stages import full_precision_stages, quantized_models, \
    quantized_stage
from onmt_qd.recipe.teacher_stages import (cache_stage, ensemble_stages, filter_stage,
                                           teacher_stage, translations_stage)


class Pipeline:
    """The stages of one recipe and profile, run in ``work_dir``."""

    def __init__(self, name: str, profile: str, work_dir: str, data_dir: str | None = None,
                 mirror: str | None = None, gpu: bool = False, jobs: int | None = None):
        self.name = name
        self.recipe, self.profile = load_recipe(name, profile)
        for where, filled in self.recipe["family_defaults"].items():
            print(f"{where} (a Transformer) gets, unset in the recipe: " +
                  ", ".join(f"{k}: {v}" for k, v in filled.items()), flush=True)
        self.gpu = gpu or self.profile.gpu
        if self.gpu and not _cuda_devices():
            raise RecipeError(f"profile {profile} trains on a GPU (gpu: true) but torch sees "
                              "no CUDA device: run it on a GPU machine, or use -profile "
                              "quick on the CPU" if self.profile.gpu else
                              "-gpu given but torch sees no CUDA device: leave -gpu out to "
                              "run on the CPU")
        self.runner = Runner(work_dir, self.profile.jobs if jobs is None else jobs)
        self.world_size = self.processes_per_stage()
        if not self.gpu:
            self.runner.processes = self.world_size
        self.data_dir = os.path.abspath(data_dir or self.path("data"))
        self.mirror = mirror
        self.word_level = word_level(self.recipe, self.profile)
        for sub in ("configs", "models", "eval"):
            os.makedirs(self.path(sub), exist_ok=True)
        self.runner.stages = self.build_stages()

    # ---- the runner's: the work folder, the stages, how commands run ------
    @property
    def work(self) -> str:
        return self.runner.work

    @property
    def stages(self) -> list[Stage]:
        return self.runner.stages

    def path(self, *parts: str) -> str:
        return self.runner.path(*parts)

    def run(self, only: Iterable[str] | None = None) -> None:
        self.runner.run(only)

    def command(self, stage: str, args: list[str], log_name: str | None = None) -> None:
        self.runner.command(stage, args, log_name)

    def side_by_side(self, run: Callable, items: Iterable) -> None:
        self.runner.side_by_side(run, items)

    # ---- stages ------------------------------------------------------------
    def build_stages(self) -> list[Stage]:
        """Every stage, in the order a run with one job takes them; ``quantized`` and
        ``evaluated`` name the models the last stages cover."""
        p, families = self.profile, self.profile.families()
        stages = [self.data_stage(), teacher_stage(self), *ensemble_stages(self)]
        if p.distill_data == "teacher":
            stages.append(translations_stage(self))
        if self.filtering():
            stages.append(filter_stage(self))
        if self.uses_cache():
            stages.append(cache_stage(self))
        for family, options in families:
            stages += full_precision_stages(self, family, options)
        self.quantized = []
        for family, options in families:
            for model in quantized_models(p, family):
                stages.append(quantized_stage(self, model, options))
                self.quantized.append(model)
        self.evaluated = [TEACHER, *(ModelId(method, family=family) for family, _ in families
                                     for method in (STUDENT_FP, STUDENT_DISTILLED_FP)),
                          *self.quantized]
        return stages + [compress_stage(self), evaluate_stage(self), deploy_stage(self),
                         report_stage(self)]

    def data_stage(self) -> Stage:
        """data/ and data_config.yaml (data.py), made again when the dataset, its subset,
        the vocabulary or a file the recipe gives changed."""
        return Stage("data", lambda: prepare_data(self, self.recipe, self.profile,
                                                  self.data_dir, self.mirror),
                     [self.path("data_config.yaml")],
                     settings_digest(data_settings(self.recipe, self.profile)))

    # ---- processes ---------------------------------------------------------
    def processes_per_stage(self) -> int:
        """The profile's world_size, "all" resolved to the GPUs torch sees."""
        size = self.profile.world_size
        if self.gpu:
            visible = _cuda_devices()
            if size == "all":
                return visible
            if size > visible:
                raise RecipeError(f"world_size {size} in profile {self.profile.name}: torch sees "
                                  f"{visible} GPU{'s' if visible > 1 else ''}; lower it or use "
                                  "world_size: all")
        return size

    def process_options(self) -> dict:
        """The processes of a training stage or the cache build: GPUs 0..N-1 (NCCL), or
        N CPU processes (gloo); each run on its own rendezvous port, as stages run side
        by side."""
        if self.gpu:
            config = {"world_size": self.world_size, "gpu_ranks": list(range(self.world_size))}
        elif self.world_size > 1:
            config = {"world_size": self.world_size, "gpu_backend": "gloo"}
        else:
            return {}
        if self.world_size > 1:
            from onmt_qd.processes import free_port  # (torch: not at the recipe's start)

            config["master_port"] = free_port()
        return config

    def py(self, module: str, *args: object) -> list[str]:
        return [sys.executable, "-m", f"onmt_qd.bin.{module}", *map(str, args)]

    # ---- the files stages share --------------------------------------------
    def model_path(self, name: str, ext: str = ".pt") -> str:
        return self.path("models", name + ext)

    def teacher_file(self) -> str:
        """The teacher in the work folder: a checkpoint, or a CTranslate2 directory
        when the recipe's teacher_model is one."""
        return self.model_path(TEACHER.name, ".ct2" if "teacher_translator" in self.recipe
                               else ".pt")

    def teacher_members(self) -> list[str]:
        """The stage and file names of the teacher's models: ``teacher``, then
        ``teacher_2`` .. ``teacher_N`` when the profile trains an ensemble of N."""
        return [TEACHER.name, *(f"{TEACHER.name}_{k}"
                                for k in range(2, self.profile.teacher_ensemble + 1))]

    def teacher_files(self) -> list[str]:
        """What the students learn from: teacher_file, and the other members' checkpoints
        of an ensemble (several files: an ensemble wherever -teacher_model or -model
        takes it)."""
        return [self.teacher_file(), *(self.model_path(name)
                                       for name in self.teacher_members()[1:])]

    def evaluated_files(self, model: ModelId) -> list[str]:
        """Quantized models are evaluated from their compressed file, the teacher as the
        students learn from it (teacher_files)."""
        if model == TEACHER:
            return self.teacher_files()
        return [self.model_path(model.name, ".qdz" if model.quantized else ".pt")]

    def teacher_cache_path(self) -> str:
        return self.path("models", "teacher_cache")

    def teacher_translations_path(self, suffix: str = "") -> str:
        """The teacher's translations (suffix .scores: their scores)."""
        return self.path("data", f"train.teacher.{self.recipe['dataset'].tgt}{suffix}")

    def distilled_source(self) -> str:
        """What the teacher translates: the training source, then the recipe's mono."""
        data = data_config(self.work)
        return data.get("distill_src", data["data"]["train"]["path_src"])

    def distilled_pair(self) -> tuple[str, str]:
        """(source, target) files distilled students train on with distill_data
        teacher: the teacher's source and translations, or what filtering kept."""
        if self.filtering():
            target = self.recipe["dataset"].tgt
            return (self.path("data", f"distill.kept.{self.recipe['dataset'].src}"),
                    self.path("data", f"distill.kept.{target}"))
        return self.distilled_source(), self.teacher_translations_path()

    def test_sets(self) -> dict[str, dict[str, str]]:
        return test_sets(self.work, self.recipe["dataset"])

    def pooled_test_set(self) -> dict[str, str]:
        """{src, tgt} of the one corpus every model translates: the test sets in order."""
        return data_config(self.work)["test"]

    def write_config(self, name: str, config: dict) -> str:
        """configs/NAME.yaml, the options a stage's command reads."""
        path = self.path("configs", f"{name}.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        return path

    # ---- how the teacher's knowledge reaches the students ------------------
    def uses_cache(self) -> bool:
        """Word-level distilled students learn from the teacher's cached top-k outputs
        (teacher_topk 0: from the live teacher); with distill_weight 0 nothing is asked."""
        return self.profile.teacher_topk > 0 and self.word_level

    def filtering(self) -> bool:
        """Whether the profile drops some teacher-translated pairs (filter_* keys)."""
        return bool(self.profile.filter_worst or self.profile.filter_length_ratio)

    def knowledge_stages(self) -> list[str]:
        """The stages whose outputs carry the teacher's knowledge to a student."""
        return [*self.teacher_members(),
                *(["teacher_translations"] if self.profile.distill_data == "teacher" else []),
                *(["teacher_translations_filter"] if self.filtering() else []),
                *(["teacher_cache"] if self.uses_cache() else [])]

    # ---- training options --------------------------------------------------
    def train_options(self) -> dict:
        """The recipe's training options with the profile's own on top."""
        return {**self.recipe["train"], **self.profile.train}

    def training_data(self, distilled: bool = False) -> dict:
        """The data options a training stage gets; distilled students train on the
        teacher's translations of the training source (and of the recipe's mono text)
        when distill_data is teacher."""
        data = data_config(self.work)
        config = {k: v for k, v in data.items() if k not in RECIPE_ONLY_KEYS}
        if distilled and self.profile.distill_data == "teacher":
            path_src, path_tgt = self.distilled_pair()
            config["data"]["train"].update(path_src=path_src, path_tgt=path_tgt)
        return config


def _cuda_devices() -> int:
    """How many GPUs torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count()
