"""The message browser's logic: which records one browse request reads, and how
a key or value is shown. No web code: pages_browse.py turns a request's query
string into a BrowseQuery and a BrowseResult into a page.

Runs in the console's process, on whichever thread serves the request. Each
function uses the Admin it is given (the console's is shared and serializes its
calls) and a Consumer of its own (``open_consumer``: assigned and seeked, never
in a group, never committing), which the caller closes after the request.

Where a browse starts, per partition (one, or all of the topic's):

- ``oldest``: the log start;
- ``newest``: ``limit`` records before the end (fewer when the partitions
  times ``limit`` exceed ``scan_max``); the page shows the newest ``limit`` of
  what it read, newest first;
- ``offset``: that offset (one partition: it must lie within start..end; all
  partitions: clamped to each one's range);
- ``timestamp``: the first record stamped at or after it (``offsets_for_times``),
  or the end where there is none;
- ``at``: the positions a previous page handed out ("scan more").

Each partition is read up to the end offset it had when the request began, so a
busy topic cannot keep a request reading. A request stops at whichever comes
first: every partition read to that end, ``scan_max`` records read (at most
CONSOLE_SCAN_RECORDS_MAX), ``limit`` matching records found (except ``newest``),
or CONSOLE_SCAN_MS_MAX of wall time. It says how many records it read and, per
partition, the offset to continue from. A partition its Consumer could not read
(its fetches failing with a retriable error: object storage unreachable, a shard
restarting; or unanswered far past the fetch wait) is named with that error
(``BrowseResult.failing``), never shown as one without records; a permalink to a
record there raises that error (a 503), not RecordNotFoundError (a 404). Filters are byte substrings of the key
or the value (UTF-8 of what was typed, at most CONSOLE_FILTER_BYTES_MAX).
"""

from __future__ import annotations

import heapq
import codecs
import json
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from plinth import limits, topics
from plinth.client.admin import Admin
from plinth.client.console import broker_calls, visible_text
from plinth.client.consumer import Consumer
from plinth.errors import (InputTooLongError, OffsetOutOfRangeError, PartitionOutOfRangeError,
                           PlinthError, PlinthTimeoutError, RecordNotFoundError,
                           UnavailableError)
from plinth.format.record_batch import ConsumerRecord

START_MODES = ("newest", "oldest", "offset", "timestamp")
VIEWS = ("text", "json", "hex")
# The calendar's bounds for a timestamp typed into a form: year 1970 to 9999, so
# that any accepted one prints as an ISO date (and fits the wire's Int64).
TIMESTAMP_MS_MAX = 253_402_300_799_999
# An offset is an Int64 on the wire.
OFFSET_MAX = 2**63 - 1
_POSITION = re.compile(r"^(\d{1,10}):(\d{1,19})$")


@dataclass(frozen=True)
class BrowseQuery:
    """One browse request, checked (``parse_browse_query``)."""

    topic: str
    partition: int | None = None            # None: every partition of the topic
    start: str = "newest"
    offset: int | None = None               # start == "offset"
    timestamp_ms: int | None = None         # start == "timestamp"
    positions: dict[int, int] | None = None  # "scan more": continue exactly here
    key_filter: bytes = b""
    value_filter: bytes = b""
    limit: int = limits.CONSOLE_PAGE_RECORDS_DEFAULT
    scan_max: int = limits.CONSOLE_SCAN_RECORDS_DEFAULT
    view: str = "text"

    def matches(self, record: ConsumerRecord) -> bool:
        return ((not self.key_filter or (record.key is not None and self.key_filter in record.key))
                and (not self.value_filter
                     or (record.value is not None and self.value_filter in record.value)))


