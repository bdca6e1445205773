"""Pages of names: one page of a sorted list, and one page merged from several.

Any process may import this module (shared ground): a shard cuts a page of the
group names it coordinates (``page_of``), the controller cuts a page of its
topics and merges the shards' pages of groups (``merge_pages``), and the Admin
client checks a page's arguments before sending (``check_page_args``).

A page is asked for by (prefix, after, limit): the names that start with
``prefix`` and sort after ``after`` (Python's str order, by code point), the
first ``limit`` of them in order, and whether more follow (``more``). A client
walks a list by asking again with ``after`` = the page's last name until
``more`` is False. Limit 0 means every name (what a client from before paging
gets: listTopics and listGroups without a page).

Merging is exact. Each of the k sources answers its own first ``limit`` names
(and whether it has more); the merged page is the first ``limit`` distinct
names of their union (a group may be on two shards while it moves). If a
source had more, its further names sort after its own last, which is at or
after the merged page's last, so they are beyond the page: ``more`` is True.
Otherwise the union is everything, and ``more`` is whether it has names beyond
the page.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from plinth import limits
from plinth.errors import RequestTooLargeError

ALL_NAMES = 0   # limit 0: the whole list, as listTopics/listGroups before paging


@dataclass(frozen=True)
class NamesPage:
    """One page: ``names`` sorted, each starting with the prefix asked and after the
    ``after`` asked, at most the limit asked; ``more``: names follow the last.
    ``unanswered``: the sources that did not answer in time, sorted (a page of groups:
    the shards whose groups it lacks); the page is exact over the others."""

    names: list[str] = field(default_factory=list)
    more: bool = False
    unanswered: list[str] = field(default_factory=list)


def check_page_args(prefix: str, after: str, limit: int, what: str) -> None:
    """RequestTooLargeError for a limit over ADMIN_LIST_PAGE_NAMES_MAX, ValueError for
    a negative limit or a prefix or after that is not a str. Any thread."""
    if not isinstance(prefix, str) or not isinstance(after, str):
        raise ValueError(f"{what}: prefix and after must be str, got {type(prefix).__name__} "
                         f"and {type(after).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"{what}: limit must be an int >= 0 (0: all), got {limit!r}")
    if limit > limits.ADMIN_LIST_PAGE_NAMES_MAX:
        raise RequestTooLargeError(
            f"{what}: limit {limit} is over ADMIN_LIST_PAGE_NAMES_MAX, "
            f"{limits.ADMIN_LIST_PAGE_NAMES_MAX} names per page")


def page_of(sorted_names: Sequence[str], prefix: str = "", after: str = "",
            limit: int = ALL_NAMES) -> NamesPage:
    """The page of ``sorted_names`` (sorted, distinct) asked for; O(log n + limit)."""
    # The first name after ``after`` that may start with ``prefix`` (every name that
    # does is >= prefix).
    start = bisect.bisect_right(sorted_names, after) if after >= prefix \
        else bisect.bisect_left(sorted_names, prefix)
    names: list[str] = []
    for i in range(start, len(sorted_names)):
        name = sorted_names[i]
        if not name.startswith(prefix):
            return NamesPage(names, False)   # sorted: no later name starts with it
        if limit != ALL_NAMES and len(names) == limit:
            return NamesPage(names, True)
        names.append(name)
    return NamesPage(names, False)


def merge_pages(pages: Iterable[NamesPage], limit: int = ALL_NAMES) -> NamesPage:
    """One page from the same page asked of several sources (k-way by name, duplicates
    once); ``more`` is exact (see the module docstring)."""
    pages = list(pages)
    names: list[str] = []
    more = any(page.more for page in pages)
    for name in heapq.merge(*(page.names for page in pages)):
        if names and names[-1] == name:
            continue
        if limit != ALL_NAMES and len(names) == limit:
            return NamesPage(names, True)
        names.append(name)
    return NamesPage(names, more)
