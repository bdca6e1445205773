"""The message browser's pages (client/console/pages_browse.py) over a real broker,
through Starlette's TestClient: browse to a produced record, filter, scan more,
views, permalinks, and a clear 400 page for every bad input."""

from __future__ import annotations

import html
import re
import time

import pytest

from plinth import limits
from plinth.client.admin import Admin
from plinth.client.producer import Producer
from tests.client.console.conftest import console_client
from tests.support import unique_topic


@pytest.fixture(scope="module")
def client(shared_broker):
    with console_client(shared_broker.url) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def topic(shared_broker):
    """One partition of 60 records; offset 41 has key "order-41", a JSON value naming
    "needle", and headers source=web, trace=abc."""
    name = unique_topic("pages")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, 1)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(60):
            if n == 41:
                producer.send(name, b'{"item":"needle","qty":3}', key=b"order-41",
                              headers=[("source", b"web"), ("trace", b"abc")],
                              timestamp_ms=1_700_000_000_123)
            else:
                producer.send(name, b"plain %d" % n, key=b"order-%d" % n)
        producer.flush()
    return name


def text_of(page) -> str:
    """The page's text with tags removed and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.text))


def test_the_topic_picker_lists_topics_by_prefix_and_links_to_them(client, topic):
    page = client.get("/browse", params={"q": topic[:10]})
    assert page.status_code == 200
    assert f'href="/browse/{topic}"' in page.text


def test_browsing_to_a_produced_record_shows_its_key_value_and_headers(client, topic):
    # When the browser starts at offset 41 of partition 0, one record a page
    page = client.get(f"/browse/{topic}", params={"partition": "0", "start": "offset",
                                                   "offset": "41", "limit": "1"})
    # Then the one row is that record, with its key, value, headers and time
    assert page.status_code == 200
    rows = re.findall(r'<tr class="record" data-partition="(\d+)" data-offset="(\d+)">', page.text)
    assert rows == [("0", "41")]
    seen = text_of(page)
    assert "order-41" in seen and '{"item":"needle","qty":3}' in seen
    assert "source : web" in seen.replace("  ", " ") and "trace" in seen and "abc" in seen
    assert "2023-11-14T22:13:20.123Z" in seen and "1700000000123 ms" in seen
    assert f'href="/record/{topic}/0/41"' in page.text


def test_a_value_filter_finds_the_record_and_says_how_many_it_scanned(client, topic):
    page = client.get(f"/browse/{topic}", params={"start": "oldest", "value": "needle"})
    assert page.status_code == 200
    assert re.findall(r'data-offset="(\d+)"', page.text) == ["41"]
    assert re.search(r'Scanned <span id="scanned">60</span> records', page.text)
    assert "read to the end" in page.text and 'id="scan-more"' not in page.text


def test_scanning_stops_at_the_bound_and_scan_more_continues_from_the_next_offset(client, topic):
    # Given a filter that matches nothing, scanning at most 25 records a request
    page = client.get(f"/browse/{topic}", params={"start": "oldest", "value": "absent",
                                                   "scan": "25"})
    assert re.search(r'<span id="scanned">25</span>', page.text)
    assert "stopped at the scan bound (25 records)" in page.text
    assert "Continues from partition 0 offset 25" in text_of(page)
    # When the "scan more" link is followed twice
    more_url = html.unescape(re.search(r'href="([^"]+)" id="scan-more"', page.text)[1])
    assert "at=0%3A25" in more_url
    page = client.get(more_url)
    assert re.search(r'<span id="scanned">25</span>', page.text)
    more_url = html.unescape(re.search(r'href="([^"]+)" id="scan-more"', page.text)[1])
    page = client.get(more_url)
    # Then the third request reads the last 10 and reaches the end
    assert re.search(r'<span id="scanned">10</span>', page.text) and "read to the end" in page.text


def test_the_json_view_pretty_prints_a_json_value(client, topic):
    page = client.get(f"/record/{topic}/0/41", params={"view": "json"})
    assert page.status_code == 200
    value = html.unescape(re.search(r'id="record-value"><pre class="bytes"[^>]*>(.*?)</pre>',
                                    page.text, re.S)[1])
    assert value == '{\n  "item": "needle",\n  "qty": 3\n}'


def test_the_hex_view_shows_bytes_in_hex_with_their_ascii(client, topic):
    page = client.get(f"/record/{topic}/0/41", params={"view": "hex"})
    value = html.unescape(re.search(r'id="record-value"><pre class="bytes"[^>]*>(.*?)</pre>',
                                    page.text, re.S)[1])
    assert value.splitlines()[0] == \
        '00000000  7b 22 69 74 65 6d 22 3a 22 6e 65 65 64 6c 65 22  |{"item":"needle"|'


def test_the_permalink_shows_one_record_with_its_headers(client, topic):
    page = client.get(f"/record/{topic}/0/41")
    assert page.status_code == 200
    seen = text_of(page)
    assert "order-41" in seen and "web" in seen and "abc" in seen
    assert re.search(r'id="record-offset">41<', page.text)


@pytest.mark.parametrize("path,params,message", [
    ("/browse/{topic}", {"start": "offset", "offset": "-3"}, "offset -3 is out of range"),
    ("/browse/{topic}", {"start": "offset", "offset": "abc"}, "offset 'abc' is not a whole number"),
    ("/browse/{topic}", {"partition": "0", "start": "offset", "offset": "999"},
     "offset 999 is out of range for {topic}-0: it holds offsets 0 to 59"),
    ("/browse/{topic}", {"start": "timestamp", "timestamp": "noon"},
     "timestamp 'noon' is neither ms since the epoch nor an ISO 8601 time"),
    ("/browse/{topic}", {"partition": "7"}, "has 1 partitions (0 to 0); there is no partition 7"),
    ("/browse/{topic}", {"value": "v" * (limits.CONSOLE_FILTER_BYTES_MAX + 1)},
     f"the value filter is {limits.CONSOLE_FILTER_BYTES_MAX + 1} bytes; at most "
     f"{limits.CONSOLE_FILTER_BYTES_MAX} bytes are allowed"),
    ("/browse/{topic}", {"scan": "0"}, "scan 0 is out of range"),
    ("/browse/bad%20name!", {}, "topic name 'bad name!' may contain only ASCII letters"),
    ("/record/{topic}/0/x1", {}, "offset 'x1' is not a whole number"),
    ("/record/{topic}/3/0", {}, "there is no partition 3"),
])
def test_every_bad_input_gets_a_400_page_with_its_message(client, topic, path, params, message):
    page = client.get(path.format(topic=topic), params=params)
    assert page.status_code == 400, page.text
    assert message.format(topic=topic) in html.unescape(page.text)
    assert "Traceback" not in page.text


@pytest.mark.parametrize("offset, message", [
    (99_999, "no record at offset 99999 of {topic}-0: its offsets run from 0 to 59"),
    (60, "no record at offset 60 of {topic}-0: its offsets run from 0 to 59"),
])
def test_a_record_link_past_the_partitions_end_gets_a_not_found_page_naming_its_range(
        client, topic, offset, message):
    page = client.get(f"/record/{topic}/0/{offset}")
    assert page.status_code == 404, page.text
    assert message.format(topic=topic) in html.unescape(page.text)


def test_an_unknown_topic_gets_a_not_found_page(client):
    page = client.get(f"/browse/{unique_topic('missing')}")
    assert page.status_code == 404 and "UnknownTopicError" in page.text


# --- Fetches that fail (object storage down, a shard restarting) ------------------

STORE_DOWN = ("object storage unavailable: get bytes file:///tier/seg-0.log: "
              "HTTP error 503")


def consumer_whose_fetches_fail(broker_url: str, error_of):
    """A browse Consumer (browse.open_consumer) whose fetches all fail as the broker
    answers them while its store is down: its polls bring nothing, and
    ``fetch_errors`` names each assigned partition with ``error_of(partition)``, as the
    real Consumer's do while it retries them."""
    from plinth.client.consumer import Consumer
    from plinth.client.fetcher import TopicPartition

    class FailingConsumer(Consumer):
        def poll(self, timeout_ms=0, max_records=None):
            # A poll of a partition whose fetches keep failing: it waits, then nothing.
            time.sleep(min(timeout_ms, 50) / 1000)
            return {}

        def fetch_errors(self):
            return {TopicPartition(t, p): error_of(p) for t, p in self.assignment()}

    return FailingConsumer(broker=broker_url, fetch_max_wait_ms=limits.CONSOLE_FETCH_WAIT_MS)


