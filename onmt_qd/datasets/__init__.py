"""Datasets: where they come from, how they are verified, and their file layout.

One class per format (base.py: what all share; plain.py: plain or gzipped files;
wmt.py: WMT archives with sacrebleu's test sets; local.py: a user's folder of
parallel files), the datasets by name in registry.py, SentencePiece training in
subwords.py. The functions below are what the rest of
onmt_qd calls, by dataset name."""
import os

from onmt_qd.datasets.base import Dataset, DatasetError, count_lines
from onmt_qd.datasets.download import download
from onmt_qd.datasets.local import LocalFolderDataset
from onmt_qd.datasets.registry import DATASETS, dataset, register_dataset
from onmt_qd.datasets.subwords import train_sentencepiece

__all__ = ["DATASETS", "Dataset", "DatasetError", "LocalFolderDataset", "count_lines", "dataset",
           "download", "get", "register_dataset", "sentencepiece", "split_files", "test_sets",
           "train_sentencepiece"]


def get(name, dest, mirror=None):
    """Fetch dataset ``name`` into ``dest``; returns the source used."""
    return dataset(name).get(dest, mirror)


def split_files(name, folder):
    """split -> (source path, target path) of a prepared dataset folder."""
    return dataset(name).split_files(folder)


def test_sets(name, folder):
    """Test set name -> (source path, target path) of a prepared folder."""
    return dataset(name).test_sets(folder)


def sentencepiece(name, folder, vocab_size=8000, model_type="unigram"):
    """Train the joint SentencePiece model of dataset ``name``, fetched into ``folder``,
    on its training corpus; returns the model's path (FOLDER/spmVOCAB_SIZE.model)."""
    src, tgt = split_files(name, folder)["train"]
    for path in (src, tgt):
        if not os.path.isfile(path):
            raise ValueError(f"{path} does not exist: fetch the dataset first with "
                             f"onmt_qd_data get {name} -dest {folder}")
    return train_sentencepiece([src, tgt], os.path.join(folder, f"spm{vocab_size}"),
                               vocab_size, model_type)
