"""A QuantPolicy from the quantization options, and the options back from a policy."""
from onmt_qd.opts.errors import OptionError
from onmt_qd.quant import MAX_BITS, QuantPolicy, validate_bits


def policy_from_opts(opt, prefix: str = "quant_") -> QuantPolicy | None:
    """The QuantPolicy the options of ``policy_opts(parser, prefix)`` describe, checked
    here once: None when training without -quant_bits (0); the stand-alone commands
    (prefix "") require -bits."""
    option = f"-{prefix}bits"
    if prefix and not opt.quant_bits:
        return None
    if opt.quant_bits is None:
        raise OptionError(f"{option} is required (an integer from 1 to {MAX_BITS})")
    try:
        validate_bits(opt.quant_bits, option)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    overrides = {}
    for item in opt.quant_bits_override:
        pattern, sep, bits = item.rpartition("=")
        if not sep or not bits.isdigit():
            raise OptionError(f"bits override '{item}' is not PATTERN=BITS, e.g. generator=8")
        overrides[pattern] = int(bits)
    try:
        return QuantPolicy(
            bits=opt.quant_bits, bucket_size=opt.quant_bucket_size, method=opt.quant_method,
            rounding=opt.quant_rounding, embeddings=not opt.quant_skip_embeddings,
            generator=not opt.quant_skip_generator, biases=opt.quant_biases,
            include=tuple(opt.quant_include), exclude=tuple(opt.quant_exclude),
            bits_overrides=overrides or None)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def policy_options(policy: QuantPolicy) -> dict:
    """The training options (dest: value) that describe ``policy``, the inverse of
    policy_from_opts: what a resumed run keeps from, or compares with, a checkpoint."""
    return {"quant_bits": policy.bits, "quant_bucket_size": policy.bucket_size,
            "quant_method": policy.method, "quant_rounding": policy.rounding,
            "quant_skip_embeddings": not policy.embeddings,
            "quant_skip_generator": not policy.generator, "quant_biases": policy.biases,
            "quant_include": list(policy.include), "quant_exclude": list(policy.exclude),
            "quant_bits_override": [f"{pattern}={bits}" for pattern, bits
                                    in policy.bits_overrides.items()]}


QUANT_OPTIONS = tuple(policy_options(QuantPolicy()))  # quant_bits first
