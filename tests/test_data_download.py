"""The download path of onmt_qd_data, against a local HTTP server that serves stand-in
files in the public sources' layout (gzip for Multi30K, tar archives with plain text and
SGML for WMT13)."""
import functools
import gzip
import http.server
import io
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
    for name in datasets.DATASETS["multi30k"]["downloads"]:  # every test set, not one
        with gzip.open(root / f"{name}.gz", "wt") as handle:
            handle.write(f"{name} one\n{name} two\n".replace(".", " "))
    spec = dict(datasets.DATASETS["multi30k"])
    spec["downloads"] = {name: url + u.rsplit("/", 1)[1] for name, u in spec["downloads"].items()}
    monkeypatch.setitem(datasets.DATASETS, "multi30k", spec)
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)
    assert datasets.get("multi30k", str(tmp_path / "m")) == "download"
    assert (tmp_path / "m" / "val.en").read_text() == "val en one\nval en two\n"
    assert "sha256" in (tmp_path / "m" / "MANIFEST.json").read_text()
    assert list(datasets.test_sets("multi30k", str(tmp_path / "m"))) == [
        "test_2016_flickr", "test_2017_flickr", "test_2018_flickr", "test_2017_mscoco"]


def test_wmt13_download_reads_plain_text_and_sgml(server, tmp_path, monkeypatch):
    root, url = server
    pairs = {"europarl-v7.de-en": 3, "commoncrawl.de-en": 2, "news-commentary-v8.de-en": 1}
    for stem, n in pairs.items():
        add_tar(root / f"{stem}.tgz", {f"training/{stem}.{lang}": "".join(
            f"{stem} {lang} {i}\n" for i in range(n)) for lang in ("de", "en")})
    sgm = ('<srcset setid="newstest2012"><doc docid="1">\n<seg id="1"> Hallo Welt </seg>\n'
           '<seg id="2">Zweiter Satz</seg>\n</doc></srcset>\n')
    add_tar(root / "dev12.tgz", {"dev/newstest2012.de": "Hallo Welt\nZweiter Satz\n",
                                 "dev/newstest2012.en": "Hello world\nSecond sentence\n"})
    add_tar(root / "dev13.tgz", {"dev/newstest2013-src.de.sgm": sgm,
                                 "dev/newstest2013-ref.en.sgm": sgm.replace("Hallo Welt", "Hello world")
                                 .replace("Zweiter Satz", "Second sentence")})
    spec = dict(datasets.DATASETS["wmt13"])
    spec["archives"] = {"train": [url + f"{stem}.tgz" for stem in pairs],
                        "newstest2012": [url + "dev12.tgz"], "newstest2013": [url + "dev13.tgz"]}
    monkeypatch.setitem(datasets.DATASETS, "wmt13", spec)
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)
    datasets.get("wmt13", str(tmp_path / "w"))
    assert len((tmp_path / "w" / "train.de").read_text().splitlines()) == 6
    assert (tmp_path / "w" / "newstest2013.de").read_text() == "Hallo Welt\nZweiter Satz\n"
    assert (tmp_path / "w" / "newstest2013.en").read_text() == "Hello world\nSecond sentence\n"


def test_failed_download_says_what_to_do(server, tmp_path, monkeypatch):
    _, url = server
    spec = dict(datasets.DATASETS["onmt-integ"])
    spec["downloads"] = {name: url + "missing.txt" for name in spec["downloads"]}
    monkeypatch.setitem(datasets.DATASETS, "onmt-integ", spec)
    monkeypatch.delenv("ONMT_QD_DATA_MIRROR", raising=False)
    with pytest.raises(datasets.DatasetError, match="download of .* failed .*-from DIR"):
        datasets.get("onmt-integ", str(tmp_path / "o"))
    assert not any(p.name.endswith(".txt") for p in (tmp_path / "o").iterdir())
