"""onmt_qd's options, split by job: declarations.py declares every option and builds
each command's parser; parsing.py parses strictly (unknown options and -config keys
are one-line errors); policy.py turns the quantization options into a QuantPolicy and
back; devices.py checks the CUDA devices an option names; errors.py holds OptionError.
The names other modules use are importable from ``onmt_qd.opts`` itself."""
from onmt_qd.opts.declarations import (AUTOCAST_DTYPES, compress_parser, data_parser,
                                       diffquant_parser, eval_parser, export_parser,
                                       quantize_parser, recipe_parser, teacher_cache_parser,
                                       teacher_cache_verify_parser,
                                       teacher_translate_parser, train_parser,
                                       translate_parser)
from onmt_qd.opts.devices import check_devices
from onmt_qd.opts.errors import OptionError
from onmt_qd.opts.parsing import check_keys, did_you_mean, given_options, options_of, parse
from onmt_qd.opts.policy import QUANT_OPTIONS, policy_from_opts, policy_options

__all__ = ["AUTOCAST_DTYPES", "QUANT_OPTIONS", "OptionError", "check_devices", "check_keys",
           "compress_parser", "data_parser", "did_you_mean", "diffquant_parser", "eval_parser",
           "export_parser", "given_options", "options_of", "parse", "policy_from_opts",
           "policy_options", "quantize_parser", "recipe_parser", "teacher_cache_parser",
           "teacher_cache_verify_parser", "teacher_translate_parser", "train_parser",
           "translate_parser"]
