"""The OpenNMT-py adapter: its checkpoints loaded weights-only, and workarounds.

torch >= 2.6 loads checkpoints weights-only by default and refuses OpenNMT-py's,
whose options are an ``argparse.Namespace``. We allow-list exactly that class;
weights-only loading stays on, so a checkpoint can still run no code.

Importing this module changes nothing in the process: ``prepare_onmt`` does, where a
command starts (onmt_qd/bin, onmt_qd_cli.py) and where the library loads an OpenNMT-py
checkpoint or builds a model from one. torch is imported where it is used, so that
onmt_qd_cli.py can call ``before_onmt_import`` without importing it."""
import argparse
import functools
import importlib.util
import os
import pickle
import sys
import types


TORCH_ZIP = b"PK\x03\x04"  # torch.save's format since torch 1.6
LEGACY_PICKLE = b"\x80"    # the pickle stream of older torch.save files


def prepare_onmt() -> None:
    """Set this process up for OpenNMT-py; calling it again changes nothing. Its
    checkpoints' options class is allow-listed for weights-only loading, its warnings
    that say nothing a user can act on are quieted, and spaCy is deferred (that part
    only before ``onmt`` is first imported)."""
    before_onmt_import()
    allow_onmt_checkpoints()


def before_onmt_import() -> None:
    """The part of prepare_onmt that must come before ``import onmt`` and needs no
    torch: what a process spawned from a console command gets from onmt_qd_cli.py."""
    quiet_onmt_warnings()
    defer_spacy()


def allow_onmt_checkpoints():
    """Let weights-only loading (torch.load's default) accept OpenNMT-py's options."""
    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])


def load_checkpoint(path):
    """Load an OpenNMT-py checkpoint on the CPU, weights-only, with a one-line error
    that says what the file is when it is not a checkpoint."""
    import torch

    from onmt_qd.fileio import check_input_file

    prepare_onmt()
    check_input_file(path, "checkpoint")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty, not a checkpoint")
    refuse_compressed(path)
    with open(path, "rb") as handle:
        start = handle.read(4)
    if not start.startswith((TORCH_ZIP, LEGACY_PICKLE)):
        raise ValueError(f"{path} is neither an OpenNMT-py checkpoint nor an onmt_qd "
                         "compressed model (not a torch file)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused, truncated, damaged, another zip...
        if isinstance(exc, pickle.UnpicklingError) and "Weights only" in str(exc):
            raise ValueError(f"{path} holds objects that weights-only loading refuses "
                             "(it would run code from the file): not loaded") from exc
        raise ValueError(f"{path} is neither an OpenNMT-py checkpoint nor an onmt_qd "
                         f"compressed model (a damaged or truncated torch file: "
                         f"{_first_line(exc)})") from exc
    if not isinstance(checkpoint, dict) or not {"model", "opt", "vocab"} <= set(checkpoint):
        raise ValueError(f"{path} is a torch file but not an OpenNMT-py checkpoint "
                         "(no model, opt and vocab entries)")
    return checkpoint


def refuse_compressed(path):
    """A one-line error for a .qdz given where a checkpoint is needed (a teacher, a
    model to train from): those need the full-precision weights a .qdz does not hold."""
    from onmt_qd.codec.fileformat import is_compressed_file

    if is_compressed_file(path):
        raise ValueError(f"{path} is an onmt_qd compressed model (.qdz), and this takes an "
                         "OpenNMT-py checkpoint (.pt): give the checkpoint it was "
                         "compressed from")


def _first_line(exc):
    text = str(exc).strip()
    return text.split(". ")[0].splitlines()[0] if text else type(exc).__name__


def save_atomic(obj, path):
    """torch.save to a temporary name, then rename: a crash never leaves half a file.
    A failed write (full disk...) is an OSError naming ``path``: torch's zip writer
    turns it into a RuntimeError of its own, which keeps the OSError only when torch
    writes through a Python file."""
    import torch

    from onmt_qd.fileio import atomic_output

    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as exc:
            cause = exc.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror, path) from exc
            raise


def quiet_onmt_warnings():
    """OpenNMT-py 3.5.1 uses torch.cuda.amp decorators that torch 2.13 deprecates, and
    passes -dropout to one-layer LSTMs too (where torch warns that it has no layer to
    apply it between; OpenNMT-py applies it elsewhere as well): the warnings say
    nothing a user can act on."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"onmt\.")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"dropout option adds dropout after all but "
                            "last recurrent layer", category=UserWarning)


def defer_spacy():
    """OpenNMT-py imports every transform at startup, terminology's spaCy among them:
    about 1.3 s of CPU for every command, which never uses it. A stand-in module
    imports spaCy at its first use (spacy.load in a terminology transform)."""
    if "spacy" not in sys.modules and "onmt" not in sys.modules and \
            importlib.util.find_spec("spacy") is not None:
        sys.modules["spacy"] = _DeferredSpacy("spacy")


class _DeferredSpacy(types.ModuleType):
    """``spacy`` until an attribute is asked for, then the real module."""

    def __getattr__(self, name):
        if name == "__file__":  # inspect.getmodule asks every module (torch does, often)
            raise AttributeError(name)
        if sys.modules.get("spacy") is self:
            del sys.modules["spacy"]
        return getattr(importlib.import_module("spacy"), name)


def keep_log_file():
    """OpenNMT-py 3.5's training-data mixer calls init_logger() each time it opens a
    corpus, to give its loader worker processes (which start with no handler) a console;
    in the training process that drops the -log_file handler, so after the first corpus
    is opened nothing more reaches the log file. Its call now keeps the handlers the
    logger has, if any."""
    from onmt.inputters import dynamic_iterator
    from onmt.utils.logging import init_logger, logger

    def init_unless_set(*args, **kwargs):
        return logger if logger.handlers else init_logger(*args, **kwargs)

    dynamic_iterator.init_logger = init_unless_set


class ContiguousRNNState:
    """Mixin for OpenNMT-py's RNN decoders: keep the recurrent state contiguous.

    Beam search reorders the decoder state through ``RNNDecoderBase.map_state``,
    which returns transposed views; for decoders of two or more layers they are not
    contiguous, and cuDNN's LSTM refuses them (``rnn: hx is not contiguous``). The
    CPU kernels accept any layout, so on the CPU this changes memory layout only."""

    def map_state(self, fn):
        super().map_state(fn)
        self.state["hidden"] = tuple(h.contiguous() for h in self.state["hidden"])
        for key in ("input_feed", "coverage"):
            if self.state.get(key) is not None:
                self.state[key] = self.state[key].contiguous()


def keep_decoder_state_contiguous(model):
    """Make ``model``'s RNN decoder (built by OpenNMT-py's builder) an instance of its
    subclass with :class:`ContiguousRNNState`: same parameters and checkpoint keys,
    only this model changed; OpenNMT-py's decoder registry stays as it is."""
    from onmt.decoders.decoder import RNNDecoderBase

    decoder = model.decoder
    if isinstance(decoder, RNNDecoderBase) and not isinstance(decoder, ContiguousRNNState):
        decoder.__class__ = _contiguous(type(decoder))


@functools.cache
def _contiguous(base):
    """``base`` (StdRNNDecoder, InputFeedRNNDecoder) with ContiguousRNNState, once per class."""
    return type(base.__name__, (ContiguousRNNState, base),
                {"__doc__": base.__doc__, "__module__": __name__})
