"""A recipe's data: the dataset fetched (or cut to a profile's subset), its vocabulary
built by OpenNMT-py, the test sets pooled into one corpus, all named in
``data_config.yaml``."""
import os
import sys

import yaml

from onmt_qd import datasets
from onmt_qd.fileio import atomic_output, sha256
from onmt_qd.recipe.profile import SPM_KEYS, Profile, word_level
from onmt_qd.recipe.runner import RecipeError
from onmt_qd.recipe.signatures import given_digest

# in data_config.yaml for the recipe's stages, not for training: the test sets, and the
# source the teacher translates when the recipe adds monolingual text (mono)
RECIPE_ONLY_KEYS = ("test", "test_sets", "distill_src")


def prepare_data(pipeline, recipe, profile, data_dir, mirror):
    """Write data/ and data_config.yaml under ``pipeline``'s work folder; the vocabulary
    is built by the stage "data"'s command, or taken from the recipe's teacher_model (a
    CTranslate2 teacher's only for word-level distillation: otherwise it gives its
    tokenizers, and the students a vocabulary of the pieces the data holds)."""
    data = pipeline.path("data")
    files, test_sets = dataset_files(recipe["dataset"], profile, data,
                                     pipeline.path("data_raw") if profile.subset else data_dir,
                                     mirror)
    os.makedirs(data, exist_ok=True)
    config = corpus_config(files, data)
    config.update(vocabulary_options(recipe, profile, files, data, config["data"]))
    translator = recipe.get("teacher_translator")
    # its distribution meets the students' token by token
    if translator and pipeline.word_level:
        from onmt_qd.ct2_format import read_vocabularies

        source, target = read_vocabularies(translator.path)
        config.update(teacher_vocabulary({"src": source, "tgt": target}, config,
                                         recipe["teacher_model"], same_order=False))
    elif "teacher_model" in recipe and not translator:
        from onmt_qd.compat import load_checkpoint

        config.update(teacher_vocabulary(load_checkpoint(recipe["teacher_model"])["vocab"],
                                         config, recipe["teacher_model"]))
    else:
        build_vocabulary(pipeline, config)
    if "mono" in recipe:
        config["distill_src"] = with_mono(files["train"][0], recipe["mono"],
                                          os.path.join(data, "distill"))
    # a list, not a mapping: YAML writes a mapping's keys sorted, and the report cuts the
    # pooled translations back into sets in exactly the order they were pooled
    config["test_sets"] = [{"name": n, "src": src, "tgt": tgt}
                           for n, (src, tgt) in test_sets.items()]
    config["test"] = pooled_test_set(ordered_test_sets(config["test_sets"]), data)
    with atomic_output(pipeline.path("data_config.yaml")) as temporary, \
            open(temporary, "w") as handle:
        yaml.safe_dump(config, handle)


def data_settings(recipe: dict, profile: Profile) -> dict:
    """What the data stage's output depends on besides the dataset's files."""
    sentencepiece, dataset = bool(recipe.get("sentencepiece")), recipe["dataset"]
    given = {key: sha256(recipe[key]) for key in (*SPM_KEYS, "mono") if key in recipe}
    if "teacher_model" in recipe and "teacher_translator" not in recipe:
        given["teacher_model"] = sha256(recipe["teacher_model"])
    if "teacher_translator" in recipe:
        given["teacher_model"] = given_digest(recipe)  # the directory's files, hashed once
        # word level gives the students the teacher's vocabularies (prepare_data)
        given["teacher_vocabulary"] = word_level(recipe, profile)
    if isinstance(dataset, datasets.LocalFolderDataset):
        given["folder"] = dataset.folder
    return {"dataset": dataset.name, "subset": profile.subset,
            "vocabulary": profile.spm_vocab_size if sentencepiece else
            recipe.get("vocab_size", 50000), "sentencepiece": sentencepiece, **given}


def with_mono(source, mono, stem):
    """STEM.SRC: the training source, then the recipe's monolingual source text (blank
    lines left out): what the teacher translates for the distilled students."""
    path = stem + os.path.splitext(source)[1]
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as out:
        with open(source, encoding="utf-8", newline="\n") as handle:
            text = handle.read()
        out.write(text if text.endswith("\n") or not text else text + "\n")
        with open(mono, encoding="utf-8-sig", newline="\n") as handle:
            out.writelines(line if line.endswith("\n") else line + "\n"
                           for line in handle if line.strip())
    return path


def dataset_files(dataset, profile, data, raw, mirror):
    """(train/valid file pairs, test set name -> file pair) of ``dataset`` (a Dataset:
    registered, or a user's folder), fetched into ``raw`` unless there, cut to the
    profile's subset under ``data``."""
    if not os.path.exists(os.path.join(raw, "MANIFEST.json")):
        dataset.get(raw, mirror)
    files = dataset.split_files(raw)
    test_sets = dataset.test_sets(raw)
    if not test_sets:
        raise RecipeError(f"dataset {dataset.name} has no test split with references")
    if profile.subset:
        files = subset({k: files[k] for k in ("train", "valid")}, profile.subset, data)
        test_sets = {n: subset({"test": paths}, profile.subset, data)["test"]
                     for n, paths in test_sets.items()}
    return files, test_sets