@pytest.fixture
def store_down(monkeypatch, shared_broker):
    """Every browse's Consumer fails its fetches with RemoteStorageUnavailableError, and
    a scan's time bound is short (the page waits it out, then answers)."""
    from plinth.client.console import browse
    from plinth.errors import RemoteStorageUnavailableError

    monkeypatch.setattr(limits, "CONSOLE_SCAN_MS_MAX", 300)
    monkeypatch.setattr(browse, "open_consumer", lambda broker: consumer_whose_fetches_fail(
        shared_broker.url, lambda partition: RemoteStorageUnavailableError(STORE_DOWN)))


def test_a_browse_whose_fetches_fail_is_a_503_naming_the_partition_and_the_stores_error(
        client, topic, store_down):
    # When the oldest records are browsed while every fetch fails (the store is down)
    page = client.get(f"/browse/{topic}", params={"partition": "0", "start": "oldest"})
    # Then the page is a 503 naming the partition, the offset and the fetch's own error
    assert page.status_code == 503
    text = " ".join(text_of(page).split())
    assert f"{topic}-0: the records from offset 0 could not be read" in text
    assert f"RemoteStorageUnavailableError: {STORE_DOWN}" in text
    # And it never says the partition has no records
    assert "No records." not in text
    assert "No records read." in text


