"""torch >= 2.6 loads checkpoints weights-only by default and refuses OpenNMT-py's,
whose options are an ``argparse.Namespace``. We allow-list exactly that class;
weights-only loading stays on, so a checkpoint can still run no code."""
import argparse

import torch


def allow_onmt_checkpoints():
    torch.serialization.add_safe_globals([argparse.Namespace])


def load_checkpoint(path):
    """Load an OpenNMT-py checkpoint on the CPU, weights-only, with a one-line error
    for a missing or unreadable file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # corrupt, truncated, foreign pickle...
        reason = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() \
            else type(exc).__name__
        raise ValueError(f"{path} is neither an OpenNMT-py checkpoint nor an onmt_qd "
                         f"compressed model ({reason})") from None


def save_atomic(obj, path):
    """torch.save to a temporary name, then rename: a crash never leaves half a file."""
    import os

    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def quiet_onmt_warnings():
    """OpenNMT-py 3.5.1 uses torch.cuda.amp decorators that torch 2.13 deprecates;
    the warnings say nothing a user can act on."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"onmt\.")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp.*", category=FutureWarning)


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


def use_contiguous_rnn_decoders():
    """Replace OpenNMT-py's "rnn"/"ifrnn" entries of its decoder registry
    (``onmt.decoders.str2dec``, what ``build_decoder`` looks up) by subclasses with
    :class:`ContiguousRNNState`. Same parameters and checkpoint keys; idempotent."""
    from onmt.decoders import str2dec

    for name in ("rnn", "ifrnn"):
        base = str2dec[name]
        if not issubclass(base, ContiguousRNNState):
            str2dec[name] = type(base.__name__, (ContiguousRNNState, base),
                                 {"__doc__": base.__doc__, "__module__": __name__})
