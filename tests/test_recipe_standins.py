"""integ200k and wmt13 cannot be downloaded here: their recipes run on small stand-in
files in the same layout (integ200k: Moses-tokenized text, word vocabularies; wmt13:
raw text, SentencePiece)."""
import json
import os

import pytest

from conftest import MIRROR, MULTI30K, head, needs_multi30k
from onmt_qd.recipe import Pipeline
from test_bad_input import command

INTEG = os.path.join(MIRROR, "onmt-integ")


def run_recipe(name, work, mirror, *stages):
    """The recipe's mini profile, these stages, in this process (test_recipe.py runs the
    command itself; its stages' commands run as subprocesses either way)."""
    Pipeline(name, "mini", work, mirror=str(mirror)).run(stages)


def test_integ200k_recipe_end_to_end_on_standin_files(tmp_path):
    if not os.path.isdir(INTEG):
        pytest.skip("onmt-integ mirror not found")
    mirror = tmp_path / "integ200k"
    mirror.mkdir()
    # German side from tgt-*, English from src-*: the real set's names and tokenization
    for lang, side in (("de", "tgt"), ("en", "src")):
        head(f"{INTEG}/{side}-train.txt", mirror / f"{lang}-train-clean.200K.txt", 600)
        head(f"{INTEG}/{side}-val-3000.txt", mirror / f"{lang}-val-clean.10K.txt", 60)
    work = tmp_path / "work"
    run_recipe("integ200k", work, mirror, "data", "teacher", "teacher_cache",
               "student_distilled_fp", "pm_quantization_4bit")
    config = (work / "data_config.yaml").read_text()
    assert "sentencepiece" not in config and "src_vocab_size: 50000" in config
    # tokenized text in, tokenized text out: evaluation needs no transform
    code, _, err = command("eval", "-model", work / "models" / "pm_quantization_4bit.pt",
                           "-src", mirror / "de-val-clean.10K.txt",
                           "-tgt", mirror / "en-val-clean.10K.txt", "-json", work / "e.json")
    assert code == 0, err
    assert json.loads((work / "e.json").read_text())["ppl"] > 1


@needs_multi30k
def test_wmt13_recipe_prepares_and_trains_on_standin_files(tmp_path):
    mirror = tmp_path / "wmt13"
    mirror.mkdir()
    for split, target, n in (("train", "train", 800), ("val", "newstest2012", 50),
                             ("test_2016_flickr", "newstest2013", 30)):
        for lang in ("de", "en"):
            head(f"{MULTI30K}/{split}.{lang}", mirror / f"{target}.{lang}", n)
    run_recipe("wmt13", tmp_path / "work", mirror, "data", "teacher", "teacher_cache",
               "student_distilled_fp")
    config = (tmp_path / "work" / "data_config.yaml").read_text()
    assert "sentencepiece" in config and "newstest2013.de" in config
    assert (tmp_path / "work" / "models" / "student_distilled_fp.pt").exists()