@dataclass
class BrowseResult:
    """What one request read. ``positions``: per partition, the offset a "scan more"
    continues from; ``ends``: the end offsets the request read up to."""

    query: BrowseQuery
    records: list[ConsumerRecord]
    scanned: int
    positions: dict[int, int]
    ends: dict[int, int]
    log_starts: dict[int, int]
    stopped: str                      # "end", "scan", "page" or "time"
    partitions: int = 0               # the topic's partition count
    scan_ms: float = 0.0
    # The partitions it could not read to their ends because their fetches failed,
    # each with that error (``unreadable``): their records were not read, not absent.
    failing: dict[int, Exception] = field(default_factory=dict)

    @property
    def more(self) -> bool:
        """Whether records the request did not read remain before its end offsets."""
        return any(self.positions[p] < self.ends[p] for p in self.positions)

    @property
    def unreadable(self) -> bool:
        """Nothing was read and some partition's fetches failed: the page is a 503,
        not "no records"."""
        return bool(self.failing) and self.scanned == 0


@dataclass(frozen=True)
class Shown:
    """A key, value or header as a page shows it: ``text`` in the view asked, the
    ``size_bytes`` of the whole, whether it was cut to a limit, and a note (e.g.
    "not JSON: ...") when the view could not be applied."""

    text: str
    size_bytes: int
    truncated: bool = False
    note: str = ""
    is_null: bool = False


@dataclass
class TopicsPage:
    names: list[str] = field(default_factory=list)
    more: bool = False


# --- Parsing what a form or link sends --------------------------------------------

def parse_browse_query(topic: str, params) -> BrowseQuery:
    """A BrowseQuery from a query string's ``params`` (a mapping of str to str; empty
    values count as absent). InvalidTopicError, InputTooLongError or ValueError
    naming the field, what was given and what is allowed."""
    topics.validate_topic_name(topic)
    start = choice_param(params, "start", START_MODES, "newest")
    offset = timestamp_ms = None
    if start == "offset":
        offset = int_param(params, "offset", 0, OFFSET_MAX, None)
        if offset is None:
            raise ValueError("start=offset needs an offset: a whole number, 0 or more")
    if start == "timestamp":
        timestamp_ms = parse_timestamp(params.get("timestamp", ""))
    return BrowseQuery(
        topic=topic, partition=partition_param(params.get("partition", "")), start=start,
        offset=offset, timestamp_ms=timestamp_ms, positions=parse_positions(params.get("at", "")),
        key_filter=filter_param(params, "key"), value_filter=filter_param(params, "value"),
        limit=int_param(params, "limit", 1, limits.CONSOLE_PAGE_RECORDS_MAX,
                        limits.CONSOLE_PAGE_RECORDS_DEFAULT),
        scan_max=int_param(params, "scan", 1, limits.CONSOLE_SCAN_RECORDS_MAX,
                           limits.CONSOLE_SCAN_RECORDS_DEFAULT),
        view=choice_param(params, "view", VIEWS, "text"))


def choice_param(params, name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, "") or default
    if value not in choices:
        raise ValueError(f"{name}={value[:40]!r} is not one of {', '.join(choices)}")
    return value


def int_param(params, name: str, minimum: int, maximum: int, default: int | None) -> int | None:
    """The whole number in ``params[name]``, within minimum..maximum; ``default`` if absent."""
    text = (params.get(name, "") or "").strip()
    if not text:
        return default
    return parse_int(name, text, minimum, maximum)


def parse_int(name: str, text: str, minimum: int, maximum: int) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{name} {text[:40]!r} is not a whole number")
    # More than 20 digits is past any bound here; int() of a long one costs time.
    if len(text) > 20 or not minimum <= int(text) <= maximum:
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} digits)"
        raise ValueError(f"{name} {shown} is out of range: it must be {minimum} to {maximum}")
    return int(text)


def partition_param(text: str) -> int | None:
    """None for "" or "all", else the partition number (checked against the topic later)."""
    text = (text or "").strip()
    if text in ("", "all"):
        return None
    return parse_int("partition", text, 0, limits.CONSOLE_BROWSE_POSITIONS_MAX)


