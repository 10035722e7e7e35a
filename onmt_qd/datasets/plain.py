"""Datasets published as plain text files, one per split and language, each as it is or
gzipped (Multi30K, OpenNMT-py's test data)."""
import dataclasses
import os
import shutil

from onmt_qd.datasets.base import Dataset
from onmt_qd.datasets.download import download, gunzip


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlainTextDataset(Dataset):
    """``files`` maps each file of the prepared folder to its name under ``base_url``;
    a name ending in .gz is decompressed."""
    base_url: str
    files: dict

    def fetch(self, dest, tmp):
        for filename, remote in self.files.items():
            url = self.base_url + remote
            fetched = os.path.join(tmp, os.path.basename(remote))
            download(url, fetched)
            if remote.endswith(".gz"):
                gunzip(fetched, os.path.join(dest, filename), url)
            else:
                shutil.move(fetched, os.path.join(dest, filename))
