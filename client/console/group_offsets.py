"""The consumer-group pages' logic: a page of the group list with each group's
state, a group's lag per partition, the lag history behind its chart, and offset
resets planned (a dry run) and applied. No web code: pages_groups.py calls these.

Runs in the console's process, on whichever thread serves the request, over the
Admin it is given (the console's is shared and serializes its calls). Lag is
computed only for the group a page shows: when the page is drawn, then every
CONSOLE_LAG_POLL_S while its live stream is open (lag_watch.py); nothing runs
while nobody watches.

A reset is the CLI's (``plinth group reset``, plinth/cli_groups.py) with a dry run
in front: ``plan_reset`` works out, per partition, the committed offset now and the
one it would become; the page shows that plan and carries it, as text
(``format_plan``: "topic:partition=offset,..."), to the apply, which sets exactly
those offsets (``apply_plan``) if the dry run's token binds them (``plan_triples``,
pages_groups.py); a plan naming a partition twice is refused. The group's coordinator refuses the apply while the
group has members, with GroupNotEmptyError: the same refusal, in the same words, as
the CLI's. A new offset outside a partition's start..end is clamped into it (as
Kafka's reset tool does), and the plan says so.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from plinth import limits, protocol, topics
from plinth.client.admin import Admin
from plinth.client.console.browse import parse_int, parse_timestamp
from plinth.errors import (InputTooLongError, PlinthTimeoutError, UnavailableError,
                           UnknownGroupError)

RESET_TARGETS = ("earliest", "latest", "timestamp", "offset")
_PLAN_ITEM = re.compile(r"^([A-Za-z0-9._-]+):(\d{1,10})=(\d{1,19})$")


@dataclass
class GroupsPage:
    names: list[str] = field(default_factory=list)
    more: bool = False
    unanswered: list[str] = field(default_factory=list)   # shards whose groups are missing


@dataclass(frozen=True)
class GroupSummary:
    name: str
    state: str               # Kafka's state name for classic groups; Stable or Empty else
    members: int
    topics: int              # topics it has members or committed offsets for
    error: str = ""          # why its state is unknown (no answer within the deadline)


@dataclass(frozen=True)
class LagRow:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    member: str               # the member that owns the partition, "" if none


@dataclass
class GroupDetail:
    info: protocol.GroupInfo
    state: str
    rows: list[LagRow]

    @property
    def total_lag(self) -> int:
        return total_lag(self.rows)


@dataclass(frozen=True)
class ResetRow:
    topic: str
    partition: int
    committed: int | None     # now
    new: int
    clamped: bool             # the target lay outside start..end and was moved into it


@dataclass
class ResetPlan:
    group: str
    target: str               # "earliest", "latest", "timestamp" or "offset"
    target_value: int | None
    members: int              # active members now: the apply will be refused if any
    rows: list[ResetRow]

    @property
    def offsets(self) -> dict[tuple[str, int], int]:
        return {(row.topic, row.partition): row.new for row in self.rows}


# --- The list ----------------------------------------------------------------------

def groups_page(admin: Admin, prefix: str = "", after: str = "",
                limit: int = limits.CONSOLE_LIST_PAGE_DEFAULT) -> GroupsPage:
    """Group names starting with ``prefix`` and after ``after``, sorted, at most
    ``limit``: the broker's paged listing where it has one (Admin.list_groups_page),
    else the whole list paged here."""
    if len(prefix.encode()) > limits.GROUP_NAME_BYTES_MAX:
        raise InputTooLongError(f"the group search is {len(prefix.encode())} bytes; a group "
                                f"name is at most {limits.GROUP_NAME_BYTES_MAX}")
    if not 1 <= limit <= limits.CONSOLE_LIST_PAGE_MAX:
        raise ValueError(f"limit {limit} is out of range: it must be 1 to "
                         f"{limits.CONSOLE_LIST_PAGE_MAX}")
    if hasattr(admin, "list_groups_page"):
        page = admin.list_groups_page(prefix=prefix, after=after, limit=limit)
        return GroupsPage(list(page.names), bool(page.more), list(page.unanswered))
    names = sorted(n for n in admin.list_groups() if n.startswith(prefix) and n > after)
    return GroupsPage(names[:limit], len(names) > limit)


def group_state(info: protocol.GroupInfo) -> str:
    return info.state or ("Stable" if info.members else "Empty")


def group_topics(info: protocol.GroupInfo) -> set[str]:
    return {t for t, _ in info.committed} | {t for m in info.members for t in m.topics}


def summarize(admin: Admin, names: list[str]) -> list[GroupSummary]:
    """State and member count of each group named: one describeGroup each, so only
    for a page of them."""
    out = []
    for name in names:
        try:
            info = admin.describe_group(name)
        except UnknownGroupError:      # gone since it was listed
            out.append(GroupSummary(name, "Gone", 0, 0))
            continue
        except (PlinthTimeoutError, UnavailableError) as exc:
            # No answer within the page's deadline: this row says so, the rest are shown.
            out.append(GroupSummary(name, "No answer", 0, 0, f"{type(exc).__name__}: {exc}"))
            continue
        out.append(GroupSummary(name, group_state(info), len(info.members),
                                len(group_topics(info))))
    return out


# --- One group -------------------------------------------------------------------------

def group_detail(admin: Admin, group: str) -> GroupDetail:
    """Members, and per partition the committed offset, end offset, lag and owner."""
    info = admin.describe_group(group)
    owner = {tp: m.member_id for m in info.members for tp in m.assignment}
    rows = [LagRow(t, p, committed, end, lag, owner.get((t, p), ""))
            for t, p, committed, end, lag in admin.group_lag(group)]
    return GroupDetail(info, group_state(info), rows)


def total_lag(rows) -> int:
    """The lag summed over the partitions that have a committed offset."""
    return sum(row.lag for row in rows if row.lag is not None)


class LagHistory:
    """Recent (time_s, total lag) samples of the groups being watched: at most
    CONSOLE_LAG_SAMPLES_MAX per group, for at most CONSOLE_LAG_GROUPS_MAX groups (the
    least recently sampled is forgotten first). Any thread."""

    def __init__(self, samples_max: int = limits.CONSOLE_LAG_SAMPLES_MAX,
                 groups_max: int = limits.CONSOLE_LAG_GROUPS_MAX, clock=time.monotonic):
        self.now_s = clock               # the samples' time, in seconds
        self._samples_max = samples_max
        self._groups_max = groups_max
        self._groups: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, group: str, time_s: float, lag: int) -> list[tuple[float, int]]:
        """Record a sample; returns the group's samples, oldest first."""
        with self._lock:
            samples = self._groups.pop(group, None) or deque(maxlen=self._samples_max)
            samples.append((time_s, lag))
            self._groups[group] = samples
            while len(self._groups) > self._groups_max:
                self._groups.popitem(last=False)
            return list(samples)

    def samples(self, group: str) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._groups.get(group, ()))

    def fresh(self, group: str, now_s: float, age_s_max: float) -> list[tuple[float, int]] | None:
        """The group's samples if the newest is at most ``age_s_max`` old, else None: two
        browsers watching one group share its samples instead of doubling its lag queries."""
        samples = self.samples(group)
        if samples and now_s - samples[-1][0] <= age_s_max:
            return samples
        return None


