"""The download path of onmt_qd_data, against a local HTTP server that serves stand-in
files in the public sources' layout (gzip for Multi30K, tar archives with plain text for
WMT13's training data, sacrebleu's SGML test set archives for its test sets)."""
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import tarfile
import threading

import pytest

from onmt_qd import datasets


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def add_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_multi30k_download_gunzips_and_verifies(server, tmp_path, monkeypatch):
    root, url = server
    multi30k = datasets.DATASETS["multi30k"]
    for name, remote in multi30k.files.items():  # every test set, not one
        with gzip.open(root / remote, "wt") as handle:
            handle.write(f"{name} one\n{name} two\n".replace(".", " "))
    monkeypatch.setitem(datasets.DATASETS, "multi30k", dataclasses.replace(multi30k, base_url=url))
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)
    assert datasets.get("multi30k", str(tmp_path / "m")) == "download"
    assert (tmp_path / "m" / "val.en").read_text() == "val en one\nval en two\n"
    assert "sha256" in (tmp_path / "m" / "MANIFEST.json").read_text()
    assert list(datasets.test_sets("multi30k", str(tmp_path / "m"))) == [
        "test_2016_flickr", "test_2017_flickr", "test_2018_flickr", "test_2017_mscoco"]


SGM = ('<srcset setid="newstest2013"><doc docid="1">\n<seg id="1"> Hallo Welt </seg>\n'
       '<seg id="2">Zweiter Satz</seg>\n</doc></srcset>\n')
SGM_EN = SGM.replace("Hallo Welt", "Hello world").replace("Zweiter Satz", "Second sentence")


@pytest.fixture
def sacrebleu_sets(server, tmp_path, monkeypatch):
    """sacrebleu's wmt12 and wmt13 test sets served by the local server, in sacrebleu's
    archive layout with their MD5 sums, and sacrebleu's cache in tmp_path: sacrebleu's
    own download, checksum and SGML code runs."""
    from sacrebleu.dataset import DATASETS as SACREBLEU_DATASETS, base
    from sacrebleu.dataset.fake_sgml import FakeSGMLDataset

    root, url = server
    monkeypatch.setattr(base, "SACREBLEU_DIR", str(tmp_path / "sacrebleu"))
    md5 = {}
    for test_set, year in (("wmt12", 2012), ("wmt13", 2013)):
        add_tar(root / f"{test_set}.tgz", {f"test/newstest{year}-src.de.sgm": SGM,
                                           f"test/newstest{year}-src.en.sgm": SGM_EN})
        md5[test_set] = hashlib.md5((root / f"{test_set}.tgz").read_bytes()).hexdigest()
        monkeypatch.setitem(SACREBLEU_DATASETS, test_set, FakeSGMLDataset(
            test_set, data=[url + f"{test_set}.tgz"], md5=[md5[test_set]],
            langpairs=SACREBLEU_DATASETS[test_set].langpairs))
    return SACREBLEU_DATASETS, md5


def serve_wmt13_training(server, monkeypatch):
    root, url = server
    pairs = {"europarl-v7.de-en": 3, "commoncrawl.de-en": 2, "news-commentary-v8.de-en": 1}
    for stem, n in pairs.items():
        add_tar(root / f"{stem}.tgz", {f"training/{stem}.{lang}": "".join(
            f"{stem} {lang} {i}\n" for i in range(n)) for lang in ("de", "en")})
    wmt13 = dataclasses.replace(datasets.DATASETS["wmt13"], base_url=url,
                                archives=tuple(f"{stem}.tgz" for stem in pairs))
    monkeypatch.setitem(datasets.DATASETS, "wmt13", wmt13)
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)


def test_wmt13_download_reads_plain_text_and_sgml(server, sacrebleu_sets, tmp_path, monkeypatch):
    serve_wmt13_training(server, monkeypatch)
    datasets.get("wmt13", str(tmp_path / "w"))
    assert len((tmp_path / "w" / "train.de").read_text().splitlines()) == 6
    assert (tmp_path / "w" / "newstest2013.de").read_text() == "Hallo Welt\nZweiter Satz\n"
    assert (tmp_path / "w" / "newstest2013.en").read_text() == "Hello world\nSecond sentence\n"
    assert (tmp_path / "w" / "newstest2012.en").read_text() == "Hello world\nSecond sentence\n"