def filter_param(params, name: str) -> bytes:
    data = (params.get(name, "") or "").encode()
    if len(data) > limits.CONSOLE_FILTER_BYTES_MAX:
        raise InputTooLongError(f"the {name} filter is {len(data)} bytes; at most "
                                f"{limits.CONSOLE_FILTER_BYTES_MAX} bytes are allowed")
    return data


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch from a whole number of ms, or from an ISO 8601 date
    and time (``2026-12-03T15:37:28.123Z``; without a zone: UTC). ValueError otherwise."""
    text = (text or "").strip()
    if not text:
        raise ValueError("start=timestamp needs a timestamp: ms since the epoch, or an ISO "
                         "8601 time such as 2026-12-03T15:37:28Z")
    if re.fullmatch(r"-?\d+", text):
        return parse_int("timestamp", text[:25], 0, TIMESTAMP_MS_MAX)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        value = round(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"timestamp {text[:60]!r} is neither ms since the epoch nor an ISO 8601 "
                         f"time such as 2026-12-03T15:37:28Z") from None
    if not 0 <= value <= TIMESTAMP_MS_MAX:
        raise ValueError(f"timestamp {text[:60]!r} is out of range: it must be from 1970 to 9999")
    return value


def parse_positions(text: str) -> dict[int, int] | None:
    """"0:120,1:98" (partition:offset, as ``format_positions`` writes them) or None."""
    text = (text or "").strip()
    if not text:
        return None
    items = text.split(",")
    if len(items) > limits.CONSOLE_BROWSE_POSITIONS_MAX:
        raise InputTooLongError(f"at= carries {len(items)} positions; at most "
                                f"{limits.CONSOLE_BROWSE_POSITIONS_MAX} are allowed")
    positions = {}
    for item in items:
        match = _POSITION.match(item.strip())
        if match is None or int(match[2]) > OFFSET_MAX:
            raise ValueError(f"at= position {item[:40]!r} is not partition:offset "
                             f"(whole numbers, e.g. 0:120)")
        positions[int(match[1])] = int(match[2])
    return positions


def format_positions(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


# --- Reading ------------------------------------------------------------------------

def open_consumer(broker) -> Consumer:
    """A Consumer for one request: no group, small fetches, short waits at the log end."""
    # Its requests wait what is left of the page's deadline, not a request timeout each.
    return Consumer(broker=broker, auto_offset_reset="earliest",
                    fetch_max_bytes=limits.CONSOLE_FETCH_BYTES,
                    fetch_max_wait_ms=limits.CONSOLE_FETCH_WAIT_MS,
                    request_timeout_ms=max(1.0, broker_calls.remaining_ms()))


def browse(admin: Admin, consumer: Consumer, query: BrowseQuery) -> BrowseResult:
    """Read what ``query`` asks with ``consumer`` (its assignment is replaced)."""
    count = admin.partition_count(query.topic)      # UnknownTopicError for an unknown topic
    chosen = _chosen_partitions(query, count)
    log_starts, ends = {}, {}
    for partition in chosen:
        info = admin.list_offsets(query.topic, partition)
        log_starts[partition], ends[partition] = info.start_offset, info.end_offset
    starts = _start_positions(consumer, query, log_starts, ends)
    began = time.monotonic()
    records, scanned, positions, stopped = _scan(consumer, query, starts, ends)
    scan_ms = (time.monotonic() - began) * 1000
    if query.start == "newest" and query.positions is None:
        records = sorted(records, key=_time_order, reverse=True)[:query.limit]
    # Only those it left unread: one that failed and then read to its end is whole.
    failing = {p: unreadable(admin, query.topic, p, positions[p], error)
               for p, error in sorted(fetch_failures(consumer, query.topic).items())
               if p in positions and positions[p] < ends[p]}
    return BrowseResult(query, records, scanned, positions, ends, log_starts, stopped,
                        partitions=count, scan_ms=scan_ms, failing=failing)


def fetch_failures(consumer: Consumer, topic: str) -> dict[int, Exception]:
    """``topic``'s partitions whose fetches are failing now, by partition, each with the
    error its last fetch got (a retriable one, which the Consumer retries and never
    raises: object storage unreachable, a shard restarting), or, for a fetch long
    unanswered, a PlinthTimeoutError saying how long. The Consumer's thread (the
    request's) only."""
    failing: dict[int, Exception] = {
        tp.partition: PlinthTimeoutError(
            f"no answer for {late.waited_ms:.0f} ms to the fetch at offset {late.offset} "
            f"(a shard answers within {consumer.fetch_max_wait_ms} ms even with no record)")
        for tp, late in consumer.overdue_fetches().items() if tp.topic == topic}
    failing.update((tp.partition, error) for tp, error in consumer.fetch_errors().items()
                   if tp.topic == topic)
    return failing


