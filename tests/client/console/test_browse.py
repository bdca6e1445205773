"""The message browser's logic (client/console/browse.py): parsing what a form sends,
showing bytes, and reading records from a real broker within the scan bound."""

from __future__ import annotations

import json

import pytest

from plinth import limits
from plinth.client.admin import Admin
from plinth.client.console import browse
from plinth.client.producer import Producer
from plinth.errors import (InputTooLongError, InvalidTopicError, OffsetOutOfRangeError,
                           PartitionOutOfRangeError, UnknownTopicError)
from tests.support import unique_topic

# --- Parsing ------------------------------------------------------------------------


def test_an_empty_query_browses_the_newest_records_of_every_partition_as_text():
    query = browse.parse_browse_query("orders", {})
    assert (query.partition, query.start, query.limit, query.scan_max, query.view) == \
        (None, "newest", limits.CONSOLE_PAGE_RECORDS_DEFAULT, limits.CONSOLE_SCAN_RECORDS_DEFAULT,
         "text")


def test_a_full_query_is_read_field_by_field():
    query = browse.parse_browse_query("orders", {
        "partition": "2", "start": "offset", "offset": "40", "key": "k-1", "value": "needle",
        "limit": "5", "scan": "300", "view": "hex", "at": "2:41"})
    assert (query.partition, query.offset, query.key_filter, query.value_filter, query.limit,
            query.scan_max, query.view, query.positions) == \
        (2, 40, b"k-1", b"needle", 5, 300, "hex", {2: 41})


@pytest.mark.parametrize("params,message", [
    ({"start": "offset", "offset": "-1"}, "offset -1 is out of range"),
    ({"start": "offset", "offset": "ten"}, "offset 'ten' is not a whole number"),
    ({"start": "offset", "offset": "9" * 23}, f"offset {'9' * 23} is out of range: it must "
                                              f"be 0 to"),
    ({"start": "offset"}, "start=offset needs an offset"),
    ({"start": "sideways"}, "start='sideways' is not one of newest, oldest, offset, timestamp"),
    ({"start": "timestamp", "timestamp": "yesterday"}, "timestamp 'yesterday' is neither ms"),
    ({"start": "timestamp", "timestamp": "-5"}, "timestamp -5 is out of range"),
    ({"start": "timestamp"}, "start=timestamp needs a timestamp"),
    ({"partition": "x"}, "partition 'x' is not a whole number"),
    ({"limit": "0"}, f"limit 0 is out of range: it must be 1 to {limits.CONSOLE_PAGE_RECORDS_MAX}"),
    ({"scan": str(limits.CONSOLE_SCAN_RECORDS_MAX + 1)},
     f"scan {limits.CONSOLE_SCAN_RECORDS_MAX + 1} is out of range: it must be 1 to "
     f"{limits.CONSOLE_SCAN_RECORDS_MAX}"),
    ({"view": "xml"}, "view='xml' is not one of text, json, hex"),
    ({"at": "0-12"}, "at= position '0-12' is not partition:offset"),
])
def test_a_bad_field_is_refused_with_a_message_naming_it(params, message):
    with pytest.raises(ValueError) as refused:
        browse.parse_browse_query("orders", params)
    assert message in str(refused.value)


def test_a_filter_longer_than_its_limit_is_refused_with_its_size_and_the_limit():
    too_long = "x" * (limits.CONSOLE_FILTER_BYTES_MAX + 1)
    with pytest.raises(InputTooLongError) as refused:
        browse.parse_browse_query("orders", {"value": too_long})
    assert str(refused.value) == (f"the value filter is {limits.CONSOLE_FILTER_BYTES_MAX + 1} "
                                  f"bytes; at most {limits.CONSOLE_FILTER_BYTES_MAX} bytes are "
                                  f"allowed")


def test_a_filter_at_its_limit_is_accepted():
    query = browse.parse_browse_query("orders", {"key": "k" * limits.CONSOLE_FILTER_BYTES_MAX})
    assert len(query.key_filter) == limits.CONSOLE_FILTER_BYTES_MAX


def test_a_bad_topic_name_is_refused_before_the_broker_is_asked():
    with pytest.raises(InvalidTopicError, match="may contain only ASCII letters"):
        browse.parse_browse_query("no such/topic", {})


@pytest.mark.parametrize("text,ms", [
    ("1700000000123", 1_700_000_000_123),
    ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
    ("2023-11-14T22:13:20.123", 1_700_000_000_123),        # no zone: UTC
    ("2023-11-14T23:13:20.123+01:00", 1_700_000_000_123),
])
def test_a_timestamp_is_ms_or_an_iso_time(text, ms):
    assert browse.parse_timestamp(text) == ms


