from onmt_qd.distill.loss import DistillLossCompute, distillation_loss, topk_distillation_loss
from onmt_qd.distill.teacher import (CachedTeacher, LiveTeacher, check_same_vocabs, load_teacher,
                                     teacher_forced_logits, teacher_from_opts)

__all__ = ["DistillLossCompute", "distillation_loss", "topk_distillation_loss", "CachedTeacher",
           "LiveTeacher", "check_same_vocabs", "load_teacher", "teacher_forced_logits",
           "teacher_from_opts"]
