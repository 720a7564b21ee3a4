"""Image folders in S3-compatible object storage: ``s3://bucket/photos`` read as a local folder would be; and
shards kept there (``data.cache_dir s3://bucket/cache``) for every machine to stream.

``S3Folder`` answers what ``ImageFolderDataModule`` asks of a local ``Path`` (``/``, ``is_dir``, ``iterdir``,
``name``) from one listing of the bucket under its prefix, made when the folder is first used; ``files`` and
``signature`` stand in for ``os.scandir`` and ``os.stat``. ``open_image`` reads one object. Credentials, region
and endpoint come from boto3's usual places (``AWS_*`` environment variables, ``~/.aws``); an S3-compatible
store (MinIO, Ceph, R2) is named by ``AWS_ENDPOINT_URL``.
"""

import io
import os
from pathlib import Path
from typing import BinaryIO

from project.errors import UsageError

SCHEME = "s3://"


def is_remote(path: str) -> bool:
    return str(path).startswith(SCHEME)


class S3Folder:
    """A "folder" of an S3 bucket: the objects whose keys start with its prefix and a slash."""

    def __init__(self, url: str, listing: dict[str, tuple[int, str]] | None = None) -> None:
        self.url = url.rstrip("/")
        self._listing = listing
        self._children: dict[str, dict[str, tuple[int, str]]] | None = None

    @property
    def listing(self) -> dict[str, tuple[int, str]]:
        """Every object under this folder: key relative to it -> (size, ETag). Listed once, on first use."""
        if self._listing is None:
            self._listing = _list_objects(self.url)
        return self._listing

    def __truediv__(self, name: str) -> "S3Folder":
        if self._children is None:  # grouped once, in one pass: a bucket may hold millions of images
            self._children = {}
            for key, value in self.listing.items():
                child, _, rest = key.partition("/")
                if rest:
                    self._children.setdefault(child, {})[rest] = value
        return S3Folder(f"{self.url}/{name}", self._children.get(name, {}))

    def __str__(self) -> str:
        return self.url

    __fspath__ = __str__

    def __repr__(self) -> str:
        return f"S3Folder({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Folder) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def resolve(self) -> "S3Folder":
        return self

    def is_dir(self) -> bool:
        return bool(self.listing)

    def iterdir(self) -> list["S3Folder"]:
        """The subfolders (objects are not listed: the image folder asks only for its class folders)."""
        return [self / name for name in sorted({key.split("/", 1)[0] for key in self.listing if "/" in key})]

    def files(self) -> list[tuple[str, str]]:
        """``(name, url)`` of the objects directly in this folder."""
        return [(key, f"{self.url}/{key}") for key in self.listing if "/" not in key]

    def signature(self, url: str) -> tuple[int, str]:
        """An object's size and ETag: what changes when it is replaced (as a file's size and mtime)."""
        return self.listing[url[len(self.url) + 1 :]]


def _client():
    # One client per process: a client made before a fork is not safe to use in the child.
    global _CLIENT
    if _CLIENT is None or _CLIENT[0] != os.getpid():
        try:
            import boto3
        except ImportError:
            raise UsageError("an s3:// data root needs boto3: pip install boto3") from None
        _CLIENT = (os.getpid(), boto3.client("s3"))
    return _CLIENT[1]


_CLIENT = None


def _bucket_and_key(url: str) -> tuple[str, str]:
    bucket, _, key = url[len(SCHEME) :].partition("/")
    return bucket, key


def _list_objects(url: str) -> dict[str, tuple[int, str]]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _bucket_and_key(url)
    prefix = f"{prefix}/" if prefix else ""
    listing = {}
    try:
        for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                listing[entry["Key"][len(prefix) :]] = (entry["Size"], entry["ETag"].strip('"'))
    except (BotoCoreError, ClientError) as err:  # no credentials, no such bucket, no connection, access denied
        raise UsageError(f"cannot list {url}: {err}") from None
    return listing


def open_image(url: str) -> BinaryIO:
    """The object at ``url``, read whole, as a file for PIL."""
    return io.BytesIO(read(url))


def read(url: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_and_key(url)
    try:
        return _client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as err:
        raise OSError(f"cannot read {url}: {err}") from None


def exists(url: str) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_and_key(url)
    try:
        _client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise UsageError(f"cannot read {url}: {err}") from None
    except BotoCoreError as err:
        raise UsageError(f"cannot read {url}: {err}") from None


def upload_folder(folder: Path, url: str, last: str) -> None:
    """Every file of ``folder`` to ``url/<name>``, the one named ``last`` after all others: a reader that finds it
    finds the rest."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _bucket_and_key(url)
    files = sorted(folder.iterdir(), key=lambda file: file.name == last)
    try:
        for file in files:
            _client().upload_file(str(file), bucket, f"{prefix}/{file.name}")
    except (BotoCoreError, ClientError) as err:
        raise OSError(f"cannot write {url}: {err}") from None