def test_positions_round_trip_through_their_text():
    assert browse.parse_positions(browse.format_positions({3: 10, 0: 7})) == {0: 7, 3: 10}


# --- Showing --------------------------------------------------------------------------


def test_json_is_pretty_printed_and_other_text_says_it_is_not_json():
    shown = browse.show(b'{"id":7,"tags":["a"]}', "json", 1000)
    assert json.loads(shown.text) == {"id": 7, "tags": ["a"]} and "\n  " in shown.text
    not_json = browse.show(b"plain words", "json", 1000)
    assert not_json.text == "plain words" and not_json.note.startswith("not JSON:")


def test_hex_shows_positions_bytes_and_ascii():
    assert browse.show(b"Hi\x00\xff", "hex", 1000).text == \
        "00000000  48 69 00 ff" + " " * 36 + "  |Hi..|"


def test_a_value_over_the_shown_bound_is_cut_and_says_its_size():
    shown = browse.show(b"a" * 50, "text", 10)
    assert (shown.text, shown.size_bytes, shown.truncated) == ("a" * 10, 50, True)


def test_bytes_that_are_not_utf8_are_shown_as_hex_in_any_view_with_a_note():
    for view in ("text", "json"):
        shown = browse.show(b"ab\xff\x00cd", view, 1000)
        assert shown.text == browse.hex_dump(b"ab\xff\x00cd")
        assert shown.note == "not UTF-8 (byte 2): shown as hex"


def test_a_cut_through_a_multibyte_character_is_still_text():
    shown = browse.show("é".encode() * 10, "text", 5)   # 2 bytes each: cut mid-character
    assert (shown.text, shown.truncated, shown.note) == ("éé", True, "")


def test_a_null_value_is_shown_as_null():
    assert browse.show(None, "text", 10).is_null


def test_a_timestamp_is_shown_in_iso_with_ms():
    assert browse.iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


# --- Reading from a real broker ----------------------------------------------------------


@pytest.fixture(scope="module")
def topic(shared_broker):
    """Two partitions of 100 records each: key k-<n>, value {"n": n}, header seq=<n>;
    one value in partition 1 holds "needle"; timestamps 1000 * n ms."""
    name = unique_topic("browse")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, 2)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(200):
            value = b'{"n": %d, "word": "needle"}' % n if n == 151 else b'{"n": %d}' % n
            producer.send(name, value, key=b"k-%d" % n, partition=n // 100,
                          headers=[("seq", b"%d" % n)], timestamp_ms=1_000 * n + 1_000_000)
        producer.flush()
    return name


@pytest.fixture
def reader(shared_broker):
    with Admin(broker=shared_broker.url) as admin, \
            browse.open_consumer(shared_broker.url) as consumer:
        yield lambda query: browse.browse(admin, consumer, query)


def test_oldest_reads_from_each_partitions_start_up_to_the_page(topic, reader):
    result = reader(browse.BrowseQuery(topic, partition=0, start="oldest", limit=5))
    assert [(r.offset, r.key, r.value) for r in result.records] == \
        [(n, b"k-%d" % n, b'{"n": %d}' % n) for n in range(5)]
    assert result.records[0].headers == [("seq", b"0")]
    assert (result.scanned, result.positions, result.stopped, result.more) == \
        (5, {0: 5}, "page", True)


def test_newest_shows_the_last_records_newest_first(topic, reader):
    result = reader(browse.BrowseQuery(topic, start="newest", limit=3))
    assert [(r.partition, r.offset) for r in result.records] == [(1, 99), (1, 98), (1, 97)]


def test_an_offset_start_reads_from_that_offset(topic, reader):
    result = reader(browse.BrowseQuery(topic, partition=1, start="offset", offset=42, limit=2))
    assert [r.offset for r in result.records] == [42, 43]


def test_a_timestamp_start_reads_from_the_first_record_stamped_at_or_after_it(topic, reader):
    result = reader(browse.BrowseQuery(topic, start="timestamp", timestamp_ms=1_000_000 + 150_500,
                                       limit=2))
    assert [(r.partition, r.offset) for r in result.records] == [(1, 51), (1, 52)]


def test_a_value_filter_finds_the_one_record_and_counts_what_it_scanned(topic, reader):
    result = reader(browse.BrowseQuery(topic, start="oldest", value_filter=b"needle",
                                       scan_max=500))
    assert [(r.partition, r.offset) for r in result.records] == [(1, 51)]
    assert (result.scanned, result.stopped, result.more) == (200, "end", False)


