"""A user's own corpus: a folder of plain parallel text files, raw or pre-tokenized,
nothing to download (a recipe file of the user's names it; docs/architecture.md)."""
import dataclasses
import os

from onmt_qd.datasets.base import Dataset, DatasetError

SPLITS = ("train", "valid")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalFolderDataset(Dataset):
    """``folder`` holds train.SRC/train.TGT, valid.SRC/valid.TGT and one or more test
    sets NAME.SRC/NAME.TGT (every other pair of files): the first test set by name is
    the main one, the others are further test sets."""
    folder: str

    @classmethod
    def from_folder(cls, folder, src, tgt):
        """The dataset in ``folder`` with languages ``src`` and ``tgt``; a folder
        without train, valid or any test pair is refused in one line."""
        if not os.path.isdir(folder):
            raise DatasetError(f"dataset folder {folder} does not exist: point the recipe's "
                               "dataset.folder at a folder of parallel files")
        if src == tgt:
            raise DatasetError(f"dataset.src and dataset.tgt are both '{src}': name the two "
                               "languages' file suffixes")
        files = set(os.listdir(folder))
        for split in SPLITS:
            for lang in (src, tgt):
                if f"{split}.{lang}" not in files:
                    raise DatasetError(f"dataset folder {folder} has no {split}.{lang}: it needs "
                                       f"train.{src}/train.{tgt}, valid.{src}/valid.{tgt} and "
                                       f"one or more test sets NAME.{src}/NAME.{tgt}")
        tests = sorted(name[:-len(src) - 1] for name in files
                       if name.endswith(f".{src}") and name[:-len(src) - 1] not in SPLITS
                       and f"{name[:-len(src) - 1]}.{tgt}" in files)
        if not tests:
            raise DatasetError(f"dataset folder {folder} has no test set: add a pair of files "
                               f"NAME.{src} and NAME.{tgt} (for example test.{src}, test.{tgt})")
        pair = {name: (f"{name}.{src}", f"{name}.{tgt}") for name in (*SPLITS, *tests)}
        return cls(name=os.path.basename(os.path.normpath(folder)), src=src, tgt=tgt,
                   splits={"train": pair["train"], "valid": pair["valid"], "test": pair[tests[0]]},
                   test_name=tests[0], more_test_sets={n: pair[n] for n in tests[1:]},
                   folder=os.path.abspath(folder))

    def fetch(self, dest, tmp):
        self.copy_from_mirror(self.folder, dest)

    def get(self, dest, mirror=None):
        """Copied from the user's folder (never from a workplace mirror), checked."""
        return super().get(dest, mirror=self.folder)
