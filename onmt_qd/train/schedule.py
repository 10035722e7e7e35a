"""The paper's learning-rate rule (docs/method.md §6): validate once per epoch; from the
first validation whose perplexity did not decrease on, halve the learning rate at
every validation; optionally also halve from a fixed epoch on (2017 start_decay_at)."""
import math

from onmt.utils.optimizers import Optimizer


class PlateauHalving:
    def __init__(self, start_decay_at_epoch=0):
        self.start_decay_at_epoch = start_decay_at_epoch
        self.scale = 1.0
        self.best_ppl = math.inf
        self.decaying = False
        self.epoch = 0

    def observe(self, ppl):
        """Record one epoch's validation perplexity; returns True if it halved."""
        self.epoch += 1
        if ppl >= self.best_ppl:
            self.decaying = True
        self.best_ppl = min(self.best_ppl, ppl)
        if self.start_decay_at_epoch and self.epoch >= self.start_decay_at_epoch:
            self.decaying = True
        if self.decaying:
            self.scale *= 0.5
        return self.decaying

    def state_dict(self):
        return {"scale": self.scale, "best_ppl": self.best_ppl, "decaying": self.decaying,
                "epoch": self.epoch, "start_decay_at_epoch": self.start_decay_at_epoch}

    def load_state_dict(self, state):
        self.scale = state["scale"]
        self.best_ppl = state["best_ppl"]
        self.decaying = state["decaying"]
        self.epoch = state["epoch"]


class QDOptimizer(Optimizer):
    """OpenNMT-py's Optimizer with two additions:
    - an optional PlateauHalving that replaces the step-based decay; its state
      travels inside the optimizer state, so -train_from restores it;
    - ``before_step`` callbacks (quantized training restores the full-precision
      shadow weights there, so the update lands on them)."""

    plateau = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.before_step = []

    def learning_rate(self):
        if self.plateau is None:
            return super().learning_rate()
        return self._learning_rate * self.plateau.scale

    def step(self):
        for callback in self.before_step:
            callback()
        super().step()

    def state_dict(self):
        state = super().state_dict()
        if self.plateau is not None:
            state["lr_schedule"] = self.plateau.state_dict()
        return state

    def load_state_dict(self, state_dict):
        self._pending_schedule = state_dict.get("lr_schedule")
        super().load_state_dict(state_dict)

    def use_plateau(self, plateau):
        """Attach the rule, restoring the state a resumed checkpoint carried."""
        self.plateau = plateau
        pending = getattr(self, "_pending_schedule", None)
        if pending:
            plateau.load_state_dict(pending)
