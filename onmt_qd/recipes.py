"""Recipes: the paper's translation experiments as resumable stages.

Every stage runs a real onmt_qd command in a subprocess, writes its config and log
under the work directory, and leaves ``stages/NAME.done`` only when it finished:
a finished stage is skipped, a killed one starts again from a clean slate."""
import glob
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import yaml

from onmt_qd import datasets
from onmt_qd.fileio import atomic_output

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


class RecipeError(ValueError):
    pass


RECIPE_KEYS = {"dataset", "sentencepiece", "vocab_size", "train", "profiles"}
PROFILE_KEYS = {"subset", "spm_vocab_size", "gpu", "train", "teacher", "student",
                "quantized_epochs", "pm_bits", "qd_bits", "normal_loss_bits", "diffquant_bits",
                "diffquant_steps", "teacher_topk", "distill_data", "noise_bleu", "jobs",
                "translate_batch_size"}
# what differentiable quantization takes from the training options: how batches are
# made (its optimizer and learning rate are its own)
BATCH_KEYS = ("batch_type", "batch_size", "valid_batch_size", "num_workers")
DISTILL_DATA = ("gold", "teacher")
DEFAULT_TOPK = 8
# the spread of one student's BLEU across two quick runs (docs/results.md: 26.71 vs
# 27.77 on test_2016_flickr); a claim holds only by more than this
DEFAULT_NOISE_BLEU = 1.0
TEST_KEYS = ("test", "test_sets")  # in data_config.yaml for evaluation, not for training
TRANSLATION_CHUNKS = 10  # the teacher translates the training source in this many parts


def load_recipe(name, profile):
    path = os.path.join(RECIPES_DIR, name, "recipe.yaml")
    if not os.path.isfile(path):
        known = sorted(os.listdir(RECIPES_DIR))
        raise RecipeError(f"unknown recipe '{name}'; known: {', '.join(known)}")
    with open(path) as handle:
        recipe = yaml.safe_load(handle)
    if profile not in recipe["profiles"]:
        raise RecipeError(f"recipe {name} has no profile '{profile}'; "
                          f"known: {', '.join(recipe['profiles'])}")
    check_recipe(recipe, profile, path)
    return recipe, recipe["profiles"][profile]


def check_recipe(recipe, profile, path):
    """Fail before any training on a key that means nothing: a typo in the students'
    options would otherwise surface only after the teacher has trained."""
    from onmt_qd.opts import check_keys, did_you_mean, train_parser

    for keys, known, where in ((recipe, RECIPE_KEYS, path),
                               (recipe["profiles"][profile], PROFILE_KEYS,
                                f"profile {profile} of {path}")):
        for key in keys:
            if key not in known:
                raise RecipeError(f"unknown key '{key}' in {where}{did_you_mean(key, known)}")
    settings = recipe["profiles"][profile]
    if settings.get("distill_data", "gold") not in DISTILL_DATA:
        raise RecipeError(f"distill_data in profile {profile} of {path} must be one of "
                          f"{', '.join(DISTILL_DATA)}, got '{settings['distill_data']}'")
    topk = settings.get("teacher_topk", DEFAULT_TOPK)
    if not isinstance(topk, int) or topk < 0:
        raise RecipeError(f"teacher_topk in profile {profile} of {path} must be a whole "
                          "number >= 0 (0: a live teacher instead of the cache)")
    for key in ("jobs", "translate_batch_size"):
        value = settings.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"{key} in profile {profile} of {path} must be a whole number "
                              f">= 1, got {value!r}")
    noise = settings.get("noise_bleu", DEFAULT_NOISE_BLEU)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise RecipeError(f"noise_bleu in profile {profile} of {path} must be a number of "
                          f"BLEU points >= 0, got {noise!r}")
    parser = train_parser()
    check_keys(parser, recipe["train"], f"train options of {path}")
    check_keys(parser, settings.get("train", {}), f"train options of profile {profile} of {path}")
    for model in ("teacher", "student"):
        check_keys(parser, recipe["profiles"][profile][model],
                   f"{model} options of profile {profile} of {path}")


