"""The engine interface (onmt_qd/inference/engines): one engine chosen once from the
model path and -precision, and a new engine is a registered subclass that translate
and eval use with no other change."""
import os

import pytest

from onmt_qd.inference import engines
from onmt_qd.inference.engines import Engine, engine_for, register
from onmt_qd.inference.engines.ctranslate2 import CTranslate2Engine
from onmt_qd.inference.engines.opennmt import OpenNMTEngine, OpenNMTInt8Engine
from test_bad_input import command, lines_of


def test_the_engine_is_chosen_from_the_path_and_precision(tmp_path):
    assert engine_for(str(tmp_path)) is CTranslate2Engine
    assert engine_for(str(tmp_path), "int8") is CTranslate2Engine  # then refused in one line
    assert engine_for("model.pt", "int8") is OpenNMTInt8Engine
    assert engine_for("model.qdz") is engine_for("model.pt", "fp32") is OpenNMTEngine


class Reverser(Engine):
    """A stand-in engine for ``*.rev`` files: each line's words in reverse order."""
    name = "reverser"

    @classmethod
    def accepts(cls, model, precision):
        return model.endswith(".rev")

    @classmethod
    def check_model(cls, model):
        if not os.path.isfile(model):
            raise ValueError(f"-model {model} does not exist")

    def translate(self, lines, progress=None):
        return ([[0.0] * self.opt.n_best for _ in lines],
                [[" ".join(reversed(line.split()))] * self.opt.n_best for line in lines])

    def perplexity(self, src, tgt, sources, references):
        return 1.0

    def settings(self):
        return {"name": self.name, "precision": "none", "device": "cpu"}


@pytest.fixture
def reverser():
    register(Reverser)
    yield
    del engines.ENGINES["Reverser"]


def test_a_registered_engine_serves_translate_and_eval_unchanged(data, tmp_path, reverser):
    assert next(iter(engines.ENGINES.values())) is Reverser  # asked first
    model = tmp_path / "words.rev"
    model.write_text("")
    code, _, err = command("translate", "-model", model, "-src", data["test.de"], "-output",
                           tmp_path / "out.txt")
    assert code == 0, err
    assert lines_of(tmp_path / "out.txt") == [" ".join(reversed(line.split()))
                                              for line in lines_of(data["test.de"])]
    code, _, err = command("eval", "-model", model, "-src", data["test.de"], "-tgt",
                           data["test.en"], "-json", tmp_path / "scores.json")
    assert code == 0, err
    assert '"name": "reverser"' in (tmp_path / "scores.json").read_text()
