"""Training-time fake quantization with full-precision shadow weights (Algorithm 1).

Before a forward pass the selected parameters are overwritten in place with Q(w)
computed from their shadow copy; before the optimizer step the shadow values are
written back, so the gradient taken at Q(w) updates w (straight-through). Writing
in place keeps nn.LSTM's flattened cuDNN weights valid."""
import torch


class FakeQuantizer:
    def __init__(self, model, policy):
        self.policy = policy
        params = dict(model.named_parameters())
        self.bits = policy.select({k: tuple(p.shape) for k, p in params.items()})
        self.params = {k: params[k] for k in self.bits}
        self.shadow = {k: p.detach().clone() for k, p in self.params.items()}
        self.mode = None  # None: parameters hold w; else the rounding they hold Q(w) for
        self.generator = torch.Generator(device=next(iter(self.params.values())).device)
        self.generator.manual_seed(0)

    def quantize(self, stochastic):
        """Make the parameters hold Q(w); no-op if they already do for this rounding."""
        if self.mode == stochastic:
            return
        self.restore()
        with torch.no_grad():
            for name, param in self.params.items():
                self.shadow[name].copy_(param)
                qt = self.policy.quantize(name, param.detach().float(), bits=self.bits[name],
                                          stochastic=stochastic, generator=self.generator)
                param.copy_(qt.dequantize().to(param.dtype))
        self.mode = stochastic

    def restore(self):
        """Make the parameters hold the full-precision shadow weights w again."""
        if self.mode is None:
            return
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.shadow[name])
        self.mode = None

    def pre_forward(self, module, inputs):
        """Forward pre-hook: training rounds as the policy says, eval deterministically."""
        self.quantize(module.training and self.policy.rounding == "stochastic")

    def attach(self, model, optimizer):
        model.register_forward_pre_hook(self.pre_forward)
        optimizer.before_step.append(self.restore)
