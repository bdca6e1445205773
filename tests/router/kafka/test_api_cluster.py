"""DescribeTopicPartitions' paging (router/kafka/api_cluster.py's partition_page): topics
in name order from the cursor on, at most the limit of partitions per page, and the
cursor where the next page starts. The handler against a real broker is in
tests/e2e/test_kafka_admin_e2e.py."""

from __future__ import annotations

from plinth.router.kafka.api_cluster import _page_refusal, partition_page

COUNTS = {"a": 3, "b": 1, "c": 4}


def pages(names, limit, counts=COUNTS):
    """Every page until the cursor runs out: [[(topic, [indexes])...]...]."""
    out, cursor = [], None
    for _ in range(100):   # bounded: a paging bug must fail, not hang
        page, cursor = partition_page(counts, names, cursor, limit)
        out.append([(name, list(indexes)) for name, indexes in page])
        if cursor is None:
            return out
    raise AssertionError(f"no last page after 100: {out[-3:]}")


def test_a_limit_above_every_partition_answers_one_page():
    assert pages(["a", "b", "c"], 100) == [[("a", [0, 1, 2]), ("b", [0]), ("c", [0, 1, 2, 3])]]


def test_pages_cut_topics_at_the_limit_and_go_on_where_they_stopped():
    assert pages(["a", "b", "c"], 2) == [
        [("a", [0, 1])], [("a", [2]), ("b", [0])], [("c", [0, 1])], [("c", [2, 3])]]


def test_a_page_ending_with_a_topic_points_at_the_next_topic():
    page, cursor = partition_page(COUNTS, ["a", "b", "c"], None, 4)
    assert [(n, list(i)) for n, i in page] == [("a", [0, 1, 2]), ("b", [0])]
    assert cursor == {"topic_name": "c", "partition_index": 0}


def test_the_last_page_ending_exactly_at_the_limit_has_no_next_cursor():
    assert partition_page(COUNTS, ["a", "b"], None, 4)[1] is None


def test_a_cursor_starts_at_its_topic_and_partition():
    page, cursor = partition_page(COUNTS, ["a", "b", "c"],
                                  {"topic_name": "c", "partition_index": 1}, 10)
    assert [(n, list(i)) for n, i in page] == [("c", [1, 2, 3])] and cursor is None


def test_unknown_topics_are_on_the_page_without_partitions_or_room():
    assert pages(["a", "zz-missing"], 3) == [[("a", [0, 1, 2]), ("zz-missing", [])]]


def test_a_cursor_off_the_topics_asked_or_a_limit_below_one_is_refused_with_the_reason():
    assert "not among the 2 topics" in _page_refusal(["a", "b"], {"topic_name": "c",
                                                                   "partition_index": 0}, 10)
    assert "below 1" in _page_refusal(["a"], None, 0)
    assert "negative" in _page_refusal(["a"], {"topic_name": "a", "partition_index": -1}, 5)
    assert _page_refusal([], {"topic_name": "c", "partition_index": 0}, 5) is None
