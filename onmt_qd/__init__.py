"""onmt_qd: quantized distillation and differentiable quantization for OpenNMT-py.

Importing the package allow-lists the one class OpenNMT-py pickles into its
checkpoints, so they load with torch's weights-only loading left on, and defers
OpenNMT-py's import of spaCy to its first use.
"""
from onmt_qd.compat import allow_onmt_checkpoints, defer_spacy, quiet_onmt_warnings

allow_onmt_checkpoints()
quiet_onmt_warnings()
defer_spacy()

__version__ = "0.1.0"
