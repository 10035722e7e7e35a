"""Can CTranslate2 give a teacher's distribution at each gold target position (issue 34
item 5)? Decodes N training pairs with the gold target as ``target_prefix`` and
``return_logits_vocab``, and compares log_softmax of each position's logits at the gold
token with ``score_batch``'s log-probabilities of the same pairs.

    python benchmarks/ct2_gold_logits.py -model EXPORT_DIR -src TRAIN.de -tgt TRAIN.en [-n 50]"""
import argparse
import json
import os

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-model", required=True, help="an onmt_qd_export directory")
    parser.add_argument("-src", required=True)
    parser.add_argument("-tgt", required=True)
    parser.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    import ctranslate2
    import sentencepiece

    manifest = json.load(open(os.path.join(args.model, "manifest.json")))
    source = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(args.model, manifest["source_spm"]))
    target = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(args.model, manifest["target_spm"]))
    vocabulary_file = next(f for f in ("shared_vocabulary.json", "target_vocabulary.json")
                           if os.path.exists(os.path.join(args.model, f)))
    index = {w: i for i, w in enumerate(json.load(open(os.path.join(args.model,
                                                                     vocabulary_file))))}
    with open(args.src, encoding="utf-8") as s, open(args.tgt, encoding="utf-8") as t:
        pairs = [(a.strip(), b.strip()) for a, b, _ in zip(s, t, range(args.n))]
    sources = [source.encode(a, out_type=str) for a, _ in pairs]
    golds = [target.encode(b, out_type=str) for _, b in pairs]
    translator = ctranslate2.Translator(args.model, device="cpu")
    decoded = translator.translate_batch(sources, target_prefix=golds, beam_size=1,
                                         return_logits_vocab=True,
                                         max_decoding_length=max(map(len, golds)) + 1)
    scored = translator.score_batch(sources, golds)
    differences, kept = [], 0
    for result, score, gold in zip(decoded, scored, golds):
        kept += result.hypotheses[0][:len(gold)] == gold
        for position, token in enumerate(gold + ["</s>"]):
            logits = np.asarray(result.logits[0][position], dtype=np.float64)
            log_probs = logits - (np.log(np.exp(logits - logits.max()).sum()) + logits.max())
            differences.append(abs(log_probs[index[token]] - score.log_probs[position]))
    print(json.dumps({"pairs": len(pairs), "prefix_kept": kept, "positions": len(differences),
                      "vocabulary": len(index),
                      "logits_per_position": int(np.asarray(decoded[0].logits[0][0]).size),
                      "max_abs_difference": round(max(differences), 4),
                      "mean_abs_difference": round(float(np.mean(differences)), 5),
                      "ctranslate2": ctranslate2.__version__}))


if __name__ == "__main__":
    main()
