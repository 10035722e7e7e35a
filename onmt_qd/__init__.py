"""onmt_qd: quantized distillation and differentiable quantization for OpenNMT-py.

Importing the package, or any of its pure parts (quant, codec, ...), changes nothing
in the process: what OpenNMT-py needs (checkpoints allow-listed for weights-only
loading, spaCy deferred, its warnings quieted) is compat.prepare_onmt's, done where a
command starts and where the library loads an OpenNMT-py checkpoint.
"""

__version__ = "0.1.0"
