"""The object-store contract, on memory://, file:// and moto's S3 (a real S3 API on 127.0.0.1)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from plinth.errors import (
    InvalidConfigError, RemoteObjectExistsError, RemoteObjectNotFoundError,
    RemoteStorageUnavailableError)
from plinth.shards.tier.remote_store import (ObjectInfo, open_remote_store, redacted_url,
                                             store_identity)
from tests.moto_s3 import MotoS3

MiB = 1024 * 1024


def test_an_object_put_is_read_back_whole_and_by_range(store):
    # Given an object of 1,000 distinct bytes
    data = bytes(range(250)) * 4
    store.put("t/0/a.log", data)
    # Then it reads back whole, by range, and by size
    assert store.get("t/0/a.log") == data
    assert store.get_range("t/0/a.log", 100, 50) == data[100:150]
    assert store.get_range("t/0/a.log", 990, 50) == data[990:]   # the object ends first
    assert store.head("t/0/a.log") == ObjectInfo("t/0/a.log", 1000)


def test_a_file_is_uploaded_in_parts_and_reads_back_byte_for_byte(store, tmp_path):
    # Given a file of 25 MiB: three parts of REMOTE_UPLOAD_PART_BYTES (10 MiB)
    source = tmp_path / "source"
    source.write_bytes(os.urandom(25 * MiB))
    store.put("t/0/big.log", source)
    assert store.get("t/0/big.log") == source.read_bytes()
    assert store.get_range("t/0/big.log", 20 * MiB + 7, 4096) == \
        source.read_bytes()[20 * MiB + 7:20 * MiB + 7 + 4096]


def test_a_listing_gives_the_objects_under_a_prefix_sorted(store):
    for key in ("t/1/b", "t/1/a", "t/10/c", "u/1/d"):
        store.put(key, key.encode())
    assert store.list("t/1/") == [ObjectInfo("t/1/a", 5), ObjectInfo("t/1/b", 5)]
    assert [info.key for info in store.list("t/")] == ["t/1/a", "t/1/b", "t/10/c"]
    assert store.list("v/") == []


def test_a_deleted_object_is_gone_and_deleting_it_again_is_no_error(store):
    store.put("t/0/x", b"x")
    store.delete("t/0/x")
    store.delete("t/0/x")
    assert store.list("t/0/") == []
    with pytest.raises(RemoteObjectNotFoundError, match="t/0/x"):
        store.get("t/0/x")


def test_a_conditional_put_refuses_an_existing_object_and_leaves_it_unchanged(store):
    assert store.supports_if_absent
    store.put("t/0/m", b"first", if_absent=True)
    with pytest.raises(RemoteObjectExistsError, match="t/0/m"):
        store.put("t/0/m", b"second", if_absent=True)
    assert store.get("t/0/m") == b"first"


def test_a_conditional_put_of_a_file_in_parts_refuses_an_existing_object(store, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(os.urandom(12 * MiB))
    store.put("t/0/big", source, if_absent=True)
    with pytest.raises(RemoteObjectExistsError, match="t/0/big"):
        store.put("t/0/big", source, if_absent=True)


def test_a_missing_object_is_a_permanent_error_naming_the_url_and_key(store):
    with pytest.raises(RemoteObjectNotFoundError) as raised:
        store.get_range("t/0/none", 0, 10)
    assert "t/0/none" in raised.value.message and store.url.rstrip("/") in raised.value.message
    with pytest.raises(RemoteObjectNotFoundError):
        store.head("t/0/none")


def test_a_missing_bucket_is_a_permanent_error_for_every_call(moto_s3, monkeypatch):
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    store = open_remote_store("s3://no-such-bucket/p")
    for call in (lambda: store.list("t/"), lambda: store.get("t/a"),
                 lambda: store.put("t/a", b"a")):
        # saying it is the bucket, at the start of the message (the log cut it off at
        # the end of a long line, and an upload said "no such object")
        with pytest.raises(RemoteObjectNotFoundError,
                           match=r"^no such bucket: .*no-such-bucket.*create the bucket"):
            call()


def test_an_unknown_scheme_is_a_config_error_listing_the_schemes_a_server_takes():
    with pytest.raises(InvalidConfigError) as refused:
        open_remote_store("ftp://example/x")
    assert "scheme 'ftp' is not one of s3" in str(refused.value)
    assert "memory" not in str(refused.value)   # the server refuses memory:// anyway


def test_a_file_url_with_a_relative_path_says_to_give_an_absolute_one():
    # file://data/tier names a host "data"; obstore said only "Unable to recognise URL"
    with pytest.raises(InvalidConfigError, match="a file URL takes an absolute path, with "
                                                 "three slashes: file:///absolute/path"):
        open_remote_store("file://data/tier")


@pytest.mark.parametrize("url, shown", [
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("s3://", "s3://"),
    ("file:///var/plinth/tier", "file:///var/plinth/tier"),
    ("s3://AKIAXXXX:s3cr3t@bucket/prefix", "s3://***@bucket/prefix"),
    ("az://container/p?sv=2024&sig=s3cr3t", "az://container/p?***"),
    ("gs://user@bucket/p#s3cr3t", "gs://***@bucket/p"),
    ("s3:/user:s3cr3t@bucket", "s3:/***@bucket"),   # malformed: masked all the same
    ("s3://bucket/a@b", "s3://bucket/a@b"),         # an "@" in the path is no password
])
def test_a_url_is_shown_without_its_user_password_query_or_fragment(url, shown):
    assert redacted_url(url) == shown


@pytest.mark.parametrize("url, identity", [
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
    ("S3://bucket", "s3://bucket"),
    ("file:///var/plinth/tier/", "file:///var/plinth/tier"),
    ("s3://AKIAXXXX:s3cr3t@bucket/prefix", "s3://bucket/prefix"),
    ("az://container/p?sv=2024&sig=s3cr3t", "az://container/p"),
    ("gs://user@bucket/p#s3cr3t", "gs://bucket/p"),
    ("s3://bucket/a@b", "s3://bucket/a@b"),
])
def test_a_store_is_identified_by_scheme_bucket_and_prefix_without_secrets_or_options(
        url, identity):
    assert store_identity(url) == identity


def test_urls_differing_only_in_credentials_name_one_store_and_other_prefixes_do_not():
    assert store_identity("az://c/p?sig=old") == store_identity("az://c/p?sig=rotated")
    assert store_identity("s3://bucket/a") != store_identity("s3://bucket/b")
    assert store_identity("s3://bucket/a") != store_identity("gs://bucket/a")


def test_a_store_and_its_errors_never_show_the_secrets_its_url_carries():
    # Given a URL with a password and a token in its query / When a store is opened on it
    store = open_remote_store("s3://user:s3cr3t@bucket/p?token=s3cr3t")
    # Then neither its url nor its repr shows them
    assert "s3cr3t" not in store.url and "s3cr3t" not in repr(store)
    # And a URL that obstore refuses is refused without them either
    with pytest.raises(InvalidConfigError) as raised:
        open_remote_store("az://user:s3cr3t@container/p?sig=s3cr3t")
    assert "s3cr3t" not in str(raised.value) and "az://***@container/p?***" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_stopped_s3_server_gives_a_retriable_error_within_the_timeout(monkeypatch):
    # Given a store on a moto server of its own, with short timeouts and retries
    server = MotoS3().start()
    store = server.store(monkeypatch, request_timeout_s=2, connect_timeout_s=1, retries_max=2,
                         retry_timeout_s=3)
    store.put("t/0/a", b"a")
    # When the server stops
    server.stop()
    # Then every call fails as "unavailable", naming the object, within the bounds
    for call in (lambda: store.get("t/0/a"), lambda: store.put("t/0/b", b"b"),
                 lambda: store.list("t/"), lambda: store.get_range("t/0/a", 0, 1)):
        started = time.monotonic()
        with pytest.raises(RemoteStorageUnavailableError, match="/t/"):
            call()
        assert time.monotonic() - started < 10


def test_a_file_store_keeps_objects_as_files_under_its_path(tmp_path):
    store = open_remote_store(f"file://{tmp_path}/store")
    store.put("t/0/a.log", b"abc")
    assert Path(tmp_path, "store", "t", "0", "a.log").read_bytes() == b"abc"


def test_a_file_store_whose_directory_does_not_exist_is_refused_naming_it(tmp_path):
    # Given a file:// URL of a directory nobody created (a share not mounted)
    root = tmp_path / "share" / "plinth"
    # When it is opened, Then it is refused, naming the directory, and nothing is created
    with pytest.raises(InvalidConfigError, match=rf"the directory {root} does not exist "
                                                 rf"\(or is not a directory\): create it"):
        open_remote_store(f"file://{root}")
    assert not (tmp_path / "share").exists()


def test_a_shard_opens_a_file_store_whose_directory_is_missing_and_waits_for_it(tmp_path):
    # Given a shard's store (missing_root_ok) whose directory is not there yet
    root = tmp_path / "share"
    store = open_remote_store(f"file://{root}", missing_root_ok=True)
    # Then every call is retriable, and the put creates nothing
    with pytest.raises(RemoteStorageUnavailableError, match=f"directory {root} does not exist"):
        store.put("t/0/a.log", b"abc")
    assert not root.exists()
    # And once the directory is there, the store works
    root.mkdir()
    store.put("t/0/a.log", b"abc")
    assert store.get("t/0/a.log") == b"abc"


def test_a_file_store_whose_directory_vanished_is_unavailable_for_every_call(tmp_path):
    # Given a file:// store holding one object, whose directory is then moved away
    # (as a network share that is unmounted)
    root = tmp_path / "share"
    root.mkdir()
    store = open_remote_store(f"file://{root}")
    store.put("t/0/a.log", b"abc")
    root.rename(tmp_path / "moved")
    # Then every call is the retriable "unavailable" naming the directory, not "no such
    # object", not an empty listing, not a delete that found nothing to delete
    calls = {"get": lambda: store.get("t/0/a.log"),
             "get_range": lambda: store.get_range("t/0/a.log", 0, 2),
             "head": lambda: store.head("t/0/a.log"),
             "list": lambda: store.list("t/0/"),
             "delete": lambda: store.delete("t/0/a.log"),
             "put": lambda: store.put("t/0/b.log", b"def"),
             "put a file": lambda: store.put("t/0/c.log", tmp_path / "moved" / "t/0/a.log")}
    for name, call in calls.items():
        with pytest.raises(RemoteStorageUnavailableError,
                           match=f"directory {root} does not exist"):
            call()
    # And nothing recreated the directory: the store is not split in two
    assert not root.exists()
    # And once it is back, every call works, and a truly missing object is still
    # "no such object"
    (tmp_path / "moved").rename(root)
    assert store.get("t/0/a.log") == b"abc"
    assert store.list("t/0/") == [ObjectInfo("t/0/a.log", 3)]
    with pytest.raises(RemoteObjectNotFoundError, match="no such object"):
        store.get("t/0/missing.log")
