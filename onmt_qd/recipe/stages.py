"""The paper's translation experiments as a recipe's stages: data, teacher, students
(full precision, distilled, PM-quantized, quantized-distilled, quantized with the
normal loss, differentiable quantization), compression, evaluation and the report.
Each stage runs an onmt_qd command (``python -m onmt_qd.bin.NAME``) in a subprocess."""
import glob
import os
import shutil
import sys
from collections.abc import Callable, Iterable

import yaml

from onmt_qd.distill.cache import VERSION as CACHE_VERSION
from onmt_qd.fileio import atomic_output
from onmt_qd.recipe import progress
from onmt_qd.recipe.data import (RECIPE_ONLY_KEYS, data_config, data_settings, filter_pairs,
                                 prepare_data, test_sets)
from onmt_qd.recipe.identity import (DIFFERENTIABLE_QUANTIZATION, PM_QUANTIZATION,
                                     QUANTIZED_DISTILLATION, QUANTIZED_NORMAL_LOSS,
                                     STUDENT_DISTILLED_FP, STUDENT_FP, TEACHER, ModelId)
from onmt_qd.recipe.profile import load_recipe, student_options, word_level
from onmt_qd.recipe.runner import RecipeError, Runner, Stage
from onmt_qd.recipe.signatures import given_digest, settings_digest

# what differentiable quantization takes from the training options: how batches are
# made (its optimizer and learning rate are its own)
BATCH_KEYS = ("batch_type", "batch_size", "valid_batch_size", "num_workers")
# a Transformer teacher translates the training source through CTranslate2 at this
# quantization (docs/results.md, "Teacher translations through CTranslate2")
TEACHER_QUANTIZATION = "int8"
DEPLOY_BEAM = 5  # the evaluate stage's beam (onmt_qd_eval's default)


