"""The datasets by name: ``register_dataset`` adds one, ``dataset`` finds one."""
from onmt_qd.datasets.base import DatasetError
from onmt_qd.datasets.plain import PlainTextDataset
from onmt_qd.datasets.wmt import WMTDataset
from onmt_qd.registry import Registry

DATASETS = Registry("dataset", error=DatasetError,
                    unknown="unknown {kind} '{name}'; known: {choices}")
register_dataset = DATASETS.register  # a name taken is an error
dataset = DATASETS.lookup


MULTI30K_TEST_SETS = ("test_2017_flickr", "test_2018_flickr", "test_2017_mscoco")
register_dataset(PlainTextDataset(
    name="multi30k", src="de", tgt="en",
    splits={"train": ("train.de", "train.en"), "valid": ("val.de", "val.en"),
            "test": ("test_2016_flickr.de", "test_2016_flickr.en")},
    test_name="test_2016_flickr",
    more_test_sets={s: (f"{s}.de", f"{s}.en") for s in MULTI30K_TEST_SETS},
    base_url="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/",
    files={f"{s}.{lang}": f"{s}.{lang}.gz"
           for s in ("train", "val", "test_2016_flickr", *MULTI30K_TEST_SETS)
           for lang in ("de", "en")}))

register_dataset(PlainTextDataset(
    name="onmt-integ", src="en", tgt="de",
    splits={"train": ("src-train.txt", "tgt-train.txt"),
            "valid": ("src-val.txt", "tgt-val.txt")},
    base_url="https://raw.githubusercontent.com/OpenNMT/OpenNMT-py/master/data/",
    files={f"{side}-{s}.txt": f"{side}-{s}.txt"
           for side in ("src", "tgt") for s in ("train", "val")}))

register_dataset(PlainTextDataset(
    name="integ200k", src="de", tgt="en",
    splits={"train": ("de-train-clean.200K.txt", "en-train-clean.200K.txt"),
            "valid": ("de-val-clean.10K.txt", "en-val-clean.10K.txt"),
            "test": ("de-val-clean.10K.txt", "en-val-clean.10K.txt")},
    test_name="val-clean.10K",
    base_url="https://raw.githubusercontent.com/OpenNMT/IntegrationTesting/master/data/",
    files={f"{lang}-{s}.txt": f"{lang}-{s}.txt"
           for lang in ("de", "en") for s in ("train-clean.200K", "val-clean.10K")}))

register_dataset(WMTDataset(
    name="wmt13", src="de", tgt="en",
    splits={"train": ("train.de", "train.en"),
            "valid": ("newstest2012.de", "newstest2012.en"),
            "test": ("newstest2013.de", "newstest2013.en")},
    test_name="newstest2013",
    base_url="http://www.statmt.org/wmt13/",
    archives=("training-parallel-europarl-v7.tgz", "training-parallel-commoncrawl.tgz",
              "training-parallel-nc-v8.tgz"),
    train_members=("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v8.de-en"),
    sacrebleu_test_sets={"newstest2012": "wmt12", "newstest2013": "wmt13"}))