def corpus_config(files, data):
    """OpenNMT-py's corpus options: train and valid, one shared vocabulary under ``data``."""
    return {"save_data": data, "overwrite": True,
            "src_vocab": os.path.join(data, "vocab.src"),
            "tgt_vocab": os.path.join(data, "vocab.tgt"), "share_vocab": True,
            "data": {split: {"path_src": files[split][0], "path_tgt": files[split][1]}
                     for split in ("train", "valid")}}


def vocabulary_options(recipe, profile, files, data, corpora):
    """The options that make the vocabulary: SentencePiece models (a CTranslate2
    teacher's, which may be two, the recipe's sentencepiece_model, or one trained on the
    training pair; their transforms set on each of ``corpora``), or a word vocabulary's
    size. A given checkpoint teacher's vocabulary replaces the sizes
    (``teacher_vocabulary``)."""
    translator = recipe.get("teacher_translator")
    spm_models = (translator.source_spm, translator.target_spm) if translator else \
        (recipe.get("sentencepiece_model"),) * 2
    if recipe.get("sentencepiece"):
        size = profile.spm_vocab_size
        spm_models = (datasets.train_sentencepiece(list(files["train"]),
                                                   os.path.join(data, f"spm{size}"), size),) * 2
    if spm_models[0] is None:
        size = recipe.get("vocab_size", 50000)
        return {"src_vocab_size": size, "tgt_vocab_size": size}
    for corpus in corpora.values():
        corpus["transforms"] = ["sentencepiece", "filtertoolong"]
    return {"src_subword_model": spm_models[0], "tgt_subword_model": spm_models[1],
            "share_vocab": spm_models[0] == spm_models[1],
            "src_seq_length": 200, "tgt_seq_length": 200}


def build_vocabulary(runner, config):
    """onmt_build_vocab over the whole training corpus, as the stage "data"'s command."""
    build_config = runner.path("configs", "build_vocab.yaml")
    with open(build_config, "w") as handle:
        yaml.safe_dump(config, handle)
    runner.command("data", [sys.executable, "-m", "onmt.bin.build_vocab", "-config",
                            build_config, "-n_sample", "-1"])
    for vocab in {config["src_vocab"], config["tgt_vocab"]}:  # one file when shared
        if os.path.exists(vocab):
            drop_unreadable_tokens(vocab)


def teacher_vocabulary(vocab, config, teacher_model, same_order=True):
    """A given teacher's vocabularies ({"src": tokens, "tgt": tokens}) as vocab files
    beside ``config``'s, and the data options that make OpenNMT-py rebuild them for the
    students (distillation compares the teacher's and the student's outputs token by
    token): exactly, index by index, for a checkpoint teacher; for a CTranslate2 teacher,
    whose tokens are matched by name (distill/ct2_teacher.py), every one of them in any
    order (a Marian model's </s> comes first). A vocabulary the files cannot reproduce
    (custom special tokens) is refused in one line."""
    from onmt_qd.distill import check_same_vocabs
    from onmt_qd.opts import parse, train_parser
    from onmt_qd.train.checks import configured_vocabs

    from onmt.constants import DefaultTokens

    for side in ("src", "tgt"):
        unreadable = [t for t in vocab[side] if f"{t}\t1".split(None, 1) != [t, "1"]]
        if unreadable:
            raise RecipeError(f"teacher_model {teacher_model}: its {side} vocabulary holds "
                              f"{unreadable[0]!r}, a token OpenNMT-py's vocabulary files "
                              "cannot hold (empty or with white space in it)")
    shared = vocab["src"] == vocab["tgt"]
    # OpenNMT-py adds the special tokens a file lacks (a Marian vocabulary has no <s> or
    # <blank>) and counts them in the size: room for them, so none of the teacher's is cut
    specials = {DefaultTokens.UNK, DefaultTokens.PAD, DefaultTokens.BOS, DefaultTokens.EOS}
    options = {"share_vocab": shared, "tgt_vocab": config["src_vocab"] if shared else
               config["tgt_vocab"], "src_vocab_size": len(set(vocab["src"]) | specials),
               "tgt_vocab_size": len(set(vocab["tgt"]) | specials), "vocab_size_multiple": 1,
               "src_words_min_frequency": 0, "tgt_words_min_frequency": 0}
    config = {**config, **options}
    for side in ("src", "tgt"):
        with atomic_output(config[f"{side}_vocab"]) as temporary, \
                open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(f"{token}\t1\n" for token in vocab[side])
    probe = os.path.join(os.path.dirname(config["src_vocab"]), "teacher_vocab_probe.yaml")
    with open(probe, "w") as handle:
        yaml.safe_dump(config, handle)
    try:
        rebuilt = configured_vocabs(parse(train_parser(), ["-config", probe]))
        if same_order:
            check_same_vocabs(vocab, rebuilt, "data stage", remedy="the teacher's vocabulary "
                              "uses special tokens the recipe cannot reproduce; train the "
                              "teacher with the defaults")
        for side in ("src", "tgt"):
            lost = set(vocab[side]) - set(rebuilt[side])
            if lost:
                raise ValueError(f"{len(lost)} of the teacher's {side} tokens ('{min(lost)}'"
                                 "...) are not in the vocabulary OpenNMT-py rebuilds from them")
    except ValueError as exc:
        raise RecipeError(f"teacher_model {teacher_model}: {exc}") from None
    finally:
        os.remove(probe)
    return options


