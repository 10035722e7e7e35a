"""A CTranslate2 translator directory as the teacher of word-level distillation: its
log-probabilities at every gold target position of an OpenNMT-py batch, over the
student's target vocabulary. CTranslate2 decodes each sentence with its gold target as
``target_prefix`` and ``return_logits_vocab``: the logits of each forced step are the
teacher's distribution at that position (within 0.0014 nats on average of its
``score_batch``, docs/results.md). The batch's tokens go to the translator as the
strings they are in the student's vocabularies, so the two vocabularies need not be in
the same order: each of the teacher's target tokens must be in the student's (a recipe
builds the student's vocabulary from the teacher's); a student token the teacher lacks
gets probability zero."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from onmt_qd.ct2_format import check_translator_spec, read_vocabularies

if TYPE_CHECKING:
    from onmt_qd.distill.cache import Vocabs
    from onmt_qd.distill.loss import Batch

# log-probability of a student token the teacher does not have: exp() is 0 in float32,
# and, unlike -inf, 0 * (it - log q) stays 0 in the KL
ABSENT = -1e4


class TranslatorTeacher:
    """A CTranslate2 translator asked teacher-forced, batch by batch."""

    def __init__(self, directory: str, student_vocabs: Vocabs, device: torch.device | str,
                 option: str = "-teacher_model", other: str = "student"):
        import ctranslate2

        check_translator_spec(directory, option)
        _, target = read_vocabularies(directory)
        self.source_tokens = student_vocabs["src"].ids_to_tokens
        self.target_tokens = student_vocabs["tgt"].ids_to_tokens
        index = {token: i for i, token in enumerate(self.target_tokens)}
        missing = [token for token in target if token not in index]
        if missing:
            raise ValueError(f"{option} {directory}: {len(missing)} of its target tokens "
                             f"('{missing[0]}'...) are not in the {other} target "
                             "vocabulary, so its distribution cannot be compared with the "
                             "student's: build the student's vocabulary from the teacher's "
                             "(a recipe does)")
        self.columns = torch.tensor([index[token] for token in target])
        self.device = device = torch.device(device)
        cuda = device.type == "cuda"
        self.translator = ctranslate2.Translator(
            directory, device="cuda" if cuda else "cpu", device_index=device.index or 0,
            inter_threads=1, intra_threads=0 if cuda else torch.get_num_threads())

    def forced_logits(self, batch: Batch) -> torch.Tensor:
        """Log-probabilities at every target position given the gold prefix:
        [batch * positions, student vocabulary], rows in the order of
        ``batch["tgt"][:, 1:]`` flattened (padding rows uniform, never used)."""
        sources = [[self.source_tokens[i] for i in row[:n]] for row, n in zip(
            batch["src"][:, :, 0].tolist(), batch["srclen"].tolist())]
        positions = (batch["tgtlen"] - 1).tolist()  # the gold tokens and the end
        golds = [[self.target_tokens[i] for i in row[:n - 1]] for row, n in zip(
            batch["tgt"][:, 1:, 0].tolist(), positions)]
        results = self.translator.translate_batch(
            sources, target_prefix=golds, beam_size=1, return_logits_vocab=True,
            max_decoding_length=max(positions), min_decoding_length=0, max_input_length=0)
        width = batch["tgt"].size(1) - 1
        out = torch.zeros(len(golds), width, len(self.target_tokens))
        for b, (result, n) in enumerate(zip(results, positions)):
            steps = result.logits[0]
            if len(steps) < n:
                raise ValueError(f"CTranslate2 gave {len(steps)} steps for a target of {n} "
                                 "positions (did the teacher end inside the gold prefix?)")
            # a GPU's StorageViews are read through their CUDA array interface; CTranslate2
            # may pad the vocabulary to a multiple of 8 there: the teacher's tokens first
            logits = torch.stack([torch.as_tensor(s, device=self.device)
                                  if self.device.type == "cuda" else
                                  torch.from_numpy(np.asarray(s)) for s in steps[:n]]
                                 )[:, :len(self.columns)].cpu()
            out[b, :n] = ABSENT
            out[b, :n, self.columns] = torch.log_softmax(logits.float(), dim=-1)
        return out.view(-1, out.size(-1)).to(self.device)
