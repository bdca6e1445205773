"""A partition directory's topic id (shards/partition_metadata.py): written whole and read
back; no file, or one that is not one, says no id (the latter logged); a disk that
refuses the write is a StorageError naming the file."""

from __future__ import annotations

import logging
import os

import pytest

from plinth.errors import StorageError
from plinth.shards.partition_metadata import (
    PARTITION_METADATA_FILE, load_topic_id, metadata_bytes, save_topic_id)


def test_a_saved_topic_id_is_loaded_back_from_its_text_file(tmp_path):
    save_topic_id(tmp_path, "Zm9vYmFyLWlk")
    assert (tmp_path / PARTITION_METADATA_FILE).read_bytes() == \
        b"version: 1\ntopic_id: Zm9vYmFyLWlk\n"
    assert load_topic_id(tmp_path) == "Zm9vYmFyLWlk"
    # And saving another replaces it, leaving no temporary file
    save_topic_id(tmp_path, "other")
    assert load_topic_id(tmp_path) == "other"
    assert os.listdir(tmp_path) == [PARTITION_METADATA_FILE]


def test_no_file_or_no_directory_says_no_topic_id(tmp_path):
    assert load_topic_id(tmp_path) is None
    assert load_topic_id(tmp_path / "missing") is None


@pytest.mark.parametrize("damaged", [
    b"", b"version: 1\ntopic_id: abc", b"version: 2\ntopic_id: abc\n",
    b"version: 1\ntopic_id: \n", b"version: 1\ntopic_id: a b\n", b"\xff\xfe garbage",
    b"version: 1\ntopic_id: abc\nmore\n"])
def test_a_file_that_is_not_one_says_no_topic_id_and_is_logged(tmp_path, caplog, damaged):
    (tmp_path / PARTITION_METADATA_FILE).write_bytes(damaged)
    with caplog.at_level(logging.ERROR, logger="plinth.shards.partition_metadata"):
        assert load_topic_id(tmp_path) is None
    assert f"{tmp_path / PARTITION_METADATA_FILE} is not a partition.metadata file" in \
        caplog.text


def test_a_topic_id_that_would_not_read_back_is_a_programmer_error(tmp_path):
    for bad in ("", "a b", "a\nb", "é"):
        with pytest.raises(AssertionError, match="is not one"):
            metadata_bytes(bad)


def test_a_disk_that_refuses_the_file_is_a_storage_error_naming_it(tmp_path):
    import resource
    import signal

    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, hard))
    try:
        with pytest.raises(StorageError, match=f"cannot write "
                                               f"{tmp_path / PARTITION_METADATA_FILE}: "):
            save_topic_id(tmp_path, "a-topic-id")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_log_is_foreign_to_a_topic_id_unless_its_file_names_it_or_it_holds_no_records(
        tmp_path):
    from plinth.shards.partition_metadata import foreign_log

    # Given a directory with no records, whatever its file says: nothing is foreign
    save_topic_id(tmp_path, "old")
    assert foreign_log(tmp_path, "new") == ""
    # When it holds records / Then they are foreign to another id, and not to its own
    (tmp_path / "00000000000000000000.log").write_bytes(b"records")
    assert foreign_log(tmp_path, "old") == ""
    assert foreign_log(tmp_path, "new") == "its partition.metadata names topic id old"
    # And without a file (or with a bad one) they may be anyone's
    (tmp_path / PARTITION_METADATA_FILE).unlink()
    assert foreign_log(tmp_path, "new") == ("it does not say whose it is (no "
                                            "partition.metadata, or a bad one)")
    assert foreign_log(tmp_path / "missing", "new") == ""


def test_a_directory_set_aside_is_renamed_beside_itself_whole(tmp_path):
    from plinth.shards.partition_metadata import ORPHAN_SUFFIX, set_aside

    directory = tmp_path / "t-0"
    directory.mkdir()
    (directory / "00000000000000000000.log").write_bytes(b"records")
    aside = set_aside(directory)
    assert not directory.exists() and aside.parent == tmp_path
    assert aside.name.startswith("t-0.") and aside.name.endswith(ORPHAN_SUFFIX)
    assert (aside / "00000000000000000000.log").read_bytes() == b"records"