def test_a_key_filter_matches_keys_only(topic, reader):
    result = reader(browse.BrowseQuery(topic, partition=0, start="oldest", key_filter=b"k-7"))
    assert [r.key for r in result.records] == [b"k-7", b"k-70", b"k-71", b"k-72", b"k-73",
                                                b"k-74", b"k-75", b"k-76", b"k-77", b"k-78",
                                                b"k-79"]


def test_scanning_stops_at_the_bound_and_says_where_to_continue(topic, reader):
    # Given a filter that matches nothing and a bound of 30 records
    result = reader(browse.BrowseQuery(topic, start="oldest", value_filter=b"absent",
                                       scan_max=30))
    # Then the scan read exactly 30 and the positions add up to them
    assert (result.scanned, result.stopped, result.records) == (30, "scan", [])
    assert sum(result.positions.values()) == 30 and result.more
    # When it continues from there, it reads the next records, never the same twice
    more = reader(browse.BrowseQuery(topic, start="oldest", value_filter=b"absent",
                                     scan_max=500, positions=result.positions))
    assert (more.scanned, more.stopped) == (170, "end")


def test_a_scan_never_reads_more_than_the_largest_bound(topic, reader):
    result = reader(browse.BrowseQuery(topic, start="oldest", value_filter=b"absent",
                                       scan_max=limits.CONSOLE_SCAN_RECORDS_MAX))
    assert result.scanned == 200 <= limits.CONSOLE_SCAN_RECORDS_MAX


def test_an_offset_past_the_end_of_one_partition_is_refused_with_its_range(topic, reader):
    with pytest.raises(OffsetOutOfRangeError) as refused:
        reader(browse.BrowseQuery(topic, partition=0, start="offset", offset=500))
    assert str(refused.value) == (f"offset 500 is out of range for {topic}-0: it holds "
                                  f"offsets 0 to 99")


def test_a_partition_the_topic_lacks_is_refused_with_its_count(topic, reader):
    with pytest.raises(PartitionOutOfRangeError, match=r"has 2 partitions \(0 to 1\); there is "
                                                       r"no partition 5"):
        reader(browse.BrowseQuery(topic, partition=5))


def test_an_unknown_topic_is_refused_by_the_broker(reader):
    with pytest.raises(UnknownTopicError):
        reader(browse.BrowseQuery(unique_topic("missing")))


def test_a_record_is_read_by_its_offset(shared_broker, topic):
    with Admin(broker=shared_broker.url) as admin, \
            browse.open_consumer(shared_broker.url) as consumer:
        record = browse.read_record(admin, consumer, topic, 1, 51)
        assert (record.key, record.headers) == (b"k-151", [("seq", b"151")])
        with pytest.raises(OffsetOutOfRangeError, match="no record at offset 100 of "):
            browse.read_record(admin, consumer, topic, 1, 100)


def test_newest_over_all_partitions_reads_each_to_its_end_within_the_scan_bound(topic, reader):
    # Given a bound of 10 records for a page of 8 over two partitions
    result = reader(browse.BrowseQuery(topic, start="newest", limit=8, scan_max=10))
    # Then each partition's last 5 were read, and the page is the newest 8 of them
    assert (result.scanned, result.stopped) == (10, "end")
    assert [(r.partition, r.offset) for r in result.records] == \
        [(1, 99), (1, 98), (1, 97), (1, 96), (1, 95), (0, 99), (0, 98), (0, 97)]


def test_an_empty_topic_is_read_to_its_end_at_once(shared_broker, reader):
    name = unique_topic("empty")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, 3)
    result = reader(browse.BrowseQuery(name, start="oldest"))
    assert (result.records, result.scanned, result.stopped, result.more) == ([], 0, "end", False)


def test_the_topic_picker_pages_names_by_prefix_and_after(shared_broker):
    prefix = unique_topic("pick") + "-"
    with Admin(broker=shared_broker.url) as admin:
        for name in ("a", "b", "c"):
            admin.create_topic(prefix + name, 1)
        first = browse.topics_page(admin, prefix, "", 2)
        second = browse.topics_page(admin, prefix, first.names[-1], 2)
    assert (first.names, first.more) == ([prefix + "a", prefix + "b"], True)
    assert (second.names, second.more) == ([prefix + "c"], False)


def test_a_topic_search_longer_than_a_topic_name_is_refused(shared_broker):
    with Admin(broker=shared_broker.url) as admin, pytest.raises(InputTooLongError):
        browse.topics_page(admin, "t" * (limits.TOPIC_NAME_BYTES_MAX + 1))