def unreadable(admin: Admin, topic: str, partition: int, offset: int,
               error: Exception) -> PlinthError:
    """An error of ``error``'s class (its page status: 503) naming the partition, the
    offset its records could not be read from, where its remote offsets are (when
    tiered: the store is the usual cause) and ``error`` itself."""
    message = (f"{topic}-{partition}: the records from offset {offset} could not be read "
               f"(not: there are none){_remote_range(admin, topic, partition)}: "
               f"{type(error).__name__}: {error}")
    try:
        return type(error)(message)
    except TypeError:          # an error class that takes more than a message
        return UnavailableError(message)


def _remote_range(admin: Admin, topic: str, partition: int) -> str:
    """", offsets 0 to 39080 are in object storage" for a tiered partition; "" when
    it has none there, or the broker does not say (a key that may not describe it)."""
    try:
        info = admin.describe_topic(topic).partition_info[partition]
    except (PlinthError, IndexError):
        return ""
    if not info.has_remote:
        return ""
    return (f"; offsets {offset_range(info.remote_start_offset, info.remote_end_offset)} "
            f"are in object storage, from {info.local_start_offset} on the shard's disk")


def offset_range(start: int, end: int) -> str:
    """The offsets ``start`` up to ``end`` (exclusive, as a log's end offset is), as
    the pages show a range: both ends held, "0 to 39080"; "none" when empty."""
    return f"{start} to {end - 1}" if end > start else "none"


def _chosen_partitions(query: BrowseQuery, count: int) -> list[int]:
    asked = [query.partition] if query.partition is not None else []
    asked += sorted(query.positions or {})
    for partition in asked:
        if partition >= count:
            raise PartitionOutOfRangeError(
                f"topic {query.topic!r} has {count} partitions (0 to {count - 1}); "
                f"there is no partition {partition}")
    if query.partition is not None:
        return [query.partition]
    return list(range(count))


