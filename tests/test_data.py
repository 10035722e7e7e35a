import subprocess
import sys

import pytest

from conftest import MULTI30K, needs_multi30k


def data_cli(*args):
    return subprocess.run([sys.executable, "-m", "onmt_qd.bin.data", *map(str, args)],
                          capture_output=True, text=True)


@needs_multi30k
def test_get_from_mirror_copies_and_records_checksums(tmp_path):
    result = data_cli("get", "multi30k", "-dest", tmp_path / "m", "-from", MULTI30K)
    assert result.returncode == 0, result.stderr
    for name in ("train.de", "train.en", "val.de", "val.en", "test_2016_flickr.de"):
        assert (tmp_path / "m" / name).read_bytes() == open(f"{MULTI30K}/{name}", "rb").read()
    manifest = (tmp_path / "m" / "MANIFEST.json").read_text()
    assert '"lines": 29000' in manifest and "sha256" in manifest


def test_bad_mirror_fails_clearly_and_writes_nothing(tmp_path):
    result = data_cli("get", "multi30k", "-dest", tmp_path / "m", "-from", tmp_path / "nowhere")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()
    assert len(line) == 1 and "does not exist" in line[0] and "-from" in line[0]
    assert not (tmp_path / "m").exists()  # not even an empty folder


def test_mirror_missing_a_file_is_named(tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train.de").write_text("x\n")
    result = data_cli("get", "multi30k", "-dest", tmp_path / "m", "-from", partial)
    assert result.returncode == 2 and "lacks" in result.stderr


def test_unknown_dataset(tmp_path):
    result = data_cli("get", "nosuch", "-dest", tmp_path / "m")
    assert result.returncode == 2 and "unknown dataset 'nosuch'" in result.stderr


def test_non_parallel_mirror_is_rejected(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("train", "val", "test_2016_flickr"):
        (mirror / f"{name}.de").write_text("a\nb\n")
        (mirror / f"{name}.en").write_text("a\n")
    result = data_cli("get", "multi30k", "-dest", tmp_path / "m", "-from", mirror)
    assert result.returncode == 2 and "not parallel" in result.stderr


def test_mirror_copies_every_further_test_set_it_has(tmp_path):
    from onmt_qd import datasets

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("train", "val", "test_2016_flickr", "test_2017_mscoco"):
        for lang in ("de", "en"):
            (mirror / f"{name}.{lang}").write_text(f"{name} {lang}\n")
    datasets.get("multi30k", str(tmp_path / "m"), str(mirror))
    assert list(datasets.test_sets("multi30k", str(tmp_path / "m"))) == [
        "test_2016_flickr", "test_2017_mscoco"]
    assert "test_2017_mscoco.en" in (tmp_path / "m" / "MANIFEST.json").read_text()
    (mirror / "test_2018_flickr.de").write_text("one side only\n")
    with pytest.raises(datasets.DatasetError, match=r"test_2018_flickr\.en is missing"):
        datasets.get("multi30k", str(tmp_path / "m2"), str(mirror))