class Pipeline:
    """The stages of one recipe and profile, run in ``work_dir`` by a ``Runner``."""

    def __init__(self, name, profile, work_dir, data_dir=None, mirror=None, gpu=False,
                 jobs=None):
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
        self.word_level = self.word_level_distillation()
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

    def processes_per_stage(self):
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

    def process_options(self):
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

    def model_path(self, name, ext=".pt"):
        return self.path("models", name + ext)

    def py(self, module, *args):
        return [sys.executable, "-m", f"onmt_qd.bin.{module}", *map(str, args)]

    # ---- stages ------------------------------------------------------------
    def build_stages(self):
        p = self.profile
        stages = [Stage("data", self.prepare_data, [self.path("data_config.yaml")],
                        settings_digest(data_settings(self.recipe, self.profile))),
                  self.teacher_stage()]
        if p.distill_data == "teacher":
            stages.append(Stage("teacher_translations", self.translate_training_source,
                                [self.teacher_translations_path(),
                                 self.teacher_translations_path(".scores"),
                                 *(self.distilled_pair() if self.filtering() else ()),
                                 self.path("data", "teacher.ct2")],
                                f"beam=5 engine=ctranslate2-{TEACHER_QUANTIZATION} "
                                f"filter={p.filter_worst},{p.filter_length_ratio}",
                                needs=["teacher"], progress=lambda: progress.counted(
                                    self.path("logs", "teacher_translations.log"),
                                    "sentences translated")))
        if self.uses_cache():
            stages.append(Stage("teacher_cache", self.build_teacher_cache,
                                [self.teacher_cache_path()],
                                f"topk={p.teacher_topk} data={p.distill_data} "
                                f"format={CACHE_VERSION}",
                                needs=[s for s in self.teacher_stages()
                                       if s != "teacher_cache"],
                                progress=lambda: progress.counted(
                                    self.path("logs", "teacher_cache.log"), "sentences")))
        for family, options in self.student_families():
            stages += [self.train_stage(ModelId(STUDENT_FP, family=family), options),
                       self.train_stage(ModelId(STUDENT_DISTILLED_FP, family=family), options,
                                        teacher=True)]
        quantized = []
        for family, options in self.student_families():
            quantized += self.quantized_stages(stages, family, options)
        self.quantized = quantized
        self.evaluated = [TEACHER, *(ModelId(method, family=family)
                                     for family, _ in self.student_families()
                                     for method in (STUDENT_FP, STUDENT_DISTILLED_FP)),
                          *quantized]
        covered = ",".join(m.name for m in self.evaluated)
        stages.append(Stage("compress", self.compress_all,
                            [self.path("sizes")] +
                            [self.model_path(m.name, ".qdz") for m in quantized],
                            covered, needs=[m.name for m in quantized],
                            progress=lambda: self.models_done("sizes", quantized, "compressed")))

        def evaluated_on():
            return (f"{covered} on {','.join(self.test_sets())} each alone "
                    f"batch={p.translate_batch_size}")
        stages.append(Stage("evaluate", self.evaluate_all, [self.path("eval")], evaluated_on,
                            needs=["data", *(m.name for m in self.evaluated), "compress"],
                            progress=lambda: self.models_done("eval", self.evaluated,
                                                              "evaluated", "evaluate")))
        stages.append(self.deploy_stage(evaluated_on))
        stages.append(Stage("report", self.report, [self.path("report.md")],
                            lambda: f"{evaluated_on()} noise={p.noise_bleu}",
                            needs=["evaluate", "deploy"]))
        return stages

    def student_families(self):
        """(family, onmt_qd_train options) of each student family the profile names."""
        return self.profile.families()

    def teacher_stage(self):
        """The teacher's training, or, when the recipe names a trained teacher, its
        copy into the work folder (its log says so; checked by every stage that loads
        it): a checkpoint as models/teacher.pt, a CTranslate2 directory as the onmt_qd
        export models/teacher.ct2 (its tokenizers inside). A changed teacher (by
        SHA-256) is copied again and its students remade."""
        given = self.recipe.get("teacher_model")
        if given is None:
            return self.train_stage(TEACHER, self.profile.teacher)
        translator = self.recipe.get("teacher_translator")

        def copy():
            if translator:
                from onmt_qd.deploy.foreign import import_translator

                import_translator(translator, self.teacher_file())
            else:
                with atomic_output(self.teacher_file()) as temporary:
                    shutil.copyfile(given, temporary)
            with open(self.path("logs", f"{TEACHER.name}.log"), "a") as handle:
                handle.write(f"teacher: the recipe's teacher_model {given} copied, "
                             f"not trained ({given_digest(self.recipe)})\n")
        return Stage(TEACHER.name, copy, [self.teacher_file()],
                     lambda: f"given={given} {given_digest(self.recipe)}", needs=["data"])

    def teacher_file(self):
        """The teacher in the work folder: a checkpoint, or a CTranslate2 directory
        when the recipe's teacher_model is one."""
        return self.model_path(TEACHER.name, ".ct2" if "teacher_translator" in self.recipe
                               else ".pt")

    def quantized_stages(self, stages, family, options):
        """Append the family's quantized students' stages; returns their identities."""
        p, made = self.profile, []
        fp_distilled = ModelId(STUDENT_DISTILLED_FP, family=family)
        for bits in p.pm_bits:
            model = ModelId(PM_QUANTIZATION, bits, family)
            stages.append(Stage(model.name, lambda m=model: self.command(m.name, self.py(
                "quantize", "-model", self.model_path(fp_distilled.name), "-bits", m.bits,
                "-output", self.model_path(m.name))), [self.model_path(model.name)],
                needs=[fp_distilled.name]))
            made.append(model)
        for bits in p.qd_bits:
            made.append(ModelId(QUANTIZED_DISTILLATION, bits, family))
            stages.append(self.train_stage(made[-1], options, teacher=True,
                                           warm_start=fp_distilled.name))
        for bits in p.normal_loss_bits:
            made.append(ModelId(QUANTIZED_NORMAL_LOSS, bits, family))
            stages.append(self.train_stage(made[-1], options,
                                           warm_start=ModelId(STUDENT_FP, family=family).name))
        for bits in p.diffquant_bits:
            model = ModelId(DIFFERENTIABLE_QUANTIZATION, bits, family)
            stages.append(Stage(model.name, lambda m=model: self.diffquant(m, fp_distilled),
                                [self.model_path(model.name)], f"data={p.distill_data} " +
                                settings_digest({"steps": p.diffquant_steps,
                                                 **self.batch_options()}),
                                needs=["teacher", fp_distilled.name],
                                progress=lambda m=model: progress.counted(
                                    self.path("logs", f"{m.name}.log"), "steps")))
            made.append(model)
        return made

    def word_level_distillation(self):
        """Whether distilled students use the teacher's outputs (distill_weight > 0 in
        any family)."""
        return word_level(self.recipe, self.profile)

    def uses_cache(self):
        """Word-level distilled students learn from the teacher's cached top-k outputs
        (teacher_topk 0: from the live teacher); with distill_weight 0 nothing is asked."""
        return self.profile.teacher_topk > 0 and self.word_level

    def teacher_cache_path(self):
        return self.path("models", "teacher_cache")

    def distilled_source(self):
        """What the teacher translates: the training source, then the recipe's mono."""
        data = data_config(self.work)
        return data.get("distill_src", data["data"]["train"]["path_src"])

    def teacher_translations_path(self, suffix=""):
        """The teacher's translations (suffix .scores: their scores)."""
        return self.path("data", f"train.teacher.{self.recipe['dataset'].tgt}{suffix}")

    def prepare_data(self):
        prepare_data(self, self.recipe, self.profile, self.data_dir, self.mirror)

    def test_sets(self):
        return test_sets(self.work, self.recipe["dataset"])

    def pooled_test_set(self):
        """{src, tgt} of the one corpus every model translates: the test sets in order."""
        return data_config(self.work)["test"]

    def train_options(self):
        """The recipe's training options with the profile's own on top."""
        return {**self.recipe["train"], **self.profile.train}

    def batch_options(self):
        """What differentiable quantization takes from the training options."""
        train = self.train_options()
        return {k: train[k] for k in BATCH_KEYS if k in train}

    def training_data(self, distilled=False):
        """The data options a training stage gets; distilled students train on the
        teacher's translations of the training source (and of the recipe's mono text)
        when distill_data is teacher."""
        data = data_config(self.work)
        config = {k: v for k, v in data.items() if k not in RECIPE_ONLY_KEYS}
        if distilled and self.profile.distill_data == "teacher":
            path_src, path_tgt = self.distilled_pair()
            config["data"]["train"].update(path_src=path_src, path_tgt=path_tgt)
        return config

    def filtering(self):
        """Whether the profile drops some teacher-translated pairs (filter_* keys)."""
        return bool(self.profile.filter_worst or self.profile.filter_length_ratio)

    def distilled_pair(self):
        """(source, target) files distilled students train on with distill_data
        teacher: the teacher's source and translations, or what filtering kept."""
        if self.filtering():
            target = self.recipe["dataset"].tgt
            return (self.path("data", f"distill.kept.{self.recipe['dataset'].src}"),
                    self.path("data", f"distill.kept.{target}"))
        return self.distilled_source(), self.teacher_translations_path()

    def write_config(self, name, config):
        """configs/NAME.yaml, the options a stage's command reads."""
        path = self.path("configs", f"{name}.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        return path

    def train_stage(self, model_id, model, teacher=False, warm_start=None):
        """A training stage. Quantized students train from scratch, as in the paper,
        unless the profile sets ``quantized_epochs`` (to save time): then they resume
        the full-precision run of the same loss (``warm_start``) that many epochs before
        its end, optimizer and learning-rate schedule included, and finish it
        quantized, so they see exactly as many epochs as the full-precision student.
        Distilled students (``teacher``) learn from the teacher's cache, or its live
        outputs when the profile sets teacher_topk 0, and from its translations when
        distill_data is teacher."""
        p, name = self.profile, model_id.name
        bits = model_id.bits if model_id.quantized else None
        resumes = bool(bits and warm_start and p.quantized_epochs)

        def run():
            config = self.training_data(distilled=teacher)
            config.update(self.train_options())
            config.update(model if model_id == TEACHER else student_options(model, bits))
            config["keep_checkpoint"] = 1 if bits else -1
            if resumes:
                config.update(train_from=self.epoch_checkpoint(
                    warm_start, model["epochs"] - p.quantized_epochs))
            config["save_model"] = self.path("models", name, "model")
            if teacher and self.uses_cache():
                config.update(teacher_cache=self.teacher_cache_path(), topk=p.teacher_topk)
            elif teacher and self.word_level:
                config["teacher_model"] = self.teacher_file()
            config.update(self.process_options())
            self.command(name, self.py("train", "-config", self.write_config(name, config)))
            if model_id == TEACHER and p.teacher_average > 1:
                self.average_teacher(model["epochs"])
            else:
                os.replace(self.path("models", name, "model_best.pt"), self.model_path(name))
        distillation = f"data={p.distill_data} teacher=" + (
            f"cache top{p.teacher_topk}" if self.uses_cache() else
            "live" if self.word_level else "none") + " " if teacher else ""
        averaged = {"teacher_average": p.teacher_average} \
            if model_id == TEACHER and p.teacher_average > 1 else {}
        signature = distillation + settings_digest(
            {**self.train_options(), **model, **averaged, "quant_bits": bits,
             "quantized_epochs": p.quantized_epochs if resumes else None,
             # N processes train with N times the batch (the cache is the same bytes)
             **({"world_size": self.world_size} if self.world_size > 1 else {})})
        needs = ["data", *(self.teacher_stages() if teacher else ())]
        if resumes:
            needs.append(warm_start)
        return Stage(name, run, [self.path("models", name), self.model_path(name)], signature,
                     needs, lambda: progress.training(self.path("logs", f"{name}.log")))

    def average_teacher(self, epochs):
        """models/teacher.pt: the mean of the teacher's last teacher_average epoch
        checkpoints (said in its log)."""
        from onmt_qd.compat import save_atomic
        from onmt_qd.models import average_checkpoints

        last = [self.epoch_checkpoint(TEACHER.name, epoch) for epoch in
                range(epochs - self.profile.teacher_average + 1, epochs + 1)]
        save_atomic(average_checkpoints(last), self.model_path(TEACHER.name))
        with open(self.path("logs", f"{TEACHER.name}.log"), "a") as handle:
            handle.write(f"teacher: the mean of {', '.join(map(os.path.basename, last))}\n")

    def teacher_stages(self):
        """The stages whose outputs carry the teacher's knowledge to a student."""
        return ["teacher",
                *(["teacher_translations"] if self.profile.distill_data == "teacher" else []),
                *(["teacher_cache"] if self.uses_cache() else [])]

    def epoch_checkpoint(self, name, epoch):
        """The checkpoint a full-precision run saved at the end of ``epoch``."""
        saved = sorted(glob.glob(self.path("models", name, "model_step_*.pt")),
                       key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
        if not 1 <= epoch <= len(saved):
            raise RecipeError(f"{name} has no checkpoint for epoch {epoch}: "
                              "quantized_epochs must be smaller than the student's epochs")
        return saved[epoch - 1]

    def diffquant(self, model, start):
        """Learns the points of ``start``'s weights against the live teacher (on its
        translations when distill_data is teacher)."""
        config = self.training_data(distilled=True)
        config.update(self.batch_options())
        self.command(model.name, self.py(
            "diffquant", "-config", self.write_config(model.name, config),
            "-model", self.model_path(start.name),
            "-teacher_model", self.teacher_file(), "-bits", model.bits,
            "-train_steps", self.profile.diffquant_steps,
            "-output", self.model_path(model.name), *(["-gpu_ranks", 0] if self.gpu else [])))

    def compress_all(self):
        os.makedirs(self.path("sizes"), exist_ok=True)
        self.side_by_side(lambda name: self.command("compress", self.py(
            "compress", "-model", self.model_path(name), "-output", self.model_path(name, ".qdz"),
            "-report_json", self.path("sizes", f"{name}.json")), log_name=f"compress.{name}"),
            [m.name for m in self.quantized])

    def models_done(self, folder, models, done, log_prefix=None):
        """How many of ``models`` have their JSON in ``folder`` (compress, evaluate);
        with ``log_prefix``, the sentences each model still running has translated
        (its command's progress in logs/PREFIX.NAME.log), so a long one moves too."""
        finished = [os.path.exists(self.path(folder, f"{m.name}.json")) for m in models]
        line = f"{sum(finished)}/{len(models)} models {done}"
        for model in (m for m, over in zip(models, finished) if log_prefix and not over):
            where = progress.counted(self.path("logs", f"{log_prefix}.{model.name}.log"),
                                     "sentences")
            if where:
                line += f"; {model.name} {where[0]}"
        return line, sum(finished) / len(models) if models else 0.0

    def evaluated_file(self, model):
        """Quantized models are evaluated from their compressed file, the teacher as the
        recipe has it (teacher_file)."""
        if model == TEACHER:
            return self.teacher_file()
        return self.model_path(model.name, ".qdz" if model.quantized else ".pt")

    def test_files(self):
        """(sources, references): the test sets' files in the report's order. Each set
        is translated in a run of its own, so its scores are those of onmt_qd_eval on
        it alone; the pooled scores are over the concatenation of those translations."""
        sets = self.test_sets().values()
        return [files["src"] for files in sets], [files["tgt"] for files in sets]

    def evaluate_all(self):
        os.makedirs(self.path("eval"), exist_ok=True)
        sources, references = self.test_files()
        self.side_by_side(lambda model: self.command("evaluate", self.py(
            "eval", "-model", self.evaluated_file(model), "-src", *sources,
            "-tgt", *references, "-json", self.path("eval", f"{model.name}.json"),
            "-output", self.path("eval", f"{model.name}.hyp"),
            "-batch_size", self.profile.translate_batch_size, "-gpu", 0 if self.gpu else -1),
            log_name=f"evaluate.{model.name}"), self.evaluated)

    def deploy_stage(self, evaluated_on):
        """Every evaluated model through its deployment path (recipe/deployment.py).
        It needs the evaluate stage so that it runs alone: its speeds are timed on
        every core, one model at a time."""
        from importlib.metadata import version

        from onmt_qd.recipe.deployment import QUANTIZATION

        return Stage("deploy", self.deploy_all, [self.path("deployed")],
                     lambda: f"{evaluated_on()} {QUANTIZATION} gpu={self.gpu} "
                             f"ctranslate2={version('ctranslate2')}",
                     needs=["data", *(m.name for m in self.evaluated), "compress", "evaluate"],
                     progress=lambda: self.models_done("deployed", self.evaluated, "deployed"))

    def deploy_all(self):
        from onmt_qd.deploy.ct2 import cpu_threads

        os.makedirs(self.path("deployed"), exist_ok=True)
        sources, references = self.test_files()
        plan = {"models": [{"name": m.name, "file": self.evaluated_file(m),
                            "reference": m == TEACHER} for m in self.evaluated],
                "src": sources, "tgt": references, "beam_size": DEPLOY_BEAM,
                "batch_size": self.profile.translate_batch_size, "gpu": self.gpu,
                "threads": cpu_threads(), "folder": self.path("deployed")}
        self.command("deploy", [sys.executable, "-m", "onmt_qd.bin.recipe_deploy",
                                self.write_config("deploy", plan)])

    def translate_training_source(self):
        """Sequence-level distillation data: the teacher's beam-5 translation of every
        training source line and of the recipe's mono text, one line each (empty stays
        empty), by
        onmt_qd_teacher_translate: chunks a rerun after a kill continues from, progress
        in the stage's log. The teacher translates through CTranslate2 where it can
        (teacher_translator)."""
        self.command("teacher_translations", self.py(
            "teacher_translate", "-model", self.teacher_translator(),
            "-src", self.distilled_source(),
            "-output", self.teacher_translations_path(),
            "-scores", self.teacher_translations_path(".scores"), "-beam_size", 5,
            "-batch_size", self.profile.translate_batch_size, "-gpu", 0 if self.gpu else -1))
        if self.filtering():
            kept = filter_pairs(self.distilled_source(), self.teacher_translations_path(),
                                self.teacher_translations_path(".scores"),
                                self.distilled_pair(), self.profile.filter_worst,
                                self.profile.filter_length_ratio)
            with open(self.path("logs", "teacher_translations.log"), "a") as handle:
                handle.write(f"teacher_translations: {kept}\n")

    def teacher_translator(self):
        """What translates the training source: a CTranslate2 teacher as given; a
        Transformer checkpoint exported to CTranslate2 at TEACHER_QUANTIZATION first
        (data/teacher.ct2); an LSTM, which CTranslate2 does not convert, as it is
        (OpenNMT-py)."""
        from onmt_qd.qdz import load_any
        from onmt_qd.recipe.deployment import deployment

        teacher = self.teacher_file()
        if "teacher_translator" in self.recipe:
            return teacher
        engine, skipped = deployment(load_any(teacher)["opt"], gpu=False)
        if engine != "CTranslate2" or skipped:
            return teacher
        exported = self.path("data", "teacher.ct2")
        self.command("teacher_translations", self.py(
            "export", "-model", teacher, "-output", exported,
            "-quantization", TEACHER_QUANTIZATION))
        return exported

    def build_teacher_cache(self):
        """The teacher's top-k outputs over the corpus the distilled students train on."""
        config = self.training_data(distilled=True)
        config.update(self.train_options())
        config.update(self.process_options())
        self.command("teacher_cache", self.py(
            "teacher_cache", "-config", self.write_config("teacher_cache", config),
            "-teacher_model", self.teacher_file(),
            "-topk", self.profile.teacher_topk, "-output", self.teacher_cache_path()))

    def report(self):
        from onmt_qd.recipe.report import write_report

        write_report(self)


def _cuda_devices():
    """How many GPUs torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count()
