"""onmt_qd: quantized distillation and differentiable quantization for OpenNMT-py.

Importing the package allow-lists the one class OpenNMT-py pickles into its
checkpoints, so they load with torch's weights-only loading left on.
"""
from onmt_qd.compat import allow_onmt_checkpoints, quiet_onmt_warnings

allow_onmt_checkpoints()
quiet_onmt_warnings()

__version__ = "0.1.0"
