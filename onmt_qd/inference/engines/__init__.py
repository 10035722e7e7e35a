"""One interface for every engine that translates a model, chosen once from the model
path and options, as OpenNMT-py has one InferenceEngine per engine (Python,
CTranslate2): onmt_qd_translate, onmt_qd_eval, the recipe's deploy stage and the
benchmarks ask ``open_engine`` and never look at the path themselves.

An engine is an ``Engine`` subclass in a file of its own, registered with
``@register``; the files below are imported at the end, so the registry is full once
this package is imported. Adding an engine touches its file, that import and its test."""
from __future__ import annotations

import contextlib
from argparse import Namespace
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from onmt_qd.registry import Registry

if TYPE_CHECKING:
    from onmt_qd.progress import Progress

# What translating gives per source line: -n_best scores, and as many predictions.
Scores = list[list[float]]
Predictions = list[list[str]]

# by class name (two engines may share a display name); the first that accepts takes it
ENGINES = Registry("engine", newest_first=True)


def register(engine: type[Engine]) -> type[Engine]:
    """Class decorator: add ``engine`` to ENGINES, asked before those registered before
    it (OpenNMT-py's engine, which takes any file, is registered first)."""
    return ENGINES.register(engine, engine.__name__)


class Engine:
    """A loaded model and what translation and evaluation ask of it."""

    name: ClassVar[str] = ""

    @classmethod
    def accepts(cls, model: str, precision: str | None) -> bool:
        """Whether this engine translates ``model`` (a path) at ``precision``."""
        raise NotImplementedError

    @classmethod
    def check_model(cls, model: str) -> None:
        """A one-line error unless ``model`` is a model this engine can load."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, opt: Namespace) -> None:
        """A one-line error for a translation option this engine would not honour,
        before anything is loaded."""

    def __init__(self, opt: Namespace) -> None:
        self.opt = opt

    def translate(self, lines: list[str], progress: Progress | None = None
                  ) -> tuple[Scores, Predictions]:
        """(scores, predictions): -n_best of each per line, in order, blank for blank."""
        raise NotImplementedError

    def warm_up(self, lines: list[str], count: int) -> None:
        """Translate the first ``count`` non-blank lines and drop the result: one-time
        costs a speed measurement must not count."""
        from onmt_qd.inference.engine import non_blank

        sample = [lines[i] for i in non_blank(lines)[:count]]
        if sample:
            self.translate(sample)

    def perplexity(self, src: str, tgt: str, sources: list[str], references: list[str]
                   ) -> float:
        """Of the references given the sources (files ``src``/``tgt`` hold the same)."""
        raise NotImplementedError

    n_params: int = 0
    size_bytes: int = 0

    def settings(self) -> dict[str, str | int | None]:
        """Which engine translated and what decides its speed (device, threads)."""
        raise NotImplementedError

    def cpu_threads(self) -> int | None:
        """The CPU threads it translates on (None on a GPU): what machine.LoadMeter
        judges other processes' load against."""
        return None

    def close(self) -> None:
        """Release what the engine holds."""


def engine_for(model: str, precision: str | None = None) -> type[Engine]:
    """The registered engine that translates ``model`` at ``precision``."""
    for engine in ENGINES.values():
        if engine.accepts(model, precision):
            return engine
    raise ValueError(f"-model {model}: no engine translates it")


@contextlib.contextmanager
def open_engine(opt: Namespace) -> Iterator[Engine]:
    """The engine of -model (its first, for an ensemble) at -precision, loaded once."""
    engine = engine_for(opt.models[0], opt.precision)(opt)
    try:
        yield engine
    finally:
        engine.close()


from onmt_qd.inference.engines import opennmt, ctranslate2  # noqa: E402,F401,I001 - registers
