"""OpenNMT-py's own inference engine and translator on a checkpoint or .qdz
(onmt_qd/inference/engine.py), built once for translation and perplexity alike; at
-precision int8, torch's dynamic quantization on the CPU (onmt_qd/deploy/int8.py)."""
from __future__ import annotations

import os
from argparse import Namespace
from typing import TYPE_CHECKING

from onmt_qd.inference.engines import Engine, Predictions, Scores, register

if TYPE_CHECKING:
    from onmt_qd.progress import Progress


class OpenNMTEngine(Engine):
    name = "OpenNMT-py"

    @classmethod
    def accepts(cls, model: str, precision: str | None) -> bool:
        return not os.path.isdir(model)

    @classmethod
    def check_model(cls, model: str) -> None:
        from onmt_qd.fileio import check_input_file

        check_input_file(model, "-model")

    @classmethod
    def check_options(cls, opt: Namespace) -> None:
        from onmt_qd.deploy.int8 import check_int8

        check_int8(opt.precision, opt.gpu)

    def __init__(self, opt: Namespace) -> None:
        from onmt_qd.inference.engine import load_models

        super().__init__(opt)
        self.loaded = load_models(opt.models, opt)  # several: an ensemble
        self.device = "cpu" if opt.gpu < 0 else f"cuda:{opt.gpu}"
        self.n_params = sum(p.numel() for p in self.loaded.model.parameters())
        self.size_bytes = sum(os.path.getsize(model) for model in opt.models)

    def translate(self, lines: list[str], progress: Progress | None = None
                  ) -> tuple[Scores, Predictions]:
        from onmt_qd.inference.engine import inference_engine, translate_aligned

        with inference_engine(self.opt, lines, self.loaded) as engine:
            return translate_aligned(engine, lines, progress)

    def warm_up(self, lines: list[str], count: int) -> None:
        from onmt_qd.inference.engine import inference_engine, warm_up

        with inference_engine(self.opt, lines, self.loaded) as engine:
            warm_up(engine, lines, count)

    def perplexity(self, src: str, tgt: str, sources: list[str], references: list[str]
                   ) -> float:
        from onmt_qd.evaluate.metrics import reference_perplexity

        loaded = self.loaded
        return reference_perplexity(loaded.model, loaded.vocabs, loaded.model_opt, src, tgt,
                                    self.device)

    def cpu_threads(self) -> int | None:
        import torch

        return torch.get_num_threads() if self.device == "cpu" else None

    def settings(self) -> dict[str, str | int | None]:
        return {"name": self.name, "precision": self.opt.precision or "fp32",
                "device": self.device, "threads": self.cpu_threads()}


class OpenNMTInt8Engine(OpenNMTEngine):
    """-precision int8: the same engine on a model whose Linear and LSTM layers torch
    quantizes dynamically at load (CPU only)."""

    @classmethod
    def accepts(cls, model: str, precision: str | None) -> bool:
        return precision == "int8" and super().accepts(model, precision)


register(OpenNMTEngine)
register(OpenNMTInt8Engine)  # asked first: -precision int8
