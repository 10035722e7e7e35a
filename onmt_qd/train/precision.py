"""Mixed precision for training: the model's matrix work under torch.autocast while the
losses and the quantizers stay in fp32 (docs/architecture.md, "Precision").

OpenNMT-py's Trainer wraps every step in ``torch.cuda.amp.autocast(enabled=amp)``,
where ``amp`` means fp16 with a gradient scaler; with fp16 off that context switches an
outer autocast off, so the autocast goes inside the model's own forward instead."""
import functools

import torch


def use_autocast(model, dtype):
    """Run ``model`` (an OpenNMT-py NMTModel) and its generator under autocast to ``dtype``.

    The weights stay fp32 (autocast casts per operation), so the fake quantizer's
    forward pre-hook rounds fp32 shadow weights, and the generator hands fp32 logits to
    the cross-entropy and KL terms."""
    device_type = next(model.parameters()).device.type
    model.forward = _under_autocast(model.forward, device_type, dtype)
    model.generator.forward = _under_autocast(model.generator.forward, device_type, dtype,
                                              fp32_output=True)


def _under_autocast(forward, device_type, dtype, fp32_output=False):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            output = forward(*args, **kwargs)
        return output.float() if fp32_output else output
    return run