def data_config(work):
    """What ``prepare_data`` wrote: OpenNMT-py's data options plus RECIPE_ONLY_KEYS."""
    with open(os.path.join(work, "data_config.yaml")) as handle:
        return yaml.safe_load(handle)


def pooled_test_set(test_sets, folder):
    """The one test corpus every model translates: the test sets concatenated in
    order (pooled BLEU is sacrebleu's corpus BLEU over it), or the only set."""
    if len(test_sets) == 1:
        return next(iter(test_sets.values()))
    pooled = {}
    for side in ("src", "tgt"):
        pooled[side] = os.path.join(folder, f"test_pooled.{side}")
        with atomic_output(pooled[side]) as temporary, \
                open(temporary, "w", encoding="utf-8") as out:
            for files in test_sets.values():
                with open(files[side], encoding="utf-8", newline="\n") as handle:
                    out.writelines(line.rstrip("\n") + "\n" for line in handle)
    return pooled


def ordered_test_sets(entries):
    """data_config.yaml's list of test sets as name -> {src, tgt}, in pooling order."""
    return {entry["name"]: {"src": entry["src"], "tgt": entry["tgt"]} for entry in entries}


def test_sets(work, dataset):
    """Test set name -> {src, tgt} of ``dataset`` (a Dataset), in the order of the
    pooled test corpus."""
    config = data_config(work)
    if "test_sets" not in config:  # prepared before per-set evaluation: one set
        return {dataset.test_name: config["test"]}
    if isinstance(config["test_sets"], dict):
        # written by onmt_qd before the list: YAML sorted the names, the pooled corpus
        # follows the dataset's order (its main test set first)
        order = [dataset.test_name, *dataset.more_test_sets]
        return {n: config["test_sets"][n] for n in order if n in config["test_sets"]}
    return ordered_test_sets(config["test_sets"])


def subset(files, sizes, folder):
    """Copies in ``folder`` of the first ``sizes[split]`` lines of each split's files."""
    out = {}
    os.makedirs(folder, exist_ok=True)
    for split, paths in files.items():
        n = sizes.get(split)
        out[split] = tuple(os.path.join(folder, os.path.basename(p)) for p in paths)
        for src, dst in zip(paths, out[split]):
            with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
                for i, line in enumerate(fin):
                    if n is not None and i >= n:
                        break
                    fout.write(line)
    return out


def filter_pairs(source, translations, scores, kept_files, worst, length_ratio):
    """Write the (source, translation) pairs the filters keep to ``kept_files``: not
    among the ``worst`` share by score (the teacher's log-probability per token), and,
    with ``length_ratio``, a translation of at most that many times the source's words
    and at least 1/that (an empty one for a non-empty source is dropped). Blank pairs
    pass (OpenNMT-py skips them). Returns what was kept and dropped, for the log."""
    with open(source, encoding="utf-8", newline="\n") as handle:
        sources = handle.readlines()
    with open(translations, encoding="utf-8", newline="\n") as handle:
        targets = handle.readlines()
    with open(scores, encoding="utf-8") as handle:
        values = [float(line) for line in handle]
    if not len(sources) == len(targets) == len(values):
        raise RecipeError(f"{translations} and its scores do not have one line per line of "
                          f"{source}: translate again")
    scored = [i for i, line in enumerate(sources) if line.strip()]
    cut = sorted(scored, key=lambda i: values[i])[:int(len(scored) * worst)]
    by_score = set(cut)
    by_length = set()
    if length_ratio:
        for i in scored:
            words = len(sources[i].split()), len(targets[i].split())
            if not 1 / length_ratio <= words[1] / words[0] <= length_ratio:
                by_length.add(i)
    kept = [i for i in range(len(sources)) if i not in by_score | by_length]
    for path, lines in zip(kept_files, (sources, targets)):
        with atomic_output(path) as temporary, \
                open(temporary, "w", encoding="utf-8", newline="\n") as out:
            out.writelines(lines[i] for i in kept)
    return (f"kept {len(kept):,} of {len(sources):,} pairs (dropped {len(by_score):,} by "
            f"score, {len(by_length - by_score):,} more by length ratio)")


def drop_unreadable_tokens(vocab_path):
    """OpenNMT-py writes tokens that are Unicode whitespace (a no-break space in
    WMT-derived text) into its vocabulary but cannot read them back; they become <unk>."""
    with open(vocab_path, encoding="utf-8") as handle:
        lines = handle.readlines()
    kept = [line for line in lines if len(line.split(None, 1)) == 2]
    if len(kept) != len(lines):
        with atomic_output(vocab_path) as temporary, \
                open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(kept)