@dataclass(frozen=True)
class ChartGeometry:
    """A line chart's shape in a ``width`` x ``height`` box: the polyline's points
    ("x,y x,y ...") and the y axis' top value; the template draws it as SVG."""

    points: str
    y_max: int
    window_s: float
    width: int
    height: int
    last: int | None          # the newest sample's lag
    last_xy: tuple[float, float] | None = None   # where it is drawn (a dot)


def chart_geometry(samples: list[tuple[float, int]], width: int = 800,
                   height: int = 150) -> ChartGeometry:
    """The newest sample at the right edge, the oldest at the left; y from 0 up to a
    rounded-up maximum (1, 2 or 5 times a power of ten)."""
    if not samples:
        return ChartGeometry("", 1, 0.0, width, height, None)
    y_max = nice_ceiling(max(lag for _, lag in samples))
    first_s, last_s = samples[0][0], samples[-1][0]
    span_s = max(last_s - first_s, 1e-9)
    points = []
    for time_s, lag in samples:
        x = width if len(samples) == 1 else (time_s - first_s) / span_s * width
        points.append((x, height - lag / y_max * height))
    return ChartGeometry(" ".join(f"{x:.1f},{y:.1f}" for x, y in points), y_max,
                         last_s - first_s, width, height, samples[-1][1], points[-1])


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (1 for 0)."""
    if value <= 1:
        return 1
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10


# --- Offset reset ------------------------------------------------------------------------

def parse_reset(params) -> tuple[str | None, str, int | None]:
    """(topic or None for all the group's topics, target, its value) from a form's
    ``params``; ValueError naming what is wrong."""
    topic = (params.get("topic", "") or "").strip() or None
    if topic is not None:
        topics.validate_topic_name(topic)
    target = params.get("to", "") or ""
    if target not in RESET_TARGETS:
        raise ValueError(f"to={target[:40]!r} is not one of {', '.join(RESET_TARGETS)}")
    value = None
    if target == "timestamp":
        value = parse_timestamp(params.get("timestamp", ""))
    elif target == "offset":
        text = (params.get("offset", "") or "").strip()
        if not text:
            raise ValueError("to=offset needs an offset: a whole number, 0 or more")
        value = parse_int("offset", text, 0, 2**63 - 1)
    return topic, target, value


def plan_reset(admin: Admin, group: str, topic: str | None, target: str,
               value: int | None) -> ResetPlan:
    """What a reset of ``topic`` (None: every topic the group has members or committed
    offsets for) to ``target`` would set, partition by partition. Reads only."""
    info = admin.describe_group(group)
    chosen = [topic] if topic is not None else sorted(group_topics(info))
    if not chosen:
        raise ValueError(f"group {group!r} has no topics (no members, no committed offsets): "
                         f"name the topic to reset")
    rows = []
    for name in chosen:
        for partition in range(admin.partition_count(name)):
            if len(rows) >= limits.CONSOLE_RESET_PARTITIONS_MAX:
                raise InputTooLongError(f"the reset of group {group!r} would move more than "
                                        f"{limits.CONSOLE_RESET_PARTITIONS_MAX} partitions")
            new, clamped = _new_offset(admin, name, partition, target, value)
            rows.append(ResetRow(name, partition, info.committed.get((name, partition)),
                                 new, clamped))
    return ResetPlan(group, target, value, len(info.members), rows)


def _new_offset(admin: Admin, topic: str, partition: int, target: str,
                value: int | None) -> tuple[int, bool]:
    if target == "timestamp":
        info = admin.list_offsets(topic, partition, value)
        if info.found_offset == protocol.OFFSET_NONE:
            return info.end_offset, False      # nothing stamped at or after: the end
        return info.found_offset, False
    info = admin.list_offsets(topic, partition, require_listed=target == "earliest")
    if target == "earliest":
        return info.start_offset, False
    if target == "latest":
        return info.end_offset, False
    new = min(max(value, info.start_offset), info.end_offset)
    return new, new != value


def format_plan(offsets: dict[tuple[str, int], int]) -> str:
    """"topic:partition=offset,..." (topic names hold no ':', '=' or ',')."""
    return ",".join(f"{t}:{p}={o}" for (t, p), o in sorted(offsets.items()))


def parse_plan(text: str) -> dict[tuple[str, int], int]:
    """The offsets ``format_plan`` wrote; ValueError naming an item that is not one."""
    items = [item for item in (text or "").split(",") if item.strip()]
    if not items:
        raise ValueError("the reset plan is empty: start from the dry run")
    if len(items) > limits.CONSOLE_RESET_PARTITIONS_MAX:
        raise InputTooLongError(f"the reset plan has {len(items)} partitions; at most "
                                f"{limits.CONSOLE_RESET_PARTITIONS_MAX} are allowed")
    offsets = {}
    for item in items:
        match = _PLAN_ITEM.match(item.strip())
        if match is None or int(match[3]) > 2**63 - 1:
            raise ValueError(f"reset plan item {item[:80]!r} is not topic:partition=offset")
        topics.validate_topic_name(match[1])
        key = (match[1], int(match[2]))
        # Refused, not the last one kept: a plan is one offset per partition, and
        # which of two a reader takes is not something to leave to it.
        if key in offsets:
            raise ValueError(f"the reset plan names {key[0]}:{key[1]} twice "
                             f"({offsets[key]} and {match[3]})")
        offsets[key] = int(match[3])
    return offsets


def plan_triples(offsets: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    """The plan as its confirmation token binds it: (topic, partition, offset), sorted."""
    return [(t, p, o) for (t, p), o in sorted(offsets.items())]


def apply_plan(admin: Admin, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Set the group's committed offsets to ``offsets``; the coordinator refuses
    (GroupNotEmptyError) while the group has members, as for ``plinth group reset``."""
    admin.reset_group_offsets(group, offsets)