class Stage:
    """``signature`` names what the stage covers (the models a compress/evaluate/report
    stage handles): a finished stage whose signature changed runs again. A callable
    signature is asked when the stage's turn comes (after the stages it depends on).
    ``needs`` names the stages whose outputs it reads: when one of them ran again, so
    does this one (a retrained student is quantized, compressed and evaluated again);
    what those stages read in turn reaches it through their own re-run."""

    def __init__(self, name, run, outputs=(), signature="", needs=()):
        self.name, self.run, self.outputs, self._signature = name, run, outputs, signature
        self.needs = tuple(needs)

    @property
    def signature(self):
        return self._signature() if callable(self._signature) else self._signature


class Pipeline:
    """The stages of one recipe and profile, run in order in ``work_dir``."""

    jobs = 1  # stages at a time

    def __init__(self, name, profile, work_dir, data_dir=None, mirror=None, gpu=False,
                 jobs=None):
        self.name, self.profile_name = name, profile
        self.recipe, self.profile = load_recipe(name, profile)
        self.work = os.path.abspath(work_dir)
        self.data_dir = os.path.abspath(data_dir or os.path.join(self.work, "data"))
        self.mirror = mirror
        self.gpu = gpu or bool(self.profile.get("gpu"))
        if self.gpu and not _cuda():
            raise RecipeError(("-gpu given" if gpu else f"profile {profile} trains on a GPU "
                               "(gpu: true)") + " but torch sees no CUDA device: run it on a "
                              "GPU machine, or use -profile quick on the CPU")
        self.distill_data = self.profile.get("distill_data", "gold")
        self.teacher_topk = self.profile.get("teacher_topk", DEFAULT_TOPK)
        self.noise_bleu = self.profile.get("noise_bleu", DEFAULT_NOISE_BLEU)
        self.jobs = self.profile.get("jobs", 1) if jobs is None else jobs
        if self.jobs < 1:
            raise RecipeError(f"-jobs must be at least 1, got {self.jobs}")
        self.translate_batch_size = self.profile.get("translate_batch_size", 64)
        self.progress_lock = threading.Lock()  # translation parts report progress in turn
        self.word_level = self.word_level_distillation()
        for sub in ("stages", "logs", "configs", "models", "eval"):
            os.makedirs(os.path.join(self.work, sub), exist_ok=True)
        self.stages = self.build_stages()

    # ---- paths -------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def model_path(self, name, ext=".pt"):
        return self.path("models", name + ext)

    # ---- running -----------------------------------------------------------
    def command(self, stage, args, log_name=None):
        """Run one onmt_qd command, output to logs/STAGE.log (or LOG_NAME.log); fail
        with the log's tail."""
        log = self.path("logs", f"{log_name or stage}.log")
        with open(log, "w" if log_name else "a") as handle:  # a stage's log is emptied at its start
            handle.write("$ " + " ".join(args) + "\n")
            handle.flush()
            result = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT,
                                    env=self.command_environment())
        if result.returncode != 0:
            with open(log) as handle:
                tail = handle.read().strip().splitlines()[-1:]
            raise RecipeError(f"stage {stage} failed ({tail[0] if tail else 'no output'}); "
                              f"see {log}")

    def command_environment(self):
        """Commands running side by side share the CPU cores instead of each starting a
        thread per core (oversubscribed, torch's threads spin and every job crawls);
        a thread count the user set is kept."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.jobs > 1:
            threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
            env.setdefault("OMP_NUM_THREADS", threads)
            env.setdefault("MKL_NUM_THREADS", threads)
        return env

    def py(self, module, *args):
        return [sys.executable, "-m", f"onmt_qd.bin.{module}", *map(str, args)]

    def run(self, only=None):
        """Run the stages (or ``only`` these); with ``jobs`` > 1 a stage starts as soon
        as the stages it needs have finished, up to ``jobs`` at a time (with 1, in
        order). A failed stage stops new starts; those running finish first."""
        todo = [s for s in self.stages if not only or s.name in only]
        if only:
            unknown = set(only) - {s.name for s in self.stages}
            if unknown:
                raise RecipeError(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: "
                                  + ", ".join(s.name for s in self.stages))
        self.start = time.time()
        waiting = {s.name for s in todo}
        pending = list(enumerate(todo, 1))
        running = {}
        with ThreadPoolExecutor(self.jobs) as pool:
            while pending or running:
                for item in [(i, s) for i, s in pending if not waiting & set(s.needs)]:
                    if len(running) == self.jobs:
                        break
                    pending.remove(item)
                    running[pool.submit(self.run_stage, *item, len(todo))] = item[1]
                if not running:
                    raise RecipeError("stages wait on each other: " +
                                      ", ".join(s.name for _, s in pending))
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    waiting.discard(running.pop(future).name)
                    if future.exception() is not None:
                        pending.clear()  # let the others finish, start nothing new
                for future in finished:
                    future.result()

    def run_stage(self, i, stage, total):
        done = self.path("stages", stage.name + ".done")
        prefix = f"[{i}/{total}] {stage.name}"
        key = self.stage_key(stage)
        if self.finished_record(stage.name).get("signature") == key:
            print(f"{prefix}: done already, skipped", flush=True)
            return
        for output in stage.outputs:  # a killed run may have left part of these
            shutil.rmtree(output, ignore_errors=True) if os.path.isdir(output) else \
                os.path.exists(output) and os.remove(output)
        open(self.path("logs", f"{stage.name}.log"), "w").close()
        print(f"{prefix} ...", flush=True)
        t0 = time.time()
        stage.run()
        with atomic_output(done) as temporary, open(temporary, "w") as handle:
            json.dump({"seconds": round(time.time() - t0, 1), "signature": key,
                       "finished": time.time_ns()}, handle)
        print(f"{prefix}: finished in {(time.time() - t0) / 60:.1f} min "
              f"(total {(time.time() - self.start) / 60:.1f} min)", flush=True)

    def side_by_side(self, run, items):
        """``run(item)`` for every item, ``jobs`` at a time; the first error is raised
        once all have finished."""
        with ThreadPoolExecutor(self.jobs) as pool:
            for future in [pool.submit(run, item) for item in items]:
                future.result()

    def finished_record(self, name):
        """What ``stages/NAME.done`` says ({} when the stage has not finished)."""
        try:
            with open(self.path("stages", name + ".done")) as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {"signature": ""}

    def stage_key(self, stage):
        """The stage's signature plus when each stage it needs last finished (stages
        finished by an older onmt_qd recorded no time and add nothing)."""
        runs = [f"{n}@{t}" for n in stage.needs if (t := self.finished_record(n).get("finished"))]
        return " | ".join([stage.signature, *runs]) if runs else stage.signature

    # ---- stages ------------------------------------------------------------
    def build_stages(self):
        p = self.profile
        stages = [Stage("data", self.prepare_data, [self.path("data_config.yaml")]),
                  self.train_stage("teacher", p["teacher"])]
        if self.distill_data == "teacher":
            stages.append(Stage("teacher_translations", self.translate_training_source,
                                [self.teacher_translations_path(),
                                 self.path("data", "teacher_translations.parts")],
                                "beam=5", needs=["teacher"]))
        if self.uses_cache():
            stages.append(Stage("teacher_cache", self.build_teacher_cache,
                                [self.teacher_cache_path()],
                                f"topk={self.teacher_topk} data={self.distill_data}",
                                needs=[s for s in self.teacher_stages()
                                       if s != "teacher_cache"]))
        stages += [self.train_stage("student_fp", p["student"]),
                   self.train_stage("student_distilled_fp", p["student"], teacher=True)]
        quantized = []
        for bits in p.get("pm_bits", []):
            name = f"pm_quantization_{bits}bit"
            stages.append(Stage(name, lambda b=bits, n=name: self.command(n, self.py(
                "quantize", "-model", self.model_path("student_distilled_fp"), "-bits", b,
                "-output", self.model_path(n))), [self.model_path(name)],
                needs=["student_distilled_fp"]))
            quantized.append(name)
        for bits in p.get("qd_bits", []):
            stages.append(self.train_stage(f"quantized_distillation_{bits}bit", p["student"],
                                           teacher=True, bits=bits,
                                           warm_start="student_distilled_fp"))
            quantized.append(stages[-1].name)
        for bits in p.get("normal_loss_bits", []):
            stages.append(self.train_stage(f"quantized_normal_loss_{bits}bit", p["student"],
                                           bits=bits, warm_start="student_fp"))
            quantized.append(stages[-1].name)
        for bits in p.get("diffquant_bits", []):
            name = f"differentiable_quantization_{bits}bit"
            stages.append(Stage(name, lambda b=bits, n=name: self.diffquant(n, b),
                                [self.model_path(name)], f"data={self.distill_data}",
                                needs=["teacher", "student_distilled_fp"]))
            quantized.append(name)
        self.quantized = quantized
        self.evaluated = ["teacher", "student_fp", "student_distilled_fp"] + quantized
        covered = ",".join(self.evaluated)
        stages.append(Stage("compress", self.compress_all,
                            [self.path("sizes")] + [self.model_path(n, ".qdz") for n in quantized],
                            covered, needs=quantized))

        def evaluated_on():
            return f"{covered} on {','.join(self.test_sets())}"
        stages.append(Stage("evaluate", self.evaluate_all, [self.path("eval")], evaluated_on,
                            needs=["data", *self.evaluated, "compress"]))
        stages.append(Stage("report", self.report, [self.path("report.md")],
                            lambda: f"{evaluated_on()} noise={self.noise_bleu}",
                            needs=["evaluate"]))
        return stages

    def word_level_distillation(self):
        """Whether distilled students use the teacher's outputs (distill_weight > 0)."""
        from onmt_qd.opts import train_parser

        weight = self.profile["student"].get("distill_weight",
                                             train_parser().get_default("distill_weight"))
        return weight > 0

    def uses_cache(self):
        """Word-level distilled students learn from the teacher's cached top-k outputs
        (teacher_topk 0: from the live teacher); with distill_weight 0 nothing is asked."""
        return self.teacher_topk > 0 and self.word_level

    def teacher_cache_path(self):
        return self.path("models", "teacher_cache")

    def teacher_translations_path(self):
        tgt = datasets.dataset(self.recipe["dataset"])["tgt"]
        return self.path("data", f"train.teacher.{tgt}")

    def prepare_data(self):
        name = self.recipe["dataset"]
        raw = self.path("data_raw") if self.profile.get("subset") else self.data_dir
        if not os.path.exists(os.path.join(raw, "MANIFEST.json")):
            datasets.get(name, raw, self.mirror)
        files = datasets.split_files(name, raw)
        test_sets = datasets.test_sets(name, raw)
        if not test_sets:
            raise RecipeError(f"dataset {name} has no test split with references")
        if self.profile.get("subset"):
            sizes = self.profile["subset"]
            files = self.subset({k: files[k] for k in ("train", "valid")}, sizes)
            test_sets = {n: self.subset({"test": paths}, sizes)["test"]
                         for n, paths in test_sets.items()}
        config = {"save_data": self.path("data"), "overwrite": True,
                  "src_vocab": self.path("data", "vocab.src"),
                  "tgt_vocab": self.path("data", "vocab.tgt"), "share_vocab": True,
                  "data": {"train": {"path_src": files["train"][0], "path_tgt": files["train"][1]},
                           "valid": {"path_src": files["valid"][0], "path_tgt": files["valid"][1]}}}
        if self.recipe.get("sentencepiece"):
            size = self.profile.get("spm_vocab_size", 8000)
            spm_model = datasets.train_sentencepiece(list(files["train"]),
                                                     self.path("data", f"spm{size}"), size)
            for corpus in config["data"].values():
                corpus["transforms"] = ["sentencepiece", "filtertoolong"]
            config.update(src_subword_model=spm_model, tgt_subword_model=spm_model,
                          src_seq_length=200, tgt_seq_length=200)
        else:
            config.update(src_vocab_size=self.recipe.get("vocab_size", 50000),
                          tgt_vocab_size=self.recipe.get("vocab_size", 50000))
        os.makedirs(self.path("data"), exist_ok=True)
        build_config = self.path("configs", "build_vocab.yaml")
        with open(build_config, "w") as handle:
            yaml.safe_dump(config, handle)
        self.command("data", [sys.executable, "-m", "onmt.bin.build_vocab", "-config",
                              build_config, "-n_sample", "-1"])
        for vocab in {config["src_vocab"], config["tgt_vocab"]}:  # one file when shared
            if os.path.exists(vocab):
                drop_unreadable_tokens(vocab)
        config["test_sets"] = {n: {"src": src, "tgt": tgt} for n, (src, tgt) in test_sets.items()}
        config["test"] = self.pooled_test_set(config["test_sets"])
        with open(self.path("data_config.yaml"), "w") as handle:
            yaml.safe_dump(config, handle)

    def pooled_test_set(self, test_sets):
        """The one test corpus every model translates: the test sets concatenated in
        order (pooled BLEU is sacrebleu's corpus BLEU over it), or the only set."""
        if len(test_sets) == 1:
            return next(iter(test_sets.values()))
        pooled = {}
        for side in ("src", "tgt"):
            pooled[side] = self.path("data", f"test_pooled.{side}")
            with atomic_output(pooled[side]) as temporary, \
                    open(temporary, "w", encoding="utf-8") as out:
                for files in test_sets.values():
                    with open(files[side], encoding="utf-8", newline="\n") as handle:
                        out.writelines(line.rstrip("\n") + "\n" for line in handle)
        return pooled

    def test_sets(self):
        """Test set name -> {src, tgt}, in the order of the pooled test corpus."""
        config = self.data_config()
        if "test_sets" not in config:  # prepared before per-set evaluation: one set
            return {datasets.dataset(self.recipe["dataset"])["test_name"]: config["test"]}
        return config["test_sets"]

    def subset(self, files, sizes):
        out = {}
        for split, paths in files.items():
            n = sizes.get(split)
            out[split] = tuple(self.path("data", os.path.basename(p)) for p in paths)
            os.makedirs(self.path("data"), exist_ok=True)
            for src, dst in zip(paths, out[split]):
                with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
                    for i, line in enumerate(fin):
                        if n is not None and i >= n:
                            break
                        fout.write(line)
        return out

    def train_options(self):
        """The recipe's training options with the profile's own on top."""
        return {**self.recipe["train"], **self.profile.get("train", {})}

    def data_config(self):
        with open(self.path("data_config.yaml")) as handle:
            return yaml.safe_load(handle)

    def training_data(self, distilled=False):
        """The data options a training stage gets; distilled students train on the
        teacher's translations of the training source when distill_data is teacher."""
        config = {k: v for k, v in self.data_config().items() if k not in TEST_KEYS}
        if distilled and self.distill_data == "teacher":
            config["data"]["train"]["path_tgt"] = self.teacher_translations_path()
        return config

    def train_stage(self, name, model, teacher=False, bits=None, warm_start=None):
        """A training stage. Quantized students train from scratch, as in the paper,
        unless the profile sets ``quantized_epochs`` (to save time): then they resume
        the full-precision run of the same loss (``warm_start``) that many epochs before
        its end, optimizer and learning-rate schedule included, and finish it
        quantized, so they see exactly as many epochs as the full-precision student.
        Distilled students (``teacher``) learn from the teacher's cache, or its live
        outputs when the profile sets teacher_topk 0, and from its translations when
        distill_data is teacher."""
        def run():
            config = self.training_data(distilled=teacher)
            config.update(self.train_options())
            config.update(model)
            config["keep_checkpoint"] = 1 if bits else -1
            if bits and warm_start and self.profile.get("quantized_epochs"):
                config.update(train_from=self.epoch_checkpoint(
                    warm_start, model["epochs"] - self.profile["quantized_epochs"]))
            config["save_model"] = self.path("models", name, "model")
            if teacher and self.uses_cache():
                config.update(teacher_cache=self.teacher_cache_path(), topk=self.teacher_topk)
            elif teacher and self.word_level:
                config["teacher_model"] = self.model_path("teacher")
            if bits:
                config["quant_bits"] = bits
            if self.gpu:
                config.update(world_size=1, gpu_ranks=[0])
            path = self.path("configs", f"{name}.yaml")
            with open(path, "w") as handle:
                yaml.safe_dump(config, handle)
            self.command(name, self.py("train", "-config", path))
            os.replace(self.path("models", name, "model_best.pt"), self.model_path(name))
        signature = f"data={self.distill_data} teacher=" + (
            f"cache top{self.teacher_topk}" if self.uses_cache() else
            "live" if self.word_level else "none") if teacher else ""
        needs = ["data", *(self.teacher_stages() if teacher else ())]
        if bits and warm_start and self.profile.get("quantized_epochs"):
            needs.append(warm_start)
        return Stage(name, run, [self.path("models", name), self.model_path(name)], signature,
                     needs)

    def teacher_stages(self):
        """The stages whose outputs carry the teacher's knowledge to a student."""
        return ["teacher", *(["teacher_translations"] if self.distill_data == "teacher" else []),
                *(["teacher_cache"] if self.uses_cache() else [])]

    def epoch_checkpoint(self, name, epoch):
        """The checkpoint a full-precision run saved at the end of ``epoch``."""
        saved = sorted(glob.glob(self.path("models", name, "model_step_*.pt")),
                       key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
        if not 1 <= epoch <= len(saved):
            raise RecipeError(f"{name} has no checkpoint for epoch {epoch}: "
                              "quantized_epochs must be smaller than the student's epochs")
        return saved[epoch - 1]

    def diffquant(self, name, bits):
        """Learns the points against the live teacher (on its translations when
        distill_data is teacher)."""
        config = self.training_data(distilled=True)
        train = self.train_options()
        config.update({k: train[k] for k in BATCH_KEYS if k in train})
        path = self.path("configs", f"{name}.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        self.command(name, self.py(
            "diffquant", "-config", path, "-model", self.model_path("student_distilled_fp"),
            "-teacher_model", self.model_path("teacher"), "-bits", bits,
            "-train_steps", self.profile.get("diffquant_steps", 300),
            "-output", self.model_path(name), *(["-gpu_ranks", 0] if self.gpu else [])))

    def compress_all(self):
        os.makedirs(self.path("sizes"), exist_ok=True)
        self.side_by_side(lambda name: self.command("compress", self.py(
            "compress", "-model", self.model_path(name), "-output", self.model_path(name, ".qdz"),
            "-report_json", self.path("sizes", f"{name}.json")), log_name=f"compress.{name}"),
            self.quantized)

    def evaluated_file(self, name):
        return self.model_path(name, ".qdz") if name in self.quantized else self.model_path(name)

    def evaluate_all(self):
        os.makedirs(self.path("eval"), exist_ok=True)
        test = self.data_config()["test"]
        self.side_by_side(lambda name: self.command("evaluate", self.py(
            "eval", "-model", self.evaluated_file(name), "-src", test["src"], "-tgt", test["tgt"],
            "-json", self.path("eval", f"{name}.json"), "-output", self.path("eval", f"{name}.hyp"),
            "-batch_size", self.translate_batch_size, "-gpu", 0 if self.gpu else -1),
            log_name=f"evaluate.{name}"), self.evaluated)

    def translate_training_source(self):
        """Sequence-level distillation data: the teacher's beam-5 translation of every
        training source line, one line each (empty stays empty), in parts so the log
        shows progress; renamed into place only when every part is aligned."""
        source = self.data_config()["data"]["train"]["path_src"]
        parts_dir = self.path("data", "teacher_translations.parts")
        os.makedirs(parts_dir, exist_ok=True)
        parts = split_lines(source, parts_dir, TRANSLATION_CHUNKS)
        log = self.path("logs", "teacher_translations.log")
        total, done, parts_done = sum(n for _, n in parts), 0, 0

        def translate(item):
            nonlocal done, parts_done
            part, n = item
            self.command("teacher_translations", self.py(
                "translate", "-model", self.model_path("teacher"), "-src", part,
                "-output", part + ".out", "-beam_size", 5,
                "-batch_size", self.translate_batch_size, "-gpu", 0 if self.gpu else -1),
                log_name=f"teacher_translations.{os.path.basename(part)}")
            with self.progress_lock:
                done, parts_done = done + n, parts_done + 1
                with open(log, "a") as handle:
                    handle.write(f"teacher_translations: part {parts_done}/{len(parts)}: "
                                 f"{done}/{total} sentences translated\n")
        self.side_by_side(translate, parts)
        merge_translations(parts, self.teacher_translations_path())
        shutil.rmtree(parts_dir)

    def build_teacher_cache(self):
        """The teacher's top-k outputs over the corpus the distilled students train on."""
        config = self.training_data(distilled=True)
        config.update(self.train_options())
        if self.gpu:
            config.update(world_size=1, gpu_ranks=[0])
        path = self.path("configs", "teacher_cache.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        self.command("teacher_cache", self.py(
            "teacher_cache", "-config", path, "-teacher_model", self.model_path("teacher"),
            "-topk", self.teacher_topk, "-output", self.teacher_cache_path()))

    def report(self):
        from onmt_qd.report import write_report

        write_report(self)


