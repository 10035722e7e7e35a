"""Training-time fake quantization with full-precision shadow weights (Algorithm 1,
docs/method.md §3).

Before a forward pass the selected parameters are overwritten in place with Q(w)
computed from their shadow copy; before the optimizer step the shadow values are
written back, so the gradient taken at Q(w) updates w (straight-through). Writing
in place keeps nn.LSTM's flattened cuDNN weights valid."""
import torch

from onmt_qd.quant import get_quantizer


def _whole_buckets(numel, bucket_size):
    return -(-numel // bucket_size) * bucket_size


class ShadowWeights:
    """Full-precision copies w of some parameters, for while the parameters hold
    quantized values: quantized training and differentiable quantization both swap
    through this class.

    The copies share one float32 buffer. Each tensor is padded to whole buckets with
    its last value (as ``bucket_view`` pads, so every bucket is the one per-tensor
    quantization sees) and tensors of equal bits lie side by side, so a bucket-local
    method quantizes all tensors of one bit width in a single call."""

    def __init__(self, params, bits, bucket_size):
        self.params = params
        self.bucket_size = bucket_size
        self.starts, self.groups, offset = {}, {}, 0
        for name in sorted(params, key=bits.__getitem__):  # stable: model order inside
            self.starts[name] = offset
            offset += _whole_buckets(params[name].numel(), bucket_size)
            start, names = self.groups.get(bits[name], (self.starts[name], []))
            self.groups[bits[name]] = (start, names + [name])
        self.buffer = torch.empty(offset, dtype=torch.float32,
                                  device=next(iter(params.values())).device)
        self.save()

    def __getitem__(self, name):
        """The shadow copy of parameter ``name``, in its shape (a view)."""
        param = self.params[name]
        start = self.starts[name]
        return self.buffer[start:start + param.numel()].view(param.shape)

    def group(self, bits, buffer=None):
        """The flat part of the shadow buffer (or of ``buffer``, laid out alike) that
        holds every tensor of ``bits`` bits."""
        start, names = self.groups[bits]
        last = names[-1]
        stop = self.starts[last] + _whole_buckets(self.params[last].numel(), self.bucket_size)
        return (self.buffer if buffer is None else buffer)[start:stop]

    @torch.no_grad()
    def save(self):
        """Copy the parameters (which must hold w) into the shadow buffer."""
        for name, param in self.params.items():
            start, numel = self.starts[name], param.numel()
            self.buffer[start:start + numel].copy_(param.reshape(-1))
            stop = start + _whole_buckets(numel, self.bucket_size)
            if stop > start + numel:
                self.buffer[start + numel:stop] = self.buffer[start + numel - 1]

    @torch.no_grad()
    def load(self):
        """Make the parameters hold the shadow values w again."""
        for name, param in self.params.items():
            param.copy_(self[name])

    @torch.no_grad()
    def write(self, name, values):
        """Make parameter ``name`` hold ``values`` (its quantized weights)."""
        param = self.params[name]
        param.copy_(values.reshape(param.shape).to(param.dtype))

    @torch.no_grad()
    def write_group(self, bits, values):
        """Write a quantized ``group(bits)`` back into its parameters."""
        start, names = self.groups[bits]
        for name in names:
            offset = self.starts[name] - start
            self.write(name, values[offset:offset + self.params[name].numel()])


class FakeQuantizer:
    def __init__(self, model, policy):
        self.policy = policy
        self.quantizer = get_quantizer(policy.method)
        params = dict(model.named_parameters())
        self.bits = policy.select({k: tuple(p.shape) for k, p in params.items()})
        self.shadow = ShadowWeights({k: params[k] for k in self.bits}, self.bits,
                                    policy.bucket_size)
        self.mode = None  # None: parameters hold w; else the rounding they hold Q(w) for
        self.generator = torch.Generator(device=self.shadow.buffer.device)
        self.generator.manual_seed(0)
        # reused every step: a fresh buffer of this size costs page faults each time
        self.values = torch.empty_like(self.shadow.buffer) if self.quantizer.bucket_local else None

    @torch.no_grad()
    def quantize(self, stochastic):
        """Make the parameters hold Q(w); no-op if they already do for this rounding.
        A bucket-local method quantizes each bit width's tensors in one pass; the
        others (quantile: points from the whole tensor) go tensor by tensor."""
        if self.mode == stochastic:
            return
        self.restore()
        self.shadow.save()
        if self.quantizer.bucket_local:
            for bits in self.shadow.groups:
                values = self.quantizer.fake_quantize(
                    self.shadow.group(bits), bits, self.policy.bucket_size, stochastic,
                    self.generator, out=self.shadow.group(bits, self.values))
                self.shadow.write_group(bits, values)
        else:
            for name, bits in self.bits.items():
                qt = self.policy.quantize(name, self.shadow[name], bits=bits,
                                          stochastic=stochastic, generator=self.generator)
                self.shadow.write(name, qt.dequantize())
        self.mode = stochastic

    def restore(self):
        """Make the parameters hold the full-precision shadow weights w again."""
        if self.mode is None:
            return
        self.shadow.load()
        self.mode = None

    def pre_forward(self, module, inputs):
        """Forward pre-hook: training rounds as the policy says, eval deterministically."""
        self.quantize(module.training and self.policy.rounding == "stochastic")

    def attach(self, model, optimizer):
        model.register_forward_pre_hook(self.pre_forward)
        optimizer.before_step.append(self.restore)
