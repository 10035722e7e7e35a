"""CTranslate2 on an onmt_qd_export directory, or on any CTranslate2 translator
directory with its SentencePiece models (onmt_qd/deploy/ct2.py holds the export and the
translator, deploy/foreign.py the other directories); its scores of the references give
the perplexity."""
from __future__ import annotations

import os
from argparse import Namespace
from typing import TYPE_CHECKING

from onmt_qd.inference.engines import Engine, Predictions, Scores, register

if TYPE_CHECKING:
    from onmt_qd.progress import Progress


@register
class CTranslate2Engine(Engine):
    name = "CTranslate2"

    @classmethod
    def accepts(cls, model: str, precision: str | None) -> bool:
        return os.path.isdir(model)

    @classmethod
    def check_model(cls, model: str) -> None:
        from onmt_qd.deploy.ct2 import is_export, read_manifest
        from onmt_qd.deploy.foreign import check_translator_spec

        if is_export(model):
            read_manifest(model)
        else:
            check_translator_spec(model, "-model")

    @classmethod
    def check_options(cls, opt: Namespace) -> None:
        """Options CTranslate2 does not take, and any -precision: a directory runs at
        the quantization it was exported with (refused rather than not applied)."""
        from onmt_qd.deploy.ct2 import check_translate_options, is_export, read_manifest

        check_translate_options(opt)
        if opt.precision:
            model = opt.models[0]
            quantization = f"{read_manifest(model)['quantization']} as exported" \
                if is_export(model) else "at the quantization it was converted with"
            raise ValueError(f"-precision {opt.precision} does not apply to a CTranslate2 "
                             f"directory ({model}, {quantization}): leave -precision out, "
                             "or export again with onmt_qd_export -quantization")

    def __init__(self, opt: Namespace) -> None:
        from onmt_qd.deploy.ct2 import deployed_model, directory_size

        super().__init__(opt)
        self.deployed = deployed_model(opt)
        self.n_params = self.deployed.manifest["n_params"]
        self.size_bytes = directory_size(opt.models[0])

    def translate(self, lines: list[str], progress: Progress | None = None
                  ) -> tuple[Scores, Predictions]:
        opt = self.opt
        return self.deployed.translate(lines, opt.beam_size, opt.batch_size, opt.n_best,
                                       opt.max_length, opt.max_length_ratio, progress)

    def perplexity(self, src: str, tgt: str, sources: list[str], references: list[str]
                   ) -> float:
        return self.deployed.perplexity(sources, references, self.opt.batch_size)

    def cpu_threads(self) -> int | None:
        deployed = self.deployed
        return deployed.inter_threads * deployed.intra_threads \
            if deployed.device == "cpu" else None

    def settings(self) -> dict[str, str | int | None]:
        deployed = self.deployed
        return {"name": self.name, "precision": deployed.manifest["quantization"],
                "device": deployed.device, "inter_threads": deployed.inter_threads,
                "intra_threads": deployed.intra_threads}
