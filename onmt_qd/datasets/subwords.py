"""SentencePiece training on a fetched dataset's text."""


def train_sentencepiece(files, model_prefix, vocab_size=8000, model_type="unigram",
                        character_coverage=1.0, max_sentences=2_000_000):
    """A joint SentencePiece model over source and target training text."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=",".join(files), model_prefix=model_prefix, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        hard_vocab_limit=False, minloglevel=2)
    return model_prefix + ".model"