def split_lines(path, folder, parts):
    """Write the lines of ``path`` as up to ``parts`` consecutive files in ``folder``;
    returns [(file, number of lines)]. Lines end at "\\n" only, as OpenNMT-py reads them."""
    size = max(1, -(-datasets.count_lines(path) // parts))
    written = []
    with open(path, encoding="utf-8", newline="\n") as handle:
        while True:
            lines = list(itertools.islice(handle, size))
            if not lines:
                return written
            part = os.path.join(folder, f"part{len(written):03d}")
            with open(part, "w", encoding="utf-8", newline="\n") as out:
                out.writelines(lines)
            written.append((part, len(lines)))


def merge_translations(parts, path):
    """Concatenate the translations (``PART.out``) of ``split_lines``'s parts into
    ``path``; onmt_qd_translate gives one line per source line (blank for blank), and
    a part that does not is refused."""
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as out:
        for part, n in parts:
            with open(part + ".out", encoding="utf-8", newline="\n") as handle:
                translations = handle.readlines()
            if len(translations) != n:
                raise RecipeError(f"{len(translations)} translations for the {n} "
                                  f"lines of {part}")
            out.writelines(translations)


def drop_unreadable_tokens(vocab_path):
    """OpenNMT-py writes tokens that are Unicode whitespace (a no-break space in
    WMT-derived text) into its vocabulary but cannot read them back; they become <unk>."""
    with open(vocab_path, encoding="utf-8") as handle:
        lines = handle.readlines()
    kept = [line for line in lines if len(line.split(None, 1)) == 2]
    if len(kept) != len(lines):
        with atomic_output(vocab_path) as temporary, \
                open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(kept)


def _cuda():
    import torch

    return torch.cuda.is_available()
