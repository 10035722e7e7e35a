"""The teacher: loaded once, frozen, in eval mode, on the student's device."""
import torch
from onmt.inputters.inputter import vocabs_to_dict

from onmt_qd.compat import load_checkpoint
from onmt_qd.models import build_model_from_checkpoint


class VocabMismatchError(ValueError):
    pass


def check_same_vocabs(teacher_vocab, student_vocab):
    """Word-level KL compares distributions position by position, so both models
    must index the same tokens: raise on the first difference."""
    for side in ("src", "tgt"):
        t, s = teacher_vocab[side], student_vocab[side]
        for i, (a, b) in enumerate(zip(t, s)):
            if a != b:
                raise VocabMismatchError(
                    f"teacher and student {side} vocabularies differ at index {i}: "
                    f"teacher has '{a}', student has '{b}'; build both from the same vocab files")
        if len(t) != len(s):
            raise VocabMismatchError(
                f"teacher {side} vocabulary has {len(t)} tokens, student has {len(s)}; "
                "build both from the same vocab files")


def load_teacher(path, student_vocabs, device):
    """Frozen teacher model whose vocabularies match ``student_vocabs``."""
    checkpoint = load_checkpoint(path)
    check_same_vocabs(checkpoint["vocab"], vocabs_to_dict(student_vocabs))
    # Building the model draws initial weights; keep that off the student's random
    # stream, so a teacher changes the student's training through the loss alone.
    with torch.random.fork_rng(devices=[]):
        teacher, _, _ = build_model_from_checkpoint(checkpoint, device)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher
