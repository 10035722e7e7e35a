"""Datasets: where they come from, how they are verified, and their file layout.

``get`` copies from a local mirror when one is given (``-from`` or
$ONMT_QD_DATA_MIRROR/NAME), else downloads from the public source, checks what
arrived (gzip/tar integrity, parallel line counts) and records SHA-256 sums in
``MANIFEST.json`` so later copies can be compared."""
import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request

MULTI30K = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
ONMT = "https://raw.githubusercontent.com/OpenNMT/OpenNMT-py/master/data/"
INTEG = "https://raw.githubusercontent.com/OpenNMT/IntegrationTesting/master/data/"
WMT13 = "http://www.statmt.org/wmt13/"

# splits: name -> (source file, target file) in the prepared folder.
DATASETS = {
    "multi30k": {
        "src": "de", "tgt": "en", "raw_text": True,
        "splits": {"train": ("train.de", "train.en"), "valid": ("val.de", "val.en"),
                   "test": ("test_2016_flickr.de", "test_2016_flickr.en")},
        "test_name": "test_2016_flickr",
        # evaluated too when present; a mirror may lack them, a download fetches them all
        "more_test_sets": {s: (f"{s}.de", f"{s}.en")
                           for s in ("test_2017_flickr", "test_2018_flickr", "test_2017_mscoco")},
        "downloads": {f"{s}.{l}": MULTI30K + f"{s}.{l}.gz"
                      for s in ("train", "val", "test_2016_flickr", "test_2017_flickr",
                                "test_2018_flickr", "test_2017_mscoco") for l in ("de", "en")},
    },
    "onmt-integ": {
        "src": "en", "tgt": "de", "raw_text": False,
        "splits": {"train": ("src-train.txt", "tgt-train.txt"),
                   "valid": ("src-val.txt", "tgt-val.txt")},
        "downloads": {f"{side}-{s}.txt": ONMT + f"{side}-{s}.txt"
                      for side in ("src", "tgt") for s in ("train", "val")},
    },
    "integ200k": {
        "src": "de", "tgt": "en", "raw_text": False,
        "splits": {"train": ("de-train-clean.200K.txt", "en-train-clean.200K.txt"),
                   "valid": ("de-val-clean.10K.txt", "en-val-clean.10K.txt"),
                   "test": ("de-val-clean.10K.txt", "en-val-clean.10K.txt")},
        "test_name": "val-clean.10K",
        "downloads": {f"{l}-{s}.txt": INTEG + f"{l}-{s}.txt"
                      for l in ("de", "en") for s in ("train-clean.200K", "val-clean.10K")},
    },
    "wmt13": {
        "src": "de", "tgt": "en", "raw_text": True,
        "splits": {"train": ("train.de", "train.en"),
                   "valid": ("newstest2012.de", "newstest2012.en"),
                   "test": ("newstest2013.de", "newstest2013.en")},
        "test_name": "newstest2013",
        "archives": {
            "train": [WMT13 + "training-parallel-europarl-v7.tgz",
                      WMT13 + "training-parallel-commoncrawl.tgz",
                      WMT13 + "training-parallel-nc-v8.tgz"],
            "newstest2012": [WMT13 + "dev.tgz"],
            "newstest2013": ["http://www.statmt.org/wmt14/dev.tgz"],
        },
        # members of the archives that make up train.{de,en}
        "train_members": ["europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v8.de-en"],
    },
}


class DatasetError(ValueError):
    pass


def dataset(name):
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def split_files(name, folder):
    """split -> (source path, target path) of a prepared dataset folder."""
    return {split: tuple(os.path.join(folder, f) for f in files)
            for split, files in dataset(name)["splits"].items()}


def required_files(name):
    return sorted({f for files in dataset(name)["splits"].values() for f in files})


def further_test_files(name):
    """Files of the test sets beyond the main one: fetched when available, never required."""
    return sorted({f for files in dataset(name).get("more_test_sets", {}).values() for f in files})


def test_sets(name, folder):
    """Test set name -> (source path, target path) of a prepared folder: the main test
    set first, then every further one that was fetched."""
    spec = dataset(name)
    if "test" not in spec["splits"]:
        return {}
    sets = {spec["test_name"]: split_files(name, folder)["test"]}
    for set_name, files in spec.get("more_test_sets", {}).items():
        paths = tuple(os.path.join(folder, f) for f in files)
        if any(os.path.isfile(p) for p in paths):
            sets[set_name] = paths
    return sets


def fetched_files(name, folder):
    return required_files(name) + [f for f in further_test_files(name)
                                   if os.path.isfile(os.path.join(folder, f))]


def count_lines(path):
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def verify(name, folder):
    """Every split and fetched test set present, non-empty, and parallel (same line counts)."""
    for split, (src, tgt) in {**split_files(name, folder), **test_sets(name, folder)}.items():
        for path in (src, tgt):
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                raise DatasetError(f"{name}: {path} is missing or empty")
        n_src, n_tgt = count_lines(src), count_lines(tgt)
        if n_src != n_tgt:
            raise DatasetError(f"{name}: {split} is not parallel "
                               f"({os.path.basename(src)} {n_src} lines, "
                               f"{os.path.basename(tgt)} {n_tgt} lines)")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(name, folder, source):
    files = {f: {"sha256": sha256(os.path.join(folder, f)),
                 "lines": count_lines(os.path.join(folder, f))} for f in fetched_files(name, folder)}
    with open(os.path.join(folder, "MANIFEST.json"), "w") as handle:
        json.dump({"dataset": name, "source": source, "files": files}, handle, indent=1)


def copy_from_mirror(name, mirror, dest):
    missing = [f for f in required_files(name) if not os.path.isfile(os.path.join(mirror, f))]
    if not os.path.isdir(mirror) or missing:
        what = "does not exist" if not os.path.isdir(mirror) else f"lacks {missing[0]}"
        raise DatasetError(f"mirror {mirror} for dataset {name} {what}: point -from (or "
                           "$ONMT_QD_DATA_MIRROR) at a folder holding the dataset's files, "
                           "or omit it on a connected machine to download")
    for f in fetched_files(name, mirror):
        shutil.copyfile(os.path.join(mirror, f), os.path.join(dest, f))


def download(url, path):
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        raise DatasetError(f"download of {url} failed ({exc}): check the connection, or "
                           "copy from a mirror with -from DIR") from None


def download_files(spec, dest, tmp):
    for filename, url in spec["downloads"].items():
        fetched = os.path.join(tmp, os.path.basename(url))
        download(url, fetched)
        if url.endswith(".gz"):
            try:
                with gzip.open(fetched, "rb") as src, open(os.path.join(dest, filename), "wb") as out:
                    shutil.copyfileobj(src, out)
            except (OSError, EOFError) as exc:
                raise DatasetError(f"{url} is not a valid gzip file ({exc})") from None
        else:
            shutil.move(fetched, os.path.join(dest, filename))


def sgml_to_text(lines):
    """Segments of a WMT .sgm file, one per line."""
    return [re.sub(r"<seg[^>]*>\s*(.*?)\s*</seg>.*", r"\1", line).strip()
            for line in lines if line.lstrip().startswith("<seg")]


def read_member(archive, stem, lang):
    """Lines of ``stem.lang`` (plain text) or ``stem-src/ref.lang.sgm`` in an archive."""
    for member in archive.getmembers():
        base = os.path.basename(member.name)
        if base == f"{stem}.{lang}":
            return archive.extractfile(member).read().decode("utf-8").splitlines()
    for member in archive.getmembers():
        base = os.path.basename(member.name)
        if base.startswith(stem) and base.endswith(f".{lang}.sgm"):
            return sgml_to_text(archive.extractfile(member).read().decode("utf-8").splitlines())
    return None


def download_wmt13(spec, dest, tmp):
    archives = {}
    for urls in spec["archives"].values():
        for url in urls:
            path = os.path.join(tmp, url.replace("/", "_"))
            if url not in archives:
                download(url, path)
                try:
                    archives[url] = tarfile.open(path)
                except tarfile.TarError as exc:
                    raise DatasetError(f"{url} is not a valid tar archive ({exc})") from None
    for lang in (spec["src"], spec["tgt"]):
        with open(os.path.join(dest, f"train.{lang}"), "w", encoding="utf-8") as out:
            for stem in spec["train_members"]:
                lines = next(filter(None, (read_member(archives[u], stem, lang)
                                           for u in spec["archives"]["train"])), None)
                if lines is None:
                    raise DatasetError(f"wmt13: {stem}.{lang} not found in the archives")
                out.write("\n".join(lines) + "\n")
        for test_set in ("newstest2012", "newstest2013"):
            lines = read_member(archives[spec["archives"][test_set][0]], test_set, lang)
            if lines is None:
                raise DatasetError(f"wmt13: {test_set}.{lang} not found in the archives")
            with open(os.path.join(dest, f"{test_set}.{lang}"), "w", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")


def get(name, dest, mirror=None):
    """Fetch dataset ``name`` into ``dest``; returns the source used."""
    spec = dataset(name)
    if mirror is None and os.environ.get("ONMT_QD_DATA_MIRROR"):
        mirror = os.path.join(os.environ["ONMT_QD_DATA_MIRROR"], name)
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        staged = os.path.join(tmp, "staged")
        os.makedirs(staged)
        if mirror is not None:
            copy_from_mirror(name, mirror, staged)
            source = os.path.abspath(mirror)
        else:
            if "archives" in spec:
                download_wmt13(spec, staged, tmp)
            else:
                download_files(spec, staged, tmp)
            source = "download"
        verify(name, staged)
        write_manifest(name, staged, source)
        for f in os.listdir(staged):
            os.replace(os.path.join(staged, f), os.path.join(dest, f))
    return source


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
