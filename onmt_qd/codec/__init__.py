"""Entropy coding of quantization levels and the compressed model file (docs/method.md §7,
docs/formats.md "The compressed file")."""
from onmt_qd.codec.entropy import CODERS, Coder, entropy_bits, get_coder
from onmt_qd.codec.fileformat import (
    FORMAT_VERSION, CompressedFileError, is_compressed_file, read_compressed,
    write_compressed)
from onmt_qd.codec.sizereport import SizeReport, format_size_report

__all__ = [
    "CODERS", "Coder", "CompressedFileError", "FORMAT_VERSION", "SizeReport",
    "entropy_bits", "format_size_report", "get_coder", "is_compressed_file",
    "read_compressed", "write_compressed",
]
