from onmt_qd.distill.loss import DistillLossCompute, distillation_loss
from onmt_qd.distill.teacher import check_same_vocabs, load_teacher

__all__ = ["DistillLossCompute", "distillation_loss", "check_same_vocabs", "load_teacher"]
