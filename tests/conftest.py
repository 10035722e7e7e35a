"""Shared fixtures: a small real Multi30K subset with SentencePiece and an OpenNMT-py
vocabulary, and a tiny teacher trained once per session with onmt_qd_train."""
import os
import subprocess
import sys

import pytest
import yaml

from onmt_qd.compat import prepare_onmt, quiet_onmt_warnings

# as every command does before it imports OpenNMT-py, which the tests import
prepare_onmt()

# One thread in this process and every command it starts, however pytest was run (make
# test sets it too): comparisons of two runs (a 2-process cache against a 1-process one,
# a report's per-set score against the set evaluated alone) need the same kernels, and
# a thread count can change a float sum's order. Tests that time or need more set it.
os.environ["OMP_NUM_THREADS"] = "1"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.environ.get("ONMT_QD_DATA_MIRROR") or os.path.join(REPO, "..", "shared", "data")
MULTI30K = os.path.join(MIRROR, "multi30k")
needs_multi30k = pytest.mark.skipif(not os.path.isdir(MULTI30K),
                                    reason="Multi30K mirror not found (set ONMT_QD_DATA_MIRROR)")


# Files whose fixtures run a whole recipe or train several models, started first so that
# under `make test`'s two workers (one file each at a time) no long file ends the run alone.
LONGEST_FIRST = ("test_recipe.py", "test_recipe_own.py", "test_recipe_standins.py",
                 "test_diffquant.py", "test_train.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# pytest collects and runs each test with the warning filters the session started
# with, not those prepare_onmt set above: OpenNMT-py's are quieted in each, as in a command.
def pytest_collection(session):
    quiet_onmt_warnings()  # some test modules import OpenNMT-py


@pytest.fixture(autouse=True)
def onmt_warnings_quiet():
    quiet_onmt_warnings()


def run_cli(module, *args, check=True, cwd=None):
    """Run an onmt_qd command as users do; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, "-m", f"onmt_qd.bin.{module}", *map(str, args)],
                            capture_output=True, text=True, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def head(src, dst, n):
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Paths and a data config for 600 training / 60 validation pairs."""
    from onmt_qd.datasets import train_sentencepiece

    if not os.path.isdir(MULTI30K):
        pytest.skip(f"Multi30K mirror not found at {MULTI30K}: set ONMT_QD_DATA_MIRROR")
    root = tmp_path_factory.mktemp("data")
    paths = {}
    for split, src, n in (("train", "train", 600), ("valid", "val", 60), ("test", "test_2016_flickr", 20)):
        for lang in ("de", "en"):
            paths[f"{split}.{lang}"] = str(root / f"{split}.{lang}")
            head(os.path.join(MULTI30K, f"{src}.{lang}"), paths[f"{split}.{lang}"], n)
    spm = train_sentencepiece([paths["train.de"], paths["train.en"]], str(root / "spm"), 400)
    config = {
        "save_data": str(root), "overwrite": True, "share_vocab": True,
        "src_vocab": str(root / "vocab.src"), "tgt_vocab": str(root / "vocab.tgt"),
        "src_subword_model": spm, "tgt_subword_model": spm,
        "data": {"train": {"path_src": paths["train.de"], "path_tgt": paths["train.en"],
                           "transforms": ["sentencepiece"]},
                 "valid": {"path_src": paths["valid.de"], "path_tgt": paths["valid.en"],
                           "transforms": ["sentencepiece"]}},
        "encoder_type": "rnn", "decoder_type": "rnn", "rnn_type": "LSTM", "layers": 1,
        "hidden_size": 32, "word_vec_size": 32, "global_attention": "general",
        "input_feed": 1, "batch_size": 32, "batch_type": "sents", "optim": "sgd",
        "learning_rate": 1.0, "max_grad_norm": 5, "param_init": 0.1, "dropout": 0.0,
        "bucket_size": 1000, "num_workers": 0, "report_every": 5, "seed": 1,
    }
    config_path = str(root / "config.yaml")
    with open(config_path, "w") as handle:
        yaml.safe_dump(config, handle)
    subprocess.run([sys.executable, "-m", "onmt.bin.build_vocab", "-config", config_path,
                    "-n_sample", "-1"], check=True, capture_output=True)
    return {"root": root, "config": config_path, "spm": spm, **paths}


@pytest.fixture(scope="session")
def teacher(data):
    """A 1x64 teacher trained 3 epochs (about 20 s on 2 cores)."""
    save = data["root"] / "teacher" / "model"
    run_cli("train", "-config", data["config"], "-save_model", save, "-epochs", 3,
            "-hidden_size", 64, "-word_vec_size", 64, "-lr_halving", "plateau")
    return str(save) + "_best.pt"
