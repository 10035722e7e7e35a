"""QDModelSaver: checkpoints in the stock layout, written atomically, with the
quantization state, the validation record, the run id and <save_model>_best.pt."""
import contextlib
import math
import os
import shutil

import torch
from onmt.inputters.inputter import vocabs_to_dict
from onmt.models.model_saver import ModelSaver
from onmt.utils.logging import logger

from onmt_qd.compat import load_checkpoint, save_atomic
from onmt_qd.fileio import atomic_output, remove_stale_temporaries
from onmt_qd.models import model_weights, parameter_shapes, split_weights
from onmt_qd.quant_checkpoint import (QUANT_KEY, RUN_KEY, SHADOW_KEY, VALID_KEY,
                                      attach_quantization, quantize_weights)
from onmt_qd.train.checks import foreign_checkpoints
from onmt_qd.train.distributed import check_same_state


class QDModelSaver(ModelSaver):
    """Checkpoints in the stock layout, written atomically. With quantized training the
    stock keys hold Q(w) and ``qd_quant``/``qd_shadow`` what resuming and compression
    need; the best validation checkpoint is also kept as ``<save_model>_best.pt``.
    Every checkpoint records ``run`` (RUN_KEY), the run that wrote it. With several
    data-parallel processes (``lockstep``) every process builds the checkpoint and
    rank 0 writes it only if all hold the same weights, optimizer state and rounding
    state (check_same_state)."""

    fake_quant = None
    lockstep = False
    valid_ppl = None
    best_ppl = math.inf
    run = None

    @staticmethod
    def writes():
        """Only rank 0 writes (and removes) checkpoints."""
        return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0

    def _save(self, step, model):
        if not self.writes() and not self.lockstep:
            return None, None
        if self.fake_quant is not None:
            self.fake_quant.restore()
        weights = model_weights(model)
        if not all(w.isfinite().all() for w in weights.values() if w.is_floating_point()):
            raise self.diverged(step, "the weights are not finite")
        checkpoint = {"vocab": vocabs_to_dict(self.vocabs), "opt": self.model_opt,
                      "optim": self.optim.state_dict(), RUN_KEY: self.run}
        if self.fake_quant is not None:
            policy = self.fake_quant.policy
            selected = policy.select(parameter_shapes(model))  # tied names included
            shadow = {k: weights[k] for k in selected}
            weights, quantized = quantize_weights(weights, policy, selected)
            attach_quantization(checkpoint, weights, quantized, self.fake_quant.policy)
            checkpoint[SHADOW_KEY] = shadow
        else:
            checkpoint["model"], checkpoint["generator"] = split_weights(weights)
        if self.lockstep:
            parts = [checkpoint.get(key) for key in
                     ("model", "generator", QUANT_KEY, SHADOW_KEY, "optim")]
            if self.fake_quant is not None:
                parts.append(self.fake_quant.generator.get_state())
            digest = check_same_state(step, parts)
            logger.info(f"Step {step}: the data-parallel processes hold the same weights "
                        f"(sha256 {digest[:16]})")
        if not self.writes():
            return None, None
        if self.valid_ppl is not None:
            checkpoint[VALID_KEY] = {"ppl": self.valid_ppl, "step": step}
        path = f"{self.base_path}_step_{step}.pt"
        logger.info(f"Saving checkpoint {path}")
        with self.writing(path, self.last_checkpoint()):
            save_atomic(checkpoint, path)
        if self.valid_ppl is not None and self.valid_ppl < self.best_ppl:
            best = f"{self.base_path}_best.pt"
            with self.writing(best, path), atomic_output(best) as temporary:
                shutil.copyfile(path, temporary)
            self.best_ppl = self.valid_ppl
        return path, None

    def last_checkpoint(self):
        """The last step checkpoint this run wrote, or None."""
        if self.last_saved_step is None:
            return None
        return f"{self.base_path}_step_{self.last_saved_step}.pt"

    @staticmethod
    @contextlib.contextmanager
    def writing(path, last):
        """A failed write (full disk, permissions, read-only file system) is one line
        naming the checkpoint and ``last``, the last one written; atomic_output has
        removed the partial file."""
        try:
            yield
        except OSError as exc:
            kept = f"the last checkpoint written is {last}" if last else \
                "no checkpoint was written"
            raise ValueError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                             f"{kept}. Make room, or choose another -save_model") from exc

    def diverged(self, step, what):
        """The error that stops a diverged run; nothing of it is saved."""
        last = self.last_checkpoint()
        kept = f"the last good checkpoint is {last}" if last else "this run saved no checkpoint"
        return ValueError(f"training stopped at step {step}: {what} (training diverged); "
                          f"{kept}. Lower -learning_rate, or check the distillation and "
                          "quantization options")

    def begin(self, opt, checkpoint):
        """Remove what a killed run left half-written, and with -overwrite_model the
        checkpoints of other runs (as check_resume found them for the -train_from
        ``checkpoint``); when resuming, restore the best validation perplexity
        from ``<save_model>_best.pt`` (then this run's own), so that a worse model never
        replaces it."""
        if not self.writes():
            return
        for path in remove_stale_temporaries(self.base_path):
            logger.info(f"Removed {path}, left half-written by a killed run")
        # only with -overwrite_model: check_resume refused them otherwise
        for path in foreign_checkpoints(opt, checkpoint if opt.train_from else None):
            os.remove(path)
            logger.info(f"Removed {path}, written by another run (-overwrite_model)")
        best = f"{self.base_path}_best.pt"
        if opt.train_from and os.path.isfile(best):
            record = load_checkpoint(best).get(VALID_KEY)
            if record is not None:
                self.best_ppl = record["ppl"]
                logger.info(f"Resuming: {best} keeps validation perplexity "
                            f"{self.best_ppl:.3f} (step {record['step']}) until a better one")
