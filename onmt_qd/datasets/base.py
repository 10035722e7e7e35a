"""What every dataset has, whatever its format: splits and test sets as pairs of plain
text files in one folder, their checks, a manifest, and the copy from a local mirror.

A format is a subclass that says how to ``fetch`` the files from the public source
(plain.py: files as they are or gzipped; wmt.py: WMT archives, test sets by sacrebleu);
``Dataset.get`` does the rest the same way for all."""
import abc
import dataclasses
import json
import os
import shutil
import tempfile

from onmt_qd.fileio import sha256


class DatasetError(ValueError):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dataset(abc.ABC):
    """A parallel corpus in a prepared folder. ``splits`` maps train/valid (and test,
    when there are references) to (source file, target file); ``test_name`` names the
    test split's set; ``more_test_sets`` are further test sets, fetched when available
    (a mirror may lack them), never required."""
    name: str
    src: str
    tgt: str
    splits: dict
    test_name: str = None
    more_test_sets: dict = dataclasses.field(default_factory=dict)

    @abc.abstractmethod
    def fetch(self, dest, tmp):
        """Download the required files (and the further test sets) into ``dest``,
        with ``tmp`` for anything else; a failure raises DatasetError."""

    def split_files(self, folder):
        """split -> (source path, target path) in ``folder``."""
        return {split: tuple(os.path.join(folder, f) for f in files)
                for split, files in self.splits.items()}

    def required_files(self):
        return sorted({f for files in self.splits.values() for f in files})

    def further_test_files(self):
        return sorted({f for files in self.more_test_sets.values() for f in files})

    def test_sets(self, folder):
        """Test set name -> (source path, target path) in ``folder``: the main test set
        first, then every further one that was fetched."""
        if "test" not in self.splits:
            return {}
        sets = {self.test_name: self.split_files(folder)["test"]}
        for set_name, files in self.more_test_sets.items():
            paths = tuple(os.path.join(folder, f) for f in files)
            if any(os.path.isfile(p) for p in paths):
                sets[set_name] = paths
        return sets

    def fetched_files(self, folder):
        return self.required_files() + [f for f in self.further_test_files()
                                        if os.path.isfile(os.path.join(folder, f))]

    def verify(self, folder):
        """Every split and fetched test set present, non-empty, and parallel (same line
        counts)."""
        for split, (src, tgt) in {**self.split_files(folder), **self.test_sets(folder)}.items():
            for path in (src, tgt):
                if not os.path.isfile(path) or os.path.getsize(path) == 0:
                    raise DatasetError(f"{self.name}: {path} is missing or empty")
            n_src, n_tgt = count_lines(src), count_lines(tgt)
            if n_src != n_tgt:
                raise DatasetError(f"{self.name}: {split} is not parallel "
                                   f"({os.path.basename(src)} {n_src} lines, "
                                   f"{os.path.basename(tgt)} {n_tgt} lines)")

    def write_manifest(self, folder, source):
        """MANIFEST.json: SHA-256 and line count of each file, so later copies can be
        compared."""
        files = {f: {"sha256": sha256(os.path.join(folder, f)),
                     "lines": count_lines(os.path.join(folder, f))}
                 for f in self.fetched_files(folder)}
        with open(os.path.join(folder, "MANIFEST.json"), "w") as handle:
            json.dump({"dataset": self.name, "source": source, "files": files}, handle, indent=1)

    def copy_from_mirror(self, mirror, dest):
        missing = [f for f in self.required_files()
                   if not os.path.isfile(os.path.join(mirror, f))]
        if not os.path.isdir(mirror) or missing:
            what = "does not exist" if not os.path.isdir(mirror) else f"lacks {missing[0]}"
            raise DatasetError(f"mirror {mirror} for dataset {self.name} {what}: point -from "
                               "(or $ONMT_QD_DATA_MIRROR) at a folder holding the dataset's "
                               "files, or omit it on a connected machine to download")
        for f in self.fetched_files(mirror):
            shutil.copyfile(os.path.join(mirror, f), os.path.join(dest, f))

    def get(self, dest, mirror=None):
        """Fetch into ``dest`` from ``mirror`` (default $ONMT_QD_DATA_MIRROR/NAME when
        set), else from the public source; the files are verified and given a manifest
        in a staging folder and only then moved into ``dest``. Returns the source used."""
        if mirror is None and os.environ.get("ONMT_QD_DATA_MIRROR"):
            mirror = os.path.join(os.environ["ONMT_QD_DATA_MIRROR"], self.name)
        os.makedirs(dest, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            staged = os.path.join(tmp, "staged")
            os.makedirs(staged)
            if mirror is not None:
                self.copy_from_mirror(mirror, staged)
                source = os.path.abspath(mirror)
            else:
                self.fetch(staged, tmp)
                source = "download"
            self.verify(staged)
            self.write_manifest(staged, source)
            for f in os.listdir(staged):
                os.replace(os.path.join(staged, f), os.path.join(dest, f))
        return source


def count_lines(path):
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)

