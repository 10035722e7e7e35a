"""WMT datasets: training text from WMT's tar archives, test sets from sacrebleu.

sacrebleu ships the WMT test sets (``sacrebleu -t wmt13 -l de-en --echo src``): it
downloads them into its own cache ($SACREBLEU, default ~/.sacrebleu), checks their MD5
sums and reads WMT's SGML; we copy its plain source and reference files. It does not
ship training data, so the training archives are read here."""
import contextlib
import dataclasses
import logging
import logging.handlers
import os
import shutil

from onmt_qd.datasets.base import Dataset, DatasetError
from onmt_qd.datasets.download import download, open_tar


@dataclasses.dataclass(frozen=True, kw_only=True)
class WMTDataset(Dataset):
    """``train.SRC``/``train.TGT`` are the ``STEM.LANG`` members named by
    ``train_members`` (in that order) of the tar ``archives`` under ``base_url``;
    ``sacrebleu_test_sets`` maps a file stem of the folder (newstest2013) to the
    sacrebleu test set written as ``STEM.SRC``/``STEM.TGT`` (wmt13)."""
    base_url: str
    archives: tuple
    train_members: tuple
    sacrebleu_test_sets: dict

    def fetch(self, dest, tmp):
        members = {}  # basename -> (archive, member), over all archives
        for name in self.archives:
            url = self.base_url + name
            path = os.path.join(tmp, name)
            download(url, path)
            archive = open_tar(path, url)
            members.update({os.path.basename(m.name): (archive, m)
                            for m in archive.getmembers() if m.isfile()})
        for lang in (self.src, self.tgt):
            with open(os.path.join(dest, f"train.{lang}"), "wb") as out:
                for stem in self.train_members:
                    if f"{stem}.{lang}" not in members:
                        raise DatasetError(f"{self.name}: {stem}.{lang} not found in "
                                           f"{', '.join(self.archives)}")
                    archive, member = members[f"{stem}.{lang}"]
                    append_lines(archive.extractfile(member), out)
        for stem, test_set in self.sacrebleu_test_sets.items():
            src, ref = sacrebleu_pair(test_set, f"{self.src}-{self.tgt}")
            shutil.copyfile(src, os.path.join(dest, f"{stem}.{self.src}"))
            shutil.copyfile(ref, os.path.join(dest, f"{stem}.{self.tgt}"))


def append_lines(handle, out):
    """Copy ``handle``'s bytes to ``out``, ending with a newline so that the next
    member starts a line of its own."""
    last = b"\n"
    for block in iter(lambda: handle.read(1 << 20), b""):
        out.write(block)
        last = block[-1:]
    if last != b"\n":
        out.write(b"\n")


def sacrebleu_pair(test_set, langpair):
    """(source file, reference file) of sacrebleu's ``test_set``, fetched by sacrebleu."""
    from sacrebleu.dataset import DATASETS

    dataset = DATASETS[test_set]
    with sacrebleu_errors() as errors:
        try:
            return dataset.get_source_file(langpair), dataset.get_reference_files(langpair)[0]
        except FileNotFoundError as exc:  # sacrebleu skips a cached tarball, even a refused one
            raise DatasetError(f"sacrebleu's cache lacks {exc.filename} (an earlier download "
                               f"failed): delete the folder {test_set} in sacrebleu's cache "
                               "($SACREBLEU, default ~/.sacrebleu) and retry") from None
        except OSError as exc:
            raise DatasetError(f"download of test set {test_set} by sacrebleu failed ({exc}): "
                               "check the connection, or copy from a mirror with -from DIR"
                               ) from None
        except SystemExit:  # what sacrebleu does on a wrong MD5 sum, after logging it
            raise DatasetError(f"sacrebleu could not fetch test set {test_set}: "
                               + " ".join(record.getMessage() for record in errors)) from None


@contextlib.contextmanager
def sacrebleu_errors():
    """Collect sacrebleu's logged errors instead of printing them, so that our error
    says them in one line."""
    logger = logging.getLogger("sacrebleu")
    handler = logging.handlers.BufferingHandler(capacity=1000)
    handler.setLevel(logging.ERROR)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
