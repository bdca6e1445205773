"""A partition's leader-epoch history (shards/leader_epochs.py): its lookups and its
checkpoint file on a real disk."""

from __future__ import annotations

import crc32c
import pytest

from plinth.errors import CorruptDataError
from plinth.shards.leader_epochs import (
    CHECKPOINT_FILE, NO_EPOCH, NO_OFFSET, EpochEntry, LeaderEpochs, load_leader_epochs,
    recover_leader_epochs, save_leader_epochs)

HISTORY = [EpochEntry(0, 0), EpochEntry(3, 120), EpochEntry(4, 500)]


def test_the_end_of_an_epoch_is_the_next_epochs_start_or_the_log_end_for_the_latest():
    # Given epochs 0, 3 and 4 starting at offsets 0, 120 and 500
    epochs = LeaderEpochs(HISTORY)
    # Then an epoch ends where the next one starts, the latest at the log's end,
    # an epoch it never had at the end of the largest one below it
    assert epochs.end_offset_for(0, 700) == (0, 120)
    assert epochs.end_offset_for(2, 700) == (0, 120)
    assert epochs.end_offset_for(4, 700) == (4, 700)
    assert epochs.end_offset_for(9, 700) == (4, 700)
    # And an epoch older than every one here has no end
    assert LeaderEpochs([EpochEntry(2, 50)]).end_offset_for(1, 700) == (NO_EPOCH, NO_OFFSET)


def test_a_saved_history_loads_back_the_same(tmp_path):
    # Given a history saved in a partition directory
    save_leader_epochs(tmp_path, LeaderEpochs(HISTORY))
    # When it is loaded
    loaded = load_leader_epochs(tmp_path)
    # Then it is the same history
    assert loaded.entries == tuple(HISTORY)


def test_the_checkpoint_file_is_the_documented_text_with_its_crc(tmp_path):
    # Given a history of two epochs / When it is saved
    save_leader_epochs(tmp_path, LeaderEpochs([EpochEntry(0, 0), EpochEntry(3, 120)]))
    # Then the file is version, count, the entries and a CRC-32C line, as documented
    body = b"1\n2\n0 0\n3 120\n"
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == (
        body + b"crc32c %08x\n" % crc32c.crc32c(body))


def test_a_directory_without_a_checkpoint_has_an_empty_history(tmp_path):
    # Given a partition directory from before replication / When its history is loaded
    epochs = load_leader_epochs(tmp_path)
    # Then it is empty
    assert epochs.entries == () and epochs.latest_epoch() == NO_EPOCH


def test_an_empty_history_saves_and_loads(tmp_path):
    # Given a history truncated to nothing / When it is saved and loaded
    save_leader_epochs(tmp_path, LeaderEpochs())
    # Then it loads empty, not as an error
    assert load_leader_epochs(tmp_path).entries == ()


def test_saving_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    # Given a saved history that then grows
    epochs = LeaderEpochs(HISTORY[:1])
    save_leader_epochs(tmp_path, epochs)
    epochs.assign(3, 120)
    # When it is saved again
    save_leader_epochs(tmp_path, epochs)
    # Then the file holds the new history and nothing else is left beside it
    assert load_leader_epochs(tmp_path).entries == tuple(HISTORY[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]


def test_a_checkpoint_torn_at_any_byte_is_detected_naming_the_file_and_a_line(tmp_path):
    # Given a saved checkpoint
    save_leader_epochs(tmp_path, LeaderEpochs(HISTORY))
    path = tmp_path / CHECKPOINT_FILE
    whole = path.read_bytes()
    for cut in range(len(whole)):
        # When it is cut short at this byte
        path.write_bytes(whole[:cut])
        # Then loading it fails, naming the file and a line
        with pytest.raises(CorruptDataError, match=rf"{CHECKPOINT_FILE}, line \d+: "):
            load_leader_epochs(tmp_path)


def test_a_checkpoint_with_any_byte_flipped_is_detected(tmp_path):
    # Given a saved checkpoint
    save_leader_epochs(tmp_path, LeaderEpochs(HISTORY))
    path = tmp_path / CHECKPOINT_FILE
    whole = path.read_bytes()
    for position in range(len(whole)):
        for flip in (0x01, 0x10, 0x80):
            # When one of its bytes is flipped
            flipped = bytearray(whole)
            flipped[position] ^= flip
            path.write_bytes(bytes(flipped))
            # Then loading it fails rather than believing a changed history
            with pytest.raises(CorruptDataError, match=str(path)):
                load_leader_epochs(tmp_path)


@pytest.mark.parametrize("lines, line_number, what", [
    ([b"2", b"0"], 1, "version 2"),
    ([b"1", b"2", b"0 0"], 2, "count 2, but 1 entry lines"),
    ([b"1", b"1", b"0  0"], 3, "not 2 non-negative numbers"),
    ([b"1", b"1", b"-1 0"], 3, "not 2 non-negative numbers"),
    ([b"1", b"2", b"3 0", b"3 10"], 4, "epochs must grow"),
    ([b"1", b"2", b"3 10", b"4 5"], 4, "start offsets must not shrink"),
])
def test_a_checkpoint_with_a_valid_crc_but_a_bad_line_names_that_line(
        tmp_path, lines, line_number, what):
    # Given a checkpoint whose CRC matches lines that save_leader_epochs never writes
    body = b"".join(line + b"\n" for line in lines)
    (tmp_path / CHECKPOINT_FILE).write_bytes(body + b"crc32c %08x\n" % crc32c.crc32c(body))
    # When it is loaded / Then the error names the line and what is wrong with it
    with pytest.raises(CorruptDataError, match=rf"line {line_number}: .*{what}"):
        load_leader_epochs(tmp_path)


def test_recovering_a_bad_checkpoint_sets_it_aside_and_says_why_with_an_empty_history(
        tmp_path):
    save_leader_epochs(tmp_path, LeaderEpochs([EpochEntry(0, 0), EpochEntry(3, 4950)]))
    path = tmp_path / CHECKPOINT_FILE
    bad = path.read_bytes().replace(b"3 4950", b"3 4050")   # the tester's sed
    path.write_bytes(bad)
    epochs, error = recover_leader_epochs(tmp_path)
    assert epochs.entries == () and "is not the CRC of the lines above" in error.message
    assert not path.exists() and (tmp_path / (CHECKPOINT_FILE + ".corrupt")).read_bytes() == bad
    # And a good one, or none, is read as it is
    save_leader_epochs(tmp_path, LeaderEpochs([EpochEntry(2, 7)]))
    assert recover_leader_epochs(tmp_path)[0].entries == (EpochEntry(2, 7),)
    epochs, error = recover_leader_epochs(tmp_path / "none")
    assert epochs.entries == () and error is None
