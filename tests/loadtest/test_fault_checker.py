"""The fault suite's checker (loadtest/fault_checker.py) on hand-made histories: a good
one passes, and each history that breaks one rule is reported under that rule alone."""

from __future__ import annotations

from loadtest.fault_checker import (Ack, Commit, History, Read, Replication, Violation, check,
                                    record_id, record_value, summary)


def good_history() -> History:
    """Two producers, two partitions, a group that committed forward, factor 3 in sync."""
    acks = [Ack(0, 0, "p1", 0), Ack(0, 1, "p2", 0), Ack(1, 0, "p1", 1), Ack(0, 2, "p1", 2)]
    final = [Read(a.partition, a.offset, record_value(a.producer, a.sequence)) for a in acks]
    # an unacknowledged record (its reply was lost) may be stored once
    final.append(Read(1, 1, record_value("p2", 1)))
    return History(acks=acks, reads=final[:3] + final[:1], final=final,
                   commits=[Commit("g", 0, 1), Commit("g", 0, 3), Commit("g", 1, 2),
                            Commit("g", 0, 3)],
                   replication={0: Replication(("s0", "s1", "s2"), ("s2", "s0", "s1")),
                                1: Replication(("s1",), ("s1",))})


def kinds(violations: list[Violation]) -> list[str]:
    return [v.kind for v in violations]


def test_a_history_that_keeps_every_rule_has_no_violations():
    # Given a run in which nothing went wrong, When it is checked
    violations = check(good_history())
    # Then nothing is reported
    assert violations == []
    assert summary(violations) == "no violations"


def test_a_value_names_its_producer_and_sequence():
    # Given a record's value, When it is parsed back, Then it names what made it
    assert record_id(record_value("producer-1", 42)) == ("producer-1", 42)


def test_an_acknowledged_record_missing_from_the_log_is_lost():
    # Given a history whose final log lacks an acknowledged record
    history = good_history()
    history.final = [r for r in history.final if (r.partition, r.offset) != (0, 1)]
    # When it is checked, Then that record is reported lost, naming it
    violations = check(history)
    assert kinds(violations) == ["lost"]
    assert "p2:0 acknowledged at 0/1" in violations[0].detail


def test_an_acknowledged_record_at_another_offset_is_moved():
    # Given a record acknowledged at 0/2 but stored at 0/3
    history = good_history()
    history.final = [r if (r.partition, r.offset) != (0, 2) else Read(0, 3, r.value)
                     for r in history.final]
    # When it is checked, Then it is reported moved, with both places
    violations = check(history)
    assert kinds(violations) == ["moved"]
    assert "0/2" in violations[0].detail and "0/3" in violations[0].detail


def test_a_record_stored_twice_is_duplicated_even_if_never_acknowledged():
    # Given an unacknowledged record stored at two offsets
    history = good_history()
    history.final.append(Read(1, 2, record_value("p2", 1)))
    # When it is checked, Then it is reported duplicated (and nothing else)
    violations = check(history)
    assert kinds(violations) == ["duplicated"]
    assert "1/1" in violations[0].detail and "1/2" in violations[0].detail


def test_a_producer_whose_sequences_go_down_in_a_partition_is_out_of_order():
    # Given partition 0 holding p1's records 2 then 0 (the acknowledgements say so too)
    history = good_history()
    history.acks = [Ack(0, 0, "p1", 2), Ack(0, 1, "p1", 0)]
    history.final = [Read(0, 0, record_value("p1", 2)), Read(0, 1, record_value("p1", 0))]
    history.reads = []
    # When it is checked, Then the partition is reported out of order
    violations = check(history)
    assert kinds(violations) == ["out_of_order"]
    assert "partition 0: p1:0 at offset 1 after p1:2 at offset 0" in violations[0].detail


def test_two_producers_interleaved_in_a_partition_are_in_order():
    # Given p1 and p2 interleaved in one partition, each in its own order
    history = History(final=[Read(0, 0, b"p1:0"), Read(0, 1, b"p2:5"), Read(0, 2, b"p1:1"),
                             Read(0, 3, b"p2:6")])
    # When it is checked, Then nothing is reported
    assert check(history) == []


def test_two_reads_of_one_offset_that_differ_are_a_read_mismatch():
    # Given a consumer that read 0/1 as p2:0, and a later read of 0/1 that found p1:9
    history = good_history()
    history.reads.append(Read(0, 1, record_value("p1", 9)))
    # When it is checked, Then the offset is reported with both values
    violations = check(history)
    assert kinds(violations) == ["read_mismatch"]
    assert "b'p2:0'" in violations[0].detail and "b'p1:9'" in violations[0].detail


def test_a_consumer_read_that_the_final_log_contradicts_is_a_read_mismatch():
    # Given a consumer that read p2:7 at 1/1 during the run, where the final log has p2:1
    history = good_history()
    history.reads.append(Read(1, 1, record_value("p2", 7)))
    # When it is checked, Then the mismatch is reported
    assert kinds(check(history)) == ["read_mismatch"]


def test_a_committed_offset_that_goes_down_is_reported():
    # Given group g's offset of partition 0 seen at 3, then at 2
    history = good_history()
    history.commits.append(Commit("g", 0, 2))
    # When it is checked, Then it is reported going backwards
    violations = check(history)
    assert kinds(violations) == ["commit_backwards"]
    assert "group g partition 0: committed 2 after 3" in violations[0].detail


def test_commits_of_different_groups_and_partitions_are_checked_apart():
    # Given two groups and two partitions, each going forward on its own
    history = History(commits=[Commit("a", 0, 10), Commit("b", 0, 1), Commit("a", 1, 0),
                               Commit("b", 0, 2), Commit("a", 0, 11)])
    # When it is checked, Then nothing is reported
    assert check(history) == []


def test_a_partition_whose_in_sync_set_lacks_a_replica_at_the_end_is_under_replicated():
    # Given partition 0 with replica s2 not in sync when the run ended
    history = good_history()
    history.replication[0] = Replication(("s0", "s1", "s2"), ("s0", "s1"))
    # When it is checked, Then that partition is reported
    violations = check(history)
    assert kinds(violations) == ["under_replicated"]
    assert "partition 0" in violations[0].detail and "s2" in violations[0].detail


def test_the_summary_counts_each_kind_and_quotes_a_few():
    # Given seven lost records
    history = History(acks=[Ack(0, n, "p", n) for n in range(7)])
    # When the violations are summarised, Then the count is exact and five are quoted
    line = summary(check(history))
    assert line.startswith("lost: 7, e.g. ")
    assert line.count("acknowledged at") == 5
