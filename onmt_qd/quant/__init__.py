"""Bucketed uniform and non-uniform quantization, the quantization policy and bit
allocation (docs/method.md §1, §2, §4). Pure torch: no OpenNMT-py import."""
from onmt_qd.quant.allocation import allocate_bits, allocate_points, check_avg_bits
from onmt_qd.quant.buckets import bucket_scales, bucket_view, scaled_values, unbucket
from onmt_qd.quant.methods import QUANTIZERS, Quantizer, get_quantizer, register_quantizer
from onmt_qd.quant.policy import QuantPolicy
from onmt_qd.quant.quantizer import (
    MAX_BITS, QuantizedTensor, point_gradient, project_points, quantile_points,
    quantize_to_points, quantize_uniform, uniform_points, validate_bits,
    validate_bucket_size)

__all__ = [
    "MAX_BITS", "QUANTIZERS", "QuantPolicy", "QuantizedTensor", "Quantizer", "allocate_bits",
    "allocate_points", "bucket_scales", "bucket_view", "check_avg_bits", "get_quantizer",
    "point_gradient", "project_points", "quantile_points", "quantize_to_points",
    "quantize_uniform", "register_quantizer", "scaled_values", "unbucket", "uniform_points",
    "validate_bits", "validate_bucket_size",
]
