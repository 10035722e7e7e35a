"""Quantized checkpoints: OpenNMT-py's layout with dequantized weights under the stock
keys (so stock translation loads the quantized model) plus, under ``qd_quant``, what
the compressed file needs: the policy and every tensor's levels, scales and points."""
import torch

from onmt_qd.models import meta_model, named_weights, parameter_shapes, split_weights
from onmt_qd.quant import QuantizedTensor, QuantPolicy

# Every key onmt_qd adds to an OpenNMT-py checkpoint (docs/formats.md); import these,
# never write the strings.
QUANT_KEY = "qd_quant"          # policy and each tensor's levels, scales and points
SHADOW_KEY = "qd_shadow"        # full-precision shadow weights, for resuming
VALID_KEY = "qd_valid"          # validation perplexity and step of this checkpoint
DIFFQUANT_KEY = "qd_diffquant"  # differentiable quantization's allocation and norms
RUN_KEY = "qd_run"              # id of the training run that wrote the checkpoint


class NotQuantizedError(ValueError):
    pass


def check_checkpoint_output(path, command):
    """-output of a command that writes a quantized checkpoint (onmt_qd_quantize,
    onmt_qd_diffquant): a file, and not under the compressed file's name."""
    from onmt_qd.fileio import check_not_stdout

    if path.lower().endswith(".qdz"):
        raise ValueError(f"-output {path}: {command} writes an OpenNMT-py checkpoint (.pt), "
                         "not a compressed .qdz; write OUT.pt, then onmt_qd_compress -model "
                         f"OUT.pt -output {path}")
    check_not_stdout("-output", path, "a model")


def tensor_entry(qt):
    return {"levels": qt.levels.cpu(), "alpha": qt.alpha.cpu(), "beta": qt.beta.cpu(),
            "points": qt.points.cpu(), "shape": list(qt.shape), "bucket_size": qt.bucket_size,
            "bits": qt.bits}


def tensor_from_entry(entry):
    return QuantizedTensor(levels=entry["levels"], alpha=entry["alpha"], beta=entry["beta"],
                           points=entry["points"], shape=tuple(entry["shape"]),
                           bucket_size=entry["bucket_size"], bits=entry["bits"])


def quantize_weights(weights, policy, selected, points=None, generator=None):
    """Quantize the tensors of ``selected`` (name -> bits, the policy's selection from
    the model's parameters) on the CPU, rounding deterministically, or stochastically
    with ``generator`` when one is given; ``points`` optionally gives per-name points
    (differentiable quantization). Returns (weights with dequantized values,
    name -> QuantizedTensor)."""
    points = points or {}
    out, quantized = dict(weights), {}
    for name, bits in selected.items():
        qt = policy.quantize(name, weights[name].detach().float().cpu(), bits=bits,
                             points=points.get(name), stochastic=generator is not None,
                             generator=generator)
        quantized[name] = qt
        out[name] = qt.dequantize().to(weights[name].dtype)
    return out, quantized


def attach_quantization(checkpoint, weights, quantized, policy):
    """Write quantized weights and their quantization state into ``checkpoint``."""
    checkpoint["model"], checkpoint["generator"] = split_weights(weights)
    checkpoint[QUANT_KEY] = {"policy": policy.to_dict(),
                             "tensors": {k: tensor_entry(v) for k, v in quantized.items()}}
    return checkpoint


def requantization_note(checkpoint, path):
    """One line saying where quantizing an already quantized model starts from, or None."""
    if QUANT_KEY not in checkpoint:
        return None
    bits = checkpoint[QUANT_KEY]["policy"]["bits"]
    source = ("its full-precision shadow weights" if SHADOW_KEY in checkpoint else
              f"its {bits}-bit values (it keeps no full-precision weights)")
    return f"{path} is already quantized ({bits} bits): quantizing again from {source}"


def quantize_checkpoint(checkpoint, policy, seed=0, path="checkpoint"):
    """Post-training ("PM") quantization of a full-precision checkpoint (read from
    ``path``), with the policy's rounding (stochastic rounding draws from a generator
    seeded with ``seed``). A checkpoint that is already quantized is quantized again from
    its full-precision shadow weights when it has them, else from its stored weights."""
    weights = named_weights(checkpoint)
    weights.update(checkpoint.get(SHADOW_KEY, {}))
    generator = (torch.Generator().manual_seed(seed) if policy.rounding == "stochastic"
                 else None)
    selected = policy.select(parameter_shapes(meta_model(checkpoint)))
    if not selected:
        raise ValueError(f"the policy leaves no tensor of {path} to quantize (see -exclude "
                         "and -skip_*): nothing written")
    weights, quantized = quantize_weights(weights, policy, selected, generator=generator)
    # the validation record described the weights before quantization, and the run
    # wrote other weights: they go too
    out = {k: v for k, v in checkpoint.items()
           if k not in (QUANT_KEY, SHADOW_KEY, VALID_KEY, RUN_KEY, "optim")}
    return attach_quantization(out, weights, quantized, policy)


@torch.no_grad()
def quantize_(model: torch.nn.Module, policy: QuantPolicy,
              generator: torch.Generator | None = None) -> dict:
    """Post-training quantization of a model object in place (as torchao's
    ``quantize_(model, config)``): every parameter the policy selects is replaced by
    its dequantized values, which the model then computes with. Returns name ->
    QuantizedTensor, what ``attach_quantization`` writes into a checkpoint and the
    compressed file stores. Rounding is stochastic when ``generator`` is given.
    onmt_qd_quantize does the same to a checkpoint (quantize_checkpoint)."""
    state = model.state_dict(keep_vars=True)
    selected = policy.select(parameter_shapes(model))
    if not selected:
        raise ValueError("the policy leaves no parameter of the model to quantize")
    weights, quantized = quantize_weights({name: state[name] for name in selected}, policy,
                                          selected, generator=generator)
    for name, values in weights.items():
        state[name].copy_(values.to(state[name].device))
    return quantized


def quantization_of(checkpoint, path="checkpoint"):
    """(policy, name -> QuantizedTensor) of a quantized checkpoint."""
    if QUANT_KEY not in checkpoint:
        raise NotQuantizedError(f"{path} is not quantized: quantize it first with "
                                "onmt_qd_quantize (or train with -quant_bits)")
    state = checkpoint[QUANT_KEY]
    return (QuantPolicy.from_dict(state["policy"]),
            {k: tensor_from_entry(v) for k, v in state["tensors"].items()})


def levels_per_bucket(qt):
    """Largest number of distinct levels in any bucket (a check that the saved model
    really is quantized)."""
    levels = qt.levels.long()
    pad = (-levels.numel()) % qt.bucket_size
    if pad:
        levels = torch.cat([levels, levels[-1:].expand(pad)])
    buckets = levels.view(-1, qt.bucket_size).sort(dim=1).values
    return int((buckets[:, 1:] != buckets[:, :-1]).sum(dim=1).max().item()) + 1
