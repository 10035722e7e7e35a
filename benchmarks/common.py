"""What the benchmarks that time training steps share: the process set up as a
command's, the data config they train on, and the seeded model and real batches they
time. A benchmark is a command: it imports this module before OpenNMT-py, so that
OpenNMT-py's start-up is as in a command (spaCy deferred, its warnings quieted)."""
import argparse
import itertools
import os

import torch
import yaml

from onmt_qd.compat import prepare_onmt

# OpenNMT-py, and the parts of onmt_qd that import it, are imported by the functions below
prepare_onmt()


def device_of(gpu: bool) -> torch.device:
    """-gpu's device: the first GPU, else the CPU."""
    return torch.device("cuda:0" if gpu else "cpu")


def sync(device: torch.device) -> None:
    """Wait for the GPU, so that a timer read after it counts the work queued before."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_config(path: str, folder: str, train_lines: int = 0) -> str:
    """The data config less the recipe's evaluation keys (onmt_qd_train refuses
    them), written to ``folder``; returns its path. ``train_lines``: each training
    corpus cut to its first lines (copies in ``folder``), so that the cache is built,
    and the teacher's epoch counted, over those alone."""
    from onmt_qd.recipe import RECIPE_ONLY_KEYS

    try:
        with open(path) as handle:
            config = yaml.safe_load(handle)
    except OSError as error:
        raise ValueError(f"cannot read -config {path}: {error.strerror}") from None
    if not isinstance(config, dict) or "data" not in config:
        raise ValueError(f"{path} is not a data config (a YAML mapping with 'data:')")
    for name, corpus in config["data"].items():
        if train_lines and name != "valid":
            for key in ("path_src", "path_tgt"):
                corpus[key] = head(corpus[key], train_lines,
                                   os.path.join(folder, f"{name}.{key}"))
    training = os.path.join(folder, "data_config.yaml")
    with open(training, "w") as handle:
        yaml.safe_dump({k: v for k, v in config.items() if k not in RECIPE_ONLY_KEYS}, handle)
    return training


def head(path: str, lines: int, output: str) -> str:
    """The first ``lines`` lines of ``path`` written to ``output``; returns ``output``."""
    with open(path, encoding="utf-8") as source, open(output, "w", encoding="utf-8") as out:
        out.writelines(itertools.islice(source, lines))
    return output


def model_opts(config: str, *options: str) -> argparse.Namespace:
    """onmt_qd_train's options over the data config ``config``: batches of 64
    sentences read in this process from buckets of 10000 (as the recipes train), then
    ``options``, which may override them; checked as OpenNMT-py checks a model's."""
    from onmt.utils.parse import ArgumentParser

    from onmt_qd.opts import parse, train_parser

    opt = parse(train_parser(), ["-config", config, "-batch_size", "64", "-num_workers", "0",
                                 "-bucket_size", "10000", *options])
    ArgumentParser.validate_prepare_opts(opt)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    return opt


def init_uniform(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight drawn from U(-0.1, 0.1) after seed 1 (-param_init 0.1): the same
    model in every run, whatever its builder drew before."""
    torch.manual_seed(1)
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.1, 0.1)
    return model


def seeded_model(opt: argparse.Namespace, vocabs: dict, device: torch.device):
    """OpenNMT-py's model of ``opt`` on ``device``, initialised by init_uniform."""
    from onmt.model_builder import build_base_model

    return init_uniform(build_base_model(opt, vocabs).to(device))


def training_batches(opt: argparse.Namespace, vocabs: dict, count: int,
                     device: torch.device) -> list:
    """The first ``count`` batches of OpenNMT-py's training iterator over ``opt``'s
    corpora, on ``device``: the same ones in every run (seeded)."""
    from onmt.constants import CorpusTask
    from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
    from onmt.transforms import get_transforms_cls
    from onmt.utils.misc import set_random_seed

    set_random_seed(3435, device.type == "cuda")
    device_id = device.index if device.type == "cuda" else -1
    iterator = build_dynamic_dataset_iter(opt, get_transforms_cls(opt._all_transform), vocabs,
                                          task=CorpusTask.TRAIN, device_id=device_id)
    return list(itertools.islice((batch for batch, _ in iterator), count))  # it cycles