def test_wmt13_test_set_with_a_wrong_md5_is_refused(server, sacrebleu_sets, tmp_path,
                                                    monkeypatch):
    sacrebleu_datasets, md5 = sacrebleu_sets
    monkeypatch.setattr(sacrebleu_datasets["wmt13"], "md5", ["0" * 32])
    serve_wmt13_training(server, monkeypatch)
    with pytest.raises(datasets.DatasetError, match=r"wmt13: .*MD5 sum .*incorrect.*delete"):
        datasets.get("wmt13", str(tmp_path / "w"))
    assert os.listdir(tmp_path / "w") == []
    # sacrebleu keeps the refused archive and would not fetch it again: say what to delete
    monkeypatch.setattr(sacrebleu_datasets["wmt13"], "md5", [md5["wmt13"]])
    with pytest.raises(datasets.DatasetError, match=r"delete the folder wmt13 in sacrebleu's"):
        datasets.get("wmt13", str(tmp_path / "w"))


def test_wmt13_test_set_that_cannot_be_downloaded_says_what_to_do(server, sacrebleu_sets,
                                                                   tmp_path, monkeypatch):
    sacrebleu_datasets, _ = sacrebleu_sets
    monkeypatch.setattr(sacrebleu_datasets["wmt12"], "data", [server[1] + "missing.tgz"])
    serve_wmt13_training(server, monkeypatch)
    with pytest.raises(datasets.DatasetError,
                       match="download of test set wmt12 by sacrebleu failed .*-from DIR"):
        datasets.get("wmt13", str(tmp_path / "w"))


def test_failed_download_says_what_to_do(server, tmp_path, monkeypatch):
    _, url = server  # serves nothing
    monkeypatch.setitem(datasets.DATASETS, "onmt-integ",
                        dataclasses.replace(datasets.DATASETS["onmt-integ"], base_url=url))
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)
    with pytest.raises(datasets.DatasetError, match="download of .* failed .*-from DIR"):
        datasets.get("onmt-integ", str(tmp_path / "o"))
    assert not any(p.name.endswith(".txt") for p in (tmp_path / "o").iterdir())


@dataclasses.dataclass(frozen=True, kw_only=True)
class TSVDataset(datasets.Dataset):
    """A new format: one tab-separated file per split, source and target columns."""
    base_url: str

    def fetch(self, dest, tmp):
        for split, (src, tgt) in self.splits.items():
            tsv = os.path.join(tmp, f"{split}.tsv")
            datasets.download(self.base_url + f"{split}.tsv", tsv)
            with open(tsv, encoding="utf-8") as rows, \
                    open(os.path.join(dest, src), "w", encoding="utf-8") as out_src, \
                    open(os.path.join(dest, tgt), "w", encoding="utf-8") as out_tgt:
                for row in rows:
                    source, target = row.rstrip("\n").split("\t")
                    out_src.write(source + "\n")
                    out_tgt.write(target + "\n")


@pytest.fixture
def registry_restored():
    known = dict(datasets.DATASETS)
    yield
    datasets.DATASETS.clear()
    datasets.DATASETS.update(known)


def test_a_new_format_is_one_subclass_and_one_registration(server, tmp_path, monkeypatch,
                                                            registry_restored):
    root, url = server
    for split, n in (("train", 3), ("valid", 2), ("test", 2)):
        (root / f"{split}.tsv").write_text("".join(f"{split} de {i}\t{split} en {i}\n"
                                                   for i in range(n)))
    datasets.register_dataset(TSVDataset(
        name="tiny-tsv", src="de", tgt="en", test_name="tiny_test", base_url=url,
        splits={s: (f"{s}.de", f"{s}.en") for s in ("train", "valid", "test")}))
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)
    assert datasets.get("tiny-tsv", str(tmp_path / "t")) == "download"
    assert (tmp_path / "t" / "test.en").read_text() == "test en 0\ntest en 1\n"
    assert datasets.test_sets("tiny-tsv", str(tmp_path / "t")) == {
        "tiny_test": (str(tmp_path / "t" / "test.de"), str(tmp_path / "t" / "test.en"))}
    assert '"lines": 3' in (tmp_path / "t" / "MANIFEST.json").read_text()
    # a folder it fetched is a mirror for the next machine
    assert datasets.get("tiny-tsv", str(tmp_path / "copy"), str(tmp_path / "t")) == str(
        tmp_path / "t")
    (root / "test.tsv").write_text("")  # verified like every dataset
    with pytest.raises(datasets.DatasetError, match=r"test\.de is missing or empty"):
        datasets.get("tiny-tsv", str(tmp_path / "t2"))
