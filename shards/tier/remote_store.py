"""Object storage for tiered storage: the contract, and its one implementation on obstore.

Any thread of a shard actor may call a store (obstore releases the GIL during
I/O and its client is thread-safe); no call may be made in a process forked
after obstore was used (its runtime's threads do not survive a fork(): the
benchmark in loadtest/tier_store_bench.py shows the child hang). Shards are
Ray actors, which Ray starts as fresh processes, so nothing forks.

The contract (``RemoteStore``) is what the layers above use, and all they may
assume:

- ``put`` writes an object atomically: a reader sees the whole object or none
  (a large object goes up as a multipart upload, which becomes visible only
  when completed). ``put(..., if_absent=True)`` fails with
  RemoteObjectExistsError if the object exists, on stores that can check
  atomically (S3, GCS, Azure, memory, and local files); ``supports_if_absent``
  says whether this one can.
- ``get`` reads a whole object, ``get_range`` a byte range of one; ``head``
  its size; ``list`` the objects under a prefix, sorted by key; ``delete`` one
  (deleting an absent object is not an error: deletes are retried).
- Every call to a cloud store is bounded in time (plinth/limits.py,
  REMOTE_*): a store that is down, slow or answering 5xx gives
  RemoteStorageUnavailableError, a retriable error, within the timeout and the
  client's bounded retries, never a hang. (A file:// store is as bounded as
  the file system under it: a hung network mount hangs its calls.)
  A missing object gives RemoteObjectNotFoundError, refused credentials
  RemoteAccessDeniedError; both are permanent. Every message names the store's
  URL and the object's key.
- A ``file://`` store's root directory is never created here: it is made by
  whoever sets the store up (or is a share's mount). ``open_remote_store``
  refuses a root that does not exist (InvalidConfigError naming the path),
  unless ``missing_root_ok`` (a shard: the server checked at start). A root
  that is missing later (moved, a share unmounted) makes every call fail with
  RemoteStorageUnavailableError, retriable as an S3 outage, until it is back:
  a put never recreates it (obstore's local store creates missing parent
  directories, the root too, so the root is checked before and after each
  call; a root removed in the microseconds between the check and a put's own
  mkdir is not caught), a listing never answers "empty" and a delete never
  answers "already gone" for it. A missing object under a root that is there is
  RemoteObjectNotFoundError, as before. Point the URL at a directory inside a
  share, not at its mount point: an unmounted mount point is an empty
  directory that exists.

A URL may carry secrets (``user:password@`` or a query such as an Azure SAS
token): ``redacted_url`` (plinth/redacted_urls.py) masks them, and every message,
log line and ``repr`` uses it (``RemoteStore.url`` is the masked form); only obstore
sees the URL as given.

Keys are relative to the store's URL (``s3://bucket/prefix`` puts key ``a/b``
at ``s3://bucket/prefix/a/b``), "/"-separated, without a leading "/".

URLs: ``s3://bucket[/prefix]``, ``gs://bucket[/prefix]``, ``az://container[/prefix]``
(also the other forms obstore's ``from_url`` reads), ``file:///absolute/path``,
and ``memory://`` (one in-process store per instance, for unit tests).
Credentials come from each cloud's standard environment (AWS_ACCESS_KEY_ID,
AWS_ENDPOINT_URL, AWS_REGION, ...; GOOGLE_SERVICE_ACCOUNT...; AZURE_STORAGE_...),
as obstore reads them. Plain http (a local S3 such as moto or MinIO) is
allowed only where the endpoint asks for it (AWS_ALLOW_HTTP=true, or an
``http://`` endpoint given as AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import abc
import functools
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse, urlsplit

import obstore
from obstore import exceptions as obstore_errors
from obstore.store import from_url

from plinth import limits
from plinth.errors import (
    InvalidConfigError, RemoteAccessDeniedError, RemoteObjectExistsError,
    RemoteObjectNotFoundError, RemoteStorageError, RemoteStorageUnavailableError)
from plinth.redacted_urls import redacted_url   # re-exported: the tier's callers use it here

__all__ = ["ObjectInfo", "ObstoreRemoteStore", "RemoteStore", "open_remote_store",
           "redacted_url", "store_identity"]

CLOUD_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl")


class ObjectInfo(NamedTuple):
    """One object of a listing, or what ``head`` says of one."""

    key: str          # relative to the store's URL
    size_bytes: int


def store_identity(url: str) -> str:
    """Which store and prefix ``url`` names: its scheme (lower case), host (a bucket or
    container) and path, without a user, password, query, fragment or trailing "/"
    (any thread). Two URLs that differ only in credentials (a rotated SAS token) name
    the same store. Safe to write to disk and to show. Raises InvalidConfigError for
    a URL that cannot be parsed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidConfigError(f"tier URL {redacted_url(url)!r} cannot be parsed") from None
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme.lower()}://{host}{parts.path.rstrip('/')}"


