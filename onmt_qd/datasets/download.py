"""HTTP downloads and the unpacking of what arrives, each failure one DatasetError
that says what to do."""
import gzip
import shutil
import tarfile
import urllib.request

from onmt_qd.datasets.base import DatasetError


def download(url, path):
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        raise DatasetError(f"download of {url} failed ({exc}): check the connection, or "
                           "copy from a mirror with -from DIR") from None


def gunzip(path, out_path, url):
    """Decompress the gzip file ``path`` (downloaded from ``url``) into ``out_path``."""
    try:
        with gzip.open(path, "rb") as src, open(out_path, "wb") as out:
            shutil.copyfileobj(src, out)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{url} is not a valid gzip file ({exc})") from None


def open_tar(path, url):
    try:
        return tarfile.open(path)
    except tarfile.TarError as exc:
        raise DatasetError(f"{url} is not a valid tar archive ({exc})") from None