def test_a_record_link_whose_fetch_fails_is_a_503_with_the_fetchs_error_not_a_404(
        client, topic, store_down):
    # When a record that exists is asked for while its fetches fail
    page = client.get(f"/record/{topic}/0/10")
    # Then the answer is a 503 saying the store is unavailable, not "no record there"
    assert page.status_code == 503
    text = " ".join(text_of(page).split())
    assert "Object storage unavailable" in text
    assert f"{topic}-0: the records from offset 10 could not be read" in text
    assert STORE_DOWN in text
    assert "no record at offset" not in text


def test_bidi_overrides_in_a_key_value_and_header_are_shown_as_marked_escapes(
        client, shared_broker):
    # Given a record whose key, value, header name and header value hold a
    # right-to-left override (which reverses the text after it: "é…LTR")
    name = unique_topic("bidi")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, 1)
    with Producer(broker=shared_broker.url) as producer:
        producer.send(name, "é漢字🙂\u202eRTL".encode(), key="k\u202e1".encode(),
                      headers=[("h\u202e", "v\u2066".encode())]).get(30)
    for url in (f"/browse/{name}?start=oldest", f"/record/{name}/0/0"):
        page = client.get(url)
        assert page.status_code == 200
        # Then no override reaches the page: each shows as its escape, marked, and the
        # page says what the escapes are
        assert "\u202e" not in page.text and "\u2066" not in page.text
        assert page.text.count('title="U+202E RIGHT-TO-LEFT OVERRIDE">\\u202e</span>') == 3
        assert 'title="U+2066 LEFT-TO-RIGHT ISOLATE">\\u2066</span>' in page.text
        assert "é漢字🙂" in page.text
        assert "1 control or format character (such as bidi overrides) shown as \\u escapes" \
            in text_of(page)