class RemoteStore(abc.ABC):
    """The object-store contract (module docstring). Any thread, every method."""

    url: str   # masked (redacted_url): for messages

    @property
    @abc.abstractmethod
    def supports_if_absent(self) -> bool:
        """Whether ``put(..., if_absent=True)`` is atomic on this store."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes | memoryview | Path, *, if_absent: bool = False) -> None:
        """Write the object whole (a Path: that file's bytes, uploaded in parts if large).

        Raises RemoteObjectExistsError with ``if_absent`` if the object exists."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes | memoryview:
        """``length`` bytes from ``start``; fewer only where the object ends. A
        read-only bytes-like object (a memoryview of the client's buffer: not copied)."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """The object's size; RemoteObjectNotFoundError if there is none."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; an absent one is not an error."""


def open_remote_store(url: str, *, request_timeout_s: float = limits.REMOTE_REQUEST_TIMEOUT_S,
                      connect_timeout_s: float = limits.REMOTE_CONNECT_TIMEOUT_S,
                      retries_max: int = limits.REMOTE_RETRIES_MAX,
                      retry_timeout_s: float = limits.REMOTE_RETRY_TIMEOUT_S,
                      missing_root_ok: bool = False) -> RemoteStore:
    """The store at ``url`` (module docstring). Raises InvalidConfigError for a URL
    it cannot use, and for a ``file://`` URL whose directory does not exist unless
    ``missing_root_ok`` (its calls then fail as unavailable until it does). No
    cloud store is contacted yet: a wrong bucket shows on the first call."""
    return ObstoreRemoteStore(url, request_timeout_s=request_timeout_s,
                              connect_timeout_s=connect_timeout_s, retries_max=retries_max,
                              retry_timeout_s=retry_timeout_s, missing_root_ok=missing_root_ok)


class ObstoreRemoteStore(RemoteStore):
    """A RemoteStore on obstore (the Rust object_store crate). Any thread."""

    def __init__(self, url: str, *, request_timeout_s: float, connect_timeout_s: float,
                 retries_max: int, retry_timeout_s: float, missing_root_ok: bool = False):
        self.url = redacted_url(url)
        scheme = urlparse(url).scheme
        options: dict = {}
        self._root: Path | None = None   # a file:// store's directory
        if scheme in CLOUD_SCHEMES:
            options["client_options"] = {
                "timeout": timedelta(seconds=request_timeout_s),
                "connect_timeout": timedelta(seconds=connect_timeout_s),
                "allow_http": _http_allowed()}
            options["retry_config"] = {
                "max_retries": retries_max, "retry_timeout": timedelta(seconds=retry_timeout_s),
                "backoff": {"init_backoff": timedelta(milliseconds=100),
                            "max_backoff": timedelta(seconds=2), "base": 2}}
        elif scheme == "file":
            if urlparse(url).netloc:   # file://data/tier: "data" would be a host
                raise InvalidConfigError(f"tier URL {self.url!r}: a file URL takes an absolute "
                                         f"path, with three slashes: file:///absolute/path")
            self._root = Path(unquote(urlsplit(url).path))
            if not missing_root_ok and not self._root.is_dir():
                raise InvalidConfigError(
                    f"tier URL {self.url!r}: the directory {self._root} does not exist (or is "
                    f"not a directory): create it, or mount the share it is on. Plinth never "
                    f"creates a file:// store's directory, so that segments never land under "
                    f"a share that is not mounted")
        elif scheme != "memory":   # memory: the unit tests' store; the server refuses it
            raise InvalidConfigError(f"tier URL {self.url!r}: scheme {scheme!r} is not one of "
                                     f"{', '.join(CLOUD_SCHEMES)}, file")
        # obstore's local store needs its root to exist when it is made: one whose root
        # is missing (missing_root_ok) is made by the first call that finds it there.
        self._open_store = functools.partial(_open_obstore, url, self.url, options)
        self._store_lock = threading.Lock()
        self._store = None
        if self._root is None or self._root.is_dir():
            self._store = self._open_store()

    def _client(self):
        """The obstore store (any thread; within ``_mapped_errors``, which checked that
        a file:// store's root exists)."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._open_store()
        return self._store

    @property
    def supports_if_absent(self) -> bool:
        return True   # S3 (If-None-Match), GCS, Azure, local files and memory all do

    def put(self, key: str, data: bytes | memoryview | Path, *, if_absent: bool = False) -> None:
        mode = "create" if if_absent else "overwrite"
        with self._mapped_errors("put", key):
            if isinstance(data, Path):
                obstore.put(self._client(), key, data, mode=mode,
                            chunk_size=limits.REMOTE_UPLOAD_PART_BYTES,
                            max_concurrency=limits.REMOTE_UPLOAD_PARTS_IN_FLIGHT_MAX)
            else:
                obstore.put(self._client(), key, data, mode=mode, use_multipart=False)

    def get(self, key: str) -> bytes:
        with self._mapped_errors("get", key):
            return obstore.get(self._client(), key).bytes().to_bytes()

    def get_range(self, key: str, start: int, length: int) -> memoryview:
        if start < 0 or length <= 0:
            raise AssertionError(f"range of {length} bytes at {start} of {key}: both must be "
                                 f"positive")
        with self._mapped_errors(f"get bytes [{start}, {start + length}) of", key):
            # obstore's Bytes holds the Rust buffer; a view of it is a copy saved.
            return memoryview(obstore.get_range(self._client(), key, start=start, length=length))

    def head(self, key: str) -> ObjectInfo:
        with self._mapped_errors("head", key):
            meta = obstore.head(self._client(), key)
        return ObjectInfo(meta["path"], meta["size"])

    def list(self, prefix: str) -> list[ObjectInfo]:
        with self._mapped_errors("list", prefix + "*"):
            found = [ObjectInfo(meta["path"], meta["size"])
                     for chunk in obstore.list(self._client(), prefix, chunk_size=1000)
                     for meta in chunk]
        return sorted(found)

    def delete(self, key: str) -> None:
        try:
            with self._mapped_errors("delete", key):
                obstore.delete(self._client(), key)
        except RemoteObjectNotFoundError:
            pass   # local stores say so; S3 does not: a delete is idempotent

    @contextmanager
    def _mapped_errors(self, action: str, key: str) -> Iterator[None]:
        """obstore's errors as Plinth's typed ones, naming the URL and key. A file://
        store's root is checked before and after the call: a call made while it was
        missing fails as unavailable (module docstring), whatever obstore answered."""
        what = f"{action} {self.url.rstrip('/')}/{key}"
        try:
            self._check_root(what)
            yield
            self._check_root(what)   # a listing of a missing root is empty, not an error
        except RemoteStorageUnavailableError:
            raise
        except Exception as error:
            self._check_root(what)   # "no such object" because there is no root at all?
            raise _mapped_error(error, what) from error

    def _check_root(self, what: str) -> None:
        """RemoteStorageUnavailableError if this is a file:// store whose root directory
        is not there (any thread)."""
        if self._root is not None and not self._root.is_dir():
            raise RemoteStorageUnavailableError(
                f"object storage unavailable: {what}: the store's directory {self._root} does "
                f"not exist (moved away, or a share not mounted?); nothing is read from or "
                f"written to it until it is back")

    def __repr__(self) -> str:
        return f"ObstoreRemoteStore({self.url!r})"


def _open_obstore(url: str, shown: str, options: dict):
    """obstore's store for ``url``; InvalidConfigError naming ``shown`` (the masked URL)
    if obstore refuses it."""
    try:
        return from_url(url, **options)
    except Exception as error:   # obstore raises its own types and ValueError
        # Its text may quote the URL as given: never repeat the secrets in it.
        detail = _first_line(error).replace(url, shown)
        raise InvalidConfigError(f"tier URL {shown!r}: {detail}") from None


def _http_allowed() -> bool:
    """Plain http only where the environment asks for it (a local S3 in tests)."""
    if os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true":
        return True
    return os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://")


def _mapped_error(error: Exception, what: str) -> Exception:
    """The typed error for an obstore (or timeout/OS) error raised while doing ``what``."""
    detail = f"{what}: {type(error).__name__}: {_first_line(error)}"
    if "NoSuchBucket" in str(error):
        # S3 says so only at the end of a long message, which the log line cut off.
        return RemoteObjectNotFoundError(
            f"no such bucket: {what}: the store answered NoSuchBucket; create the bucket or "
            f"correct --tier-url")
    if isinstance(error, (obstore_errors.NotFoundError, FileNotFoundError)):
        return RemoteObjectNotFoundError(f"no such object: {detail}")
    if isinstance(error, (obstore_errors.AlreadyExistsError, obstore_errors.PreconditionError)):
        return RemoteObjectExistsError(f"object exists: {detail}")
    if isinstance(error, (obstore_errors.PermissionDeniedError,
                          obstore_errors.UnauthenticatedError, PermissionError)):
        return RemoteAccessDeniedError(f"access denied: {detail}")
    if isinstance(error, (obstore_errors.InvalidPathError, obstore_errors.NotSupportedError,
                          obstore_errors.UnknownConfigurationKeyError)):
        return RemoteStorageError(f"refused: {detail}")
    status = _http_status(error)
    if status == 404:
        return RemoteObjectNotFoundError(f"no such object or bucket: {detail}")
    if status in (401, 403):
        return RemoteAccessDeniedError(f"access denied: {detail}")
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return RemoteStorageError(f"refused (HTTP {status}): {detail}")
    # The rest are the network's, a timeout, throttling, or a 5xx after the retries.
    return RemoteStorageUnavailableError(f"object storage unavailable: {detail}")


_HTTP_STATUS = re.compile(r"status code: (\d{3})")


def _http_status(error: Exception) -> int | None:
    """The HTTP status an obstore GenericError reports in its text (a listing of a
    missing bucket is one), or None."""
    found = _HTTP_STATUS.search(str(error))
    return int(found.group(1)) if found else None


def _first_line(error: Exception) -> str:
    """obstore's messages run over many lines (a Rust error chain); keep them short."""
    text = " ".join(str(error).split()).split(" Debug source:")[0]
    return text if len(text) <= 500 else text[:500] + "..."
