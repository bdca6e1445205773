"""plinth/name_pages.py: a page of a sorted list, and one page merged from several."""

from __future__ import annotations

import random

import pytest

from plinth import limits
from plinth.errors import RequestTooLargeError
from plinth.name_pages import NamesPage, check_page_args, merge_pages, page_of

NAMES = sorted(["a", "app", "apple", "apply", "b", "ba", "bab", "c", "orders.1", "orders.2",
                "orders.10", "payments"])


def expected(names, prefix, after, limit):
    """The page by its definition, from the whole list."""
    matching = sorted({n for n in names if n.startswith(prefix) and n > after})
    if limit == 0:
        return NamesPage(matching, False)
    return NamesPage(matching[:limit], len(matching) > limit)


def walk(ask, prefix, limit):
    """Every name, by asking with after = the last name until more is False."""
    names, after = [], ""
    for _ in range(10_000):
        page = ask(prefix, after, limit)
        names += page.names
        if not page.more:
            return names
        after = page.names[-1]
    raise AssertionError("the walk did not end")


def test_a_page_holds_the_first_names_after_after_that_start_with_the_prefix():
    assert page_of(NAMES, "orders.", "", 2) == NamesPage(["orders.1", "orders.10"], True)
    assert page_of(NAMES, "orders.", "orders.10", 2) == NamesPage(["orders.2"], False)
    assert page_of(NAMES, "ap", "", 0) == NamesPage(["app", "apple", "apply"], False)


def test_a_page_that_ends_exactly_at_the_last_match_says_no_more():
    assert page_of(NAMES, "ap", "", 3) == NamesPage(["app", "apple", "apply"], False)


def test_an_after_before_the_prefix_starts_at_the_prefix_and_one_past_it_gives_nothing():
    assert page_of(NAMES, "b", "a", 10).names == ["b", "ba", "bab"]
    assert page_of(NAMES, "b", "bz", 10) == NamesPage([], False)
    assert page_of([], "", "", 5) == NamesPage([], False)


def test_every_page_of_random_lists_is_the_page_by_definition():
    rng = random.Random(16)
    for _ in range(500):
        names = sorted({"".join(rng.choice("ab.") for _ in range(rng.randint(1, 4)))
                        for _ in range(rng.randint(0, 30))})
        prefix = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 2)))
        after = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 3)))
        limit = rng.randint(0, 6)
        assert page_of(names, prefix, after, limit) == expected(names, prefix, after, limit)


def test_walking_pages_to_the_end_gives_the_whole_sorted_list():
    for limit in (1, 2, 5, 100):
        assert walk(lambda p, a, n: page_of(NAMES, p, a, n), "", limit) == NAMES
        assert walk(lambda p, a, n: page_of(NAMES, p, a, n), "a", limit) == \
            ["a", "app", "apple", "apply"]


def test_merged_pages_of_random_sources_are_the_page_of_their_union_with_more_exact():
    rng = random.Random(15)
    for _ in range(500):
        sources = [sorted({"".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))
                           for _ in range(rng.randint(0, 12))}) for _ in range(rng.randint(1, 4))]
        union = sorted(set().union(*sources))   # a name may be on two sources (a moving group)
        prefix = rng.choice(["", "a", "b", "ab"])
        after = rng.choice(["", "a", "b", "bc", "c"])
        limit = rng.randint(0, 5)
        merged = merge_pages([page_of(s, prefix, after, limit) for s in sources], limit)
        assert merged == expected(union, prefix, after, limit)


def test_walking_merged_pages_of_two_shards_gives_every_name_once():
    shard_a = sorted(f"group-{i:03d}" for i in range(0, 250, 2))
    shard_b = sorted(f"group-{i:03d}" for i in range(1, 250, 2)) + ["group-000"]
    shard_b.sort()

    def ask(prefix, after, limit):
        return merge_pages([page_of(shard_a, prefix, after, limit),
                            page_of(shard_b, prefix, after, limit)], limit)

    assert walk(ask, "", 7) == [f"group-{i:03d}" for i in range(250)]
    assert walk(ask, "group-1", 7) == [f"group-{i:03d}" for i in range(100, 200)]


def test_a_limit_over_the_maximum_is_refused_naming_the_limit():
    with pytest.raises(RequestTooLargeError) as error:
        check_page_args("", "", limits.ADMIN_LIST_PAGE_NAMES_MAX + 1, "list_topics_page")
    assert "ADMIN_LIST_PAGE_NAMES_MAX" in str(error.value)
    assert str(limits.ADMIN_LIST_PAGE_NAMES_MAX + 1) in str(error.value)
    with pytest.raises(ValueError):
        check_page_args("", "", -1, "list_topics_page")
    check_page_args("x", "y", limits.ADMIN_LIST_PAGE_NAMES_MAX, "list_topics_page")
