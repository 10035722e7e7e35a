"""BLEU and chrF (sacrebleu, detokenized text, with signatures) and reference
perplexity (teacher-forced cross-entropy of the gold target)."""
import copy
import math

import torch
import torch.nn.functional as F
from onmt.constants import CorpusTask, DefaultTokens
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.transforms import get_transforms_cls

from onmt_qd.distill.teacher import teacher_forced_logits


def bleu_chrf(hypotheses, references):
    """(bleu, chrf, bleu signature, chrf signature) with sacrebleu's defaults."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} translations for {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return (bleu_score.score, chrf_score.score, str(bleu.get_signature()),
            str(chrf.get_signature()))


def word_count(lines):
    """Words of ``lines`` as sacrebleu's BLEU counts them (its 13a tokenizer): the length
    measure of its brevity penalty, the same for every engine's detokenized output."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    return sum(len(tokenize(line).split()) for line in lines)


def valid_transforms(train_opt):
    """The transforms the model was validated with (those that apply at inference)."""
    data = getattr(train_opt, "data", None) or {}
    transforms = data.get("valid", {}).get("transforms") or getattr(train_opt, "transforms", [])
    return [t for t in transforms if t not in ("filtertoolong",)]


@torch.no_grad()
def reference_perplexity(model, vocabs, train_opt, src_path, tgt_path, device="cpu"):
    """exp(mean cross-entropy of the gold target tokens), tokenized as in validation."""
    opt = copy.deepcopy(train_opt)
    transforms = valid_transforms(train_opt)
    corpus = dict(train_opt.data[CorpusTask.VALID])  # validated: every field present
    corpus.update(path_src=src_path, path_tgt=tgt_path, transforms=transforms)
    opt.data = {CorpusTask.VALID: corpus}
    opt._all_transform = set(transforms)
    opt.num_workers = 0
    opt.valid_batch_size = 64
    opt.batch_type = "sents"
    device_id = -1 if str(device) == "cpu" else torch.device(device).index or 0
    opt.gpu_ranks = [] if device_id < 0 else [device_id]
    iterator = build_dynamic_dataset_iter(opt, get_transforms_cls(opt._all_transform), vocabs,
                                          task=CorpusTask.VALID, device_id=device_id)
    padding = vocabs["tgt"][DefaultTokens.PAD]
    total_loss, total_words = 0.0, 0
    model.eval()
    for batch, _ in iterator:
        logits = teacher_forced_logits(model, batch)
        target = batch["tgt"][:, 1:, 0].reshape(-1)
        total_loss += F.cross_entropy(logits.float(), target, ignore_index=padding,
                                      reduction="sum").item()
        total_words += int(target.ne(padding).sum())
    return math.exp(min(total_loss / max(total_words, 1), 100))
