"""One page of the topic list, with each topic's partitions, size and rate.

Called from the topic pages (a pool thread). Uses ``Admin.list_topics_page`` and
``Admin.topic_stats`` where the broker's Admin has them (issue 16's catalog
work), else pages ``Admin.list_topics()`` in memory; either way the per-topic
figures are asked for the names on the page only, at most
limits.CONSOLE_TOPICS_PAGE_MAX of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plinth import limits, protocol


@dataclass
class TopicRow:
    name: str
    partitions: int | None = None
    size_bytes: int | None = None
    remote_bytes: int | None = None
    # Partitions whose remote log their shard has not listed yet: remote_bytes may
    # lack their segments (shown as "?")
    remote_not_listed: int = 0
    records_in_per_s: float | None = None
    bytes_in_per_s: float | None = None
    records_out_per_s: float | None = None   # once the broker reports fetched rates
    bytes_out_per_s: float | None = None
    offline: int = 0
    error: str = ""   # why its figures are missing (e.g. not permitted)


@dataclass
class TopicPage:
    prefix: str
    after: str
    limit: int
    rows: list[TopicRow] = field(default_factory=list)
    more: bool = False

    @property
    def has_rates_out(self) -> bool:
        return any(r.records_out_per_s is not None for r in self.rows)

    @property
    def missing(self) -> str:
        """What did not answer for this page's rows, for a note above them ("" if all did)."""
        errors = [r.error for r in self.rows if r.error]
        return f"{len(errors)} of {len(self.rows)} topics have no details: {errors[0]}" if errors else ""

    @property
    def next_after(self) -> str:
        return self.rows[-1].name if self.more and self.rows else ""


def check_page_args(prefix: str, after: str, limit: int) -> None:
    """ValueError naming the argument and its bound, for the page to show."""
    for what, text in (("search", prefix), ("after", after)):
        if len(text) > limits.CONSOLE_SEARCH_CHARS_MAX:
            raise ValueError(f"{what} is {len(text)} characters; at most "
                             f"{limits.CONSOLE_SEARCH_CHARS_MAX}")
    if not 1 <= limit <= limits.CONSOLE_TOPICS_PAGE_MAX:
        raise ValueError(f"limit {limit} is outside 1..{limits.CONSOLE_TOPICS_PAGE_MAX}")


def topic_names(admin, prefix: str, after: str, limit: int) -> tuple[list[str], bool]:
    """Up to ``limit`` sorted names starting with ``prefix`` and after ``after``, and
    whether there are more."""
    paged = getattr(admin, "list_topics_page", None)
    if paged is not None:
        page = paged(prefix=prefix, after=after, limit=limit)
        return list(page.names), bool(page.more)
    names = [n for n in admin.list_topics() if n.startswith(prefix) and n > after]
    return names[:limit], len(names) > limit


def topic_page(admin, prefix: str = "", after: str = "",
               limit: int = limits.CONSOLE_TOPICS_PAGE_DEFAULT) -> TopicPage:
    check_page_args(prefix, after, limit)
    names, more = topic_names(admin, prefix, after, limit)
    page = TopicPage(prefix, after, limit, [TopicRow(n) for n in names], more)
    _add_descriptions(admin, page.rows)
    _add_stats(admin, page.rows)
    return page


def _add_descriptions(admin, rows: list[TopicRow]) -> None:
    from plinth.errors import BrokerError, PlinthTimeoutError

    for row in rows:
        try:
            info = admin.describe_topic(row.name)
        # Deleted meanwhile, not the console key's to see, or no answer within the
        # page's deadline: the row says so, the others are shown.
        except (BrokerError, PlinthTimeoutError) as exc:
            row.error = f"{type(exc).__name__}: {exc}"
            continue
        row.partitions = info.partitions
        parts = info.partition_info
        row.size_bytes = sum(p.size_bytes for p in parts)
        row.remote_bytes = sum(p.remote_bytes for p in parts)
        row.remote_not_listed = sum(1 for p in parts if p.remote_not_listed)
        row.offline = sum(1 for p in parts if not p.shard)


def _add_stats(admin, rows: list[TopicRow]) -> None:
    from plinth.errors import BrokerError, PlinthTimeoutError

    stats_of = getattr(admin, "topic_stats", None)
    if stats_of is None or not rows:
        return
    step = getattr(limits, "ADMIN_TOPIC_STATS_NAMES_MAX", limits.CONSOLE_TOPICS_PAGE_MAX)
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        try:
            stats = stats_of([r.name for r in chunk])
        except (BrokerError, PlinthTimeoutError) as exc:   # the rows show what else came
            for row in chunk:
                row.error = row.error or f"no rates: {type(exc).__name__}: {exc}"
            continue
        for row in chunk:
            s = stats.get(row.name)
            if s is not None:
                row.records_in_per_s = getattr(s, "records_in_per_s", None)
                row.bytes_in_per_s = getattr(s, "bytes_in_per_s", None)
                row.records_out_per_s = getattr(s, "records_out_per_s", None)
                row.bytes_out_per_s = getattr(s, "bytes_out_per_s", None)
                row.size_bytes = getattr(s, "size_bytes", row.size_bytes)


def has_remote(p: protocol.PartitionInfo) -> bool:
    return p.remote_start_offset != protocol.NO_REMOTE_OFFSET