def _start_positions(consumer: Consumer, query: BrowseQuery, log_starts: dict[int, int],
                     ends: dict[int, int]) -> dict[int, int]:
    if query.positions is not None:
        return {p: min(max(query.positions.get(p, log_starts[p]), log_starts[p]), ends[p])
                for p in log_starts}
    if query.start == "oldest":
        return dict(log_starts)
    if query.start == "newest":
        # Each partition's last records, as many as the scan bound lets every one
        # be read to its end: the newest of the topic are then all among them.
        per_partition = max(1, min(query.limit, query.scan_max // len(log_starts)))
        return {p: max(log_starts[p], ends[p] - per_partition) for p in log_starts}
    if query.start == "offset":
        if query.partition is not None:
            _check_offset(query.topic, query.partition, query.offset,
                          log_starts[query.partition], ends[query.partition])
        return {p: min(max(query.offset, log_starts[p]), ends[p]) for p in log_starts}
    found = consumer.offsets_for_times({(query.topic, p): query.timestamp_ms for p in log_starts})
    return {tp.partition: ends[tp.partition] if hit is None else hit.offset
            for tp, hit in found.items()}


def _check_offset(topic: str, partition: int, offset: int, start: int, end: int) -> None:
    """An offset to start from lies within start..end (end: nothing yet, wait for it)."""
    if not start <= offset <= end:
        raise OffsetOutOfRangeError(
            f"offset {offset} is out of range for {topic}-{partition}: it holds offsets "
            f"{start} to {end - 1}" if end > start else
            f"offset {offset} is out of range for {topic}-{partition}: it holds no records "
            f"(its next offset is {end})")


def _scan(consumer: Consumer, query: BrowseQuery, starts: dict[int, int],
          ends: dict[int, int]) -> tuple[list[ConsumerRecord], int, dict[int, int], str]:
    """Read from ``starts`` up to ``ends`` within the bounds; returns the matching
    records, how many were read, where each partition stopped, and why."""
    positions = dict(starts)
    active = {p for p in positions if positions[p] < ends[p]}
    consumer.assign([(query.topic, p) for p in sorted(active)])
    for partition in active:
        consumer.seek(query.topic, partition, positions[partition])
    page_stops = query.start != "newest" or query.positions is not None
    # The scan's bound, within what is left of the page's deadline.
    scan_ms = min(limits.CONSOLE_SCAN_MS_MAX, broker_calls.remaining_ms())
    deadline = time.monotonic() + scan_ms / 1000
    found: list[ConsumerRecord] = []
    scanned = 0
    while True:
        if not active:
            return found, scanned, positions, "end"
        if scanned >= query.scan_max:
            return found, scanned, positions, "scan"
        if page_stops and len(found) >= query.limit:
            return found, scanned, positions, "page"
        remaining_ms = (deadline - time.monotonic()) * 1000
        if remaining_ms <= 0:
            return found, scanned, positions, "time"
        polled = consumer.poll(timeout_ms=remaining_ms, max_records=query.scan_max - scanned)
        for record in heapq.merge(*polled.values(), key=_time_order):
            p = record.partition
            if p not in active or record.offset < positions[p]:
                continue        # past the end, or before the seek (a batch read whole)
            if record.offset >= ends[p] or scanned >= query.scan_max or \
                    (page_stops and len(found) >= query.limit):
                continue        # read, but beyond what this request may take
            scanned += 1
            positions[p] = record.offset + 1
            if query.matches(record):
                found.append(record)
        active = {p for p in active if positions[p] < ends[p]}


def _time_order(record: ConsumerRecord) -> tuple[int, int, int]:
    return record.timestamp_ms, record.partition, record.offset


def read_record(admin: Admin, consumer: Consumer, topic: str, partition: int,
                offset: int) -> ConsumerRecord:
    """The record at ``offset``; PartitionOutOfRangeError, or RecordNotFoundError
    naming the partition's range if there is none there."""
    topics.validate_topic_name(topic)
    count = admin.partition_count(topic)
    if partition >= count:
        raise PartitionOutOfRangeError(f"topic {topic!r} has {count} partitions (0 to "
                                       f"{count - 1}); there is no partition {partition}")
    info = admin.list_offsets(topic, partition)
    if not info.start_offset <= offset < info.end_offset:
        raise _no_record(topic, partition, offset, info.start_offset, info.end_offset)
    query = BrowseQuery(topic, partition, "offset", offset, limit=1, scan_max=1)
    records, _, _, stopped = _scan(consumer, query, {partition: offset},
                                   {partition: info.end_offset})
    if not records and stopped == "time":
        # Not read, which is not "not there": say why, never a 404 for a record that is.
        failed = fetch_failures(consumer, topic).get(partition) or PlinthTimeoutError(
            f"offset {offset} was not read within the scan's {limits.CONSOLE_SCAN_MS_MAX} ms")
        raise unreadable(admin, topic, partition, offset, failed)
    if not records or records[0].offset != offset:
        raise _no_record(topic, partition, offset, info.start_offset, info.end_offset,
                         " (with gaps)")
    return records[0]


def _no_record(topic: str, partition: int, offset: int, start: int, end: int,
               gaps: str = "") -> RecordNotFoundError:
    held = (f"its offsets run from {start} to {end - 1}{gaps}" if end > start
            else f"it holds no records (its next offset is {end})")
    return RecordNotFoundError(f"no record at offset {offset} of {topic}-{partition}: {held}")


def topics_page(admin: Admin, prefix: str = "", after: str = "",
                limit: int = limits.CONSOLE_LIST_PAGE_DEFAULT) -> TopicsPage:
    """One page of topic names starting with ``prefix`` and after ``after``: the
    broker's paged listing where it has one (``Admin.list_topics_page``), else the
    whole list paged here."""
    if len(prefix.encode()) > limits.TOPIC_NAME_BYTES_MAX:
        raise InputTooLongError(f"the topic search is {len(prefix.encode())} bytes; a topic "
                                f"name is at most {limits.TOPIC_NAME_BYTES_MAX}")
    if hasattr(admin, "list_topics_page"):
        page = admin.list_topics_page(prefix=prefix, after=after, limit=limit)
        return TopicsPage(list(page.names), bool(page.more))
    names = [n for n in admin.list_topics() if n.startswith(prefix) and n > after]
    return TopicsPage(names[:limit], len(names) > limit)


# --- Showing --------------------------------------------------------------------------

def show(data: bytes | None, view: str, shown_bytes_max: int) -> Shown:
    """``data`` as ``view`` (text, json or hex), cut to ``shown_bytes_max`` bytes; bytes
    that are not UTF-8 as hex whatever the view, with a note saying so."""
    if data is None:
        return Shown("null", 0, is_null=True)
    size = len(data)
    cut = data[:shown_bytes_max]
    truncated = size > shown_bytes_max
    if view == "hex":
        return Shown(hex_dump(cut), size, truncated)
    try:
        # Incremental: a cut through a multi-byte character at the end is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(cut, final=not truncated)
    except UnicodeDecodeError as exc:
        # Binary (Avro, Protobuf, compressed): replacement characters would hide it
        return Shown(hex_dump(cut), size, truncated,
                     note=f"not UTF-8 (byte {exc.start}): shown as hex")
    if view != "json":
        return _marking_hidden(Shown(text, size, truncated))
    if truncated:
        return _marking_hidden(Shown(text, size, truncated, note=(
            f"not shown as JSON: only the first {shown_bytes_max} of {size} bytes are shown")))
    try:
        return _marking_hidden(Shown(json.dumps(json.loads(data), indent=2, ensure_ascii=False),
                                     size))
    except (ValueError, RecursionError) as exc:
        return _marking_hidden(Shown(text, size, note=f"not JSON: {exc}"))


def _marking_hidden(shown: Shown) -> Shown:
    """``shown`` with a note counting its control and format characters, which the
    page shows as escapes (visible_text.py): "\\u202e" in a value is then known to
    be one character, not six."""
    count = visible_text.hidden_count(shown.text)
    if not count:
        return shown
    note = (f"{count} control or format character{'s' if count > 1 else ''} (such as "
            f"bidi overrides) shown as \\u escapes")
    return replace(shown, note=f"{shown.note}; {note}" if shown.note else note)


def hex_dump(data: bytes) -> str:
    """16 bytes a line: the position, the bytes in hex, and them as ASCII ('.' if not)."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {hexes:<47}  |{ascii_}|")
    return "\n".join(lines)


def iso_time(timestamp_ms: int) -> str:
    """``2026-12-03T15:37:28.123Z``; an unknown (negative) time as "-"."""
    if timestamp_ms is None or timestamp_ms < 0 or timestamp_ms > TIMESTAMP_MS_MAX:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["BrowseQuery", "BrowseResult", "Shown", "TopicsPage", "START_MODES", "VIEWS",
           "parse_browse_query", "parse_timestamp", "parse_positions", "format_positions",
           "open_consumer", "browse", "read_record", "fetch_failures", "unreadable",
           "offset_range", "topics_page", "show", "hex_dump",
           "iso_time"]
