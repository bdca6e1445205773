"""How the console's lists scale: N topics and N groups, then the time of a page.

Creates N topics of one partition (``console-00000`` ...; ``--batch`` of them per
createTopics request, Admin.create_topics, or one createTopic each with
``--batch 1``) and N consumer groups
(``console-group-00000`` ..., each with one committed offset), then times the calls a
console makes to show a list, each ``--repeats`` times (median and slowest, ms):

  * ``list_topics_page`` and ``list_groups_page``: the first page, a page from the
    middle of the list (``after`` = the middle name) and a prefix search (the names
    of one prefix of about ``--limit`` names);
  * ``topic_stats`` of the topics on one page;
  * for comparison, the whole list (``list_topics``/``list_groups``, which walk
    every page).

It prints the creation rate as it goes (topics and groups per second, per 500),
because creating is what stops first on a small machine: ``--create-budget-s``
ends the creation early and says how far it got; the timings then run on what
exists. Against a fresh embedded ``plinth serve`` (its own Ray, data dir and
loopback port), stopped at the end, or ``--broker URL`` (topics of earlier runs
there are reused).

    python -m loadtest.console_scale                        # N = 10,000
    python -m loadtest.console_scale -n 2000 --json
    python -m loadtest.console_scale -n 3000 --batch 1        # one create per topic
    python -m loadtest.console_scale --broker tcp://127.0.0.1:7400 -n 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from plinth import limits
from plinth.client.admin import Admin, NewTopic
from plinth.errors import TopicExistsError

TOPIC_PREFIX = "console-"
GROUP_PREFIX = "console-group-"
PROGRESS_EVERY = 500


def topic_name(i: int) -> str:
    return f"{TOPIC_PREFIX}{i:05d}"


def group_name(i: int) -> str:
    return f"{GROUP_PREFIX}{i:05d}"


def create(admin: Admin, count: int, budget_s: float, make, what: str, batch: int = 1) -> dict:
    """``make(admin, range)`` for ranges of ``batch`` of i < count, until the budget ends;
    the count made and the rates."""
    started_s = last_s = time.monotonic()
    made = 0
    for first in range(0, count, batch):
        if time.monotonic() - started_s > budget_s:
            print(f"{what}: the {budget_s:.0f} s budget ended after {made}", flush=True)
            break
        todo = range(first, min(first + batch, count))
        make(admin, todo)
        made += len(todo)
        if made % PROGRESS_EVERY < len(todo):
            now_s = time.monotonic()
            print(f"{what}: {made}  ({PROGRESS_EVERY / (now_s - last_s):.0f}/s over the last "
                  f"{PROGRESS_EVERY})", flush=True)
            last_s = now_s
    elapsed_s = time.monotonic() - started_s
    return {"made": made, "seconds": round(elapsed_s, 1),
            "per_s": round(made / elapsed_s, 1) if elapsed_s else 0.0}


def make_topics(admin: Admin, todo: range) -> None:
    """One createTopics of them all, or one createTopic each (a batch of 1, or a batch
    holding a topic of an earlier run against the same broker: all or none)."""
    if len(todo) > 1:
        try:
            admin.create_topics([NewTopic(topic_name(i), 1, {}) for i in todo])
            return
        except TopicExistsError:
            pass
    for i in todo:
        try:
            admin.create_topic(topic_name(i), 1)
        except TopicExistsError:
            pass   # from an earlier run against the same broker


def create_topics(url: str, count: int, batch: int = 100) -> None:
    """``count`` one-partition topics on the broker at ``url``, ``batch`` per createTopics
    (what the other commands start from: a broker that holds many topics)."""
    if count <= 0:
        return
    with Admin(broker=url, request_timeout_ms=120_000) as admin:
        for first in range(0, count, batch):
            make_topics(admin, range(first, min(first + batch, count)))


def make_groups(admin: Admin, todo: range) -> None:
    for i in todo:
        admin.reset_group_offsets(group_name(i), {(topic_name(0), 0): 0})


def timed(call, repeats: int) -> dict:
    """Median and slowest of ``repeats`` calls, in ms."""
    times_ms = []
    for _ in range(repeats):
        started_s = time.perf_counter()
        call()
        times_ms.append((time.perf_counter() - started_s) * 1000)
    return {"median_ms": round(statistics.median(times_ms), 2), "max_ms": round(max(times_ms), 2)}


def measure(admin: Admin, topics: int, groups: int, limit: int, repeats: int) -> dict:
    """The timings of the console's calls over ``topics`` topics and ``groups`` groups."""
    # A prefix naming about ``limit`` of them: with limit 100, "console-050" names
    # console-05000 .. console-05099.
    topic_prefix = topic_name(topics // 2)[:len(topic_name(0)) - len(str(limit)) + 1]
    group_prefix = group_name(groups // 2)[:len(group_name(0)) - len(str(limit)) + 1]
    page = admin.list_topics_page(limit=limit)
    results = {
        "topics_first_page": timed(lambda: admin.list_topics_page(limit=limit), repeats),
        "topics_middle_page": timed(lambda: admin.list_topics_page(
            after=topic_name(topics // 2), limit=limit), repeats),
        "topics_prefix_search": timed(lambda: admin.list_topics_page(
            prefix=topic_prefix, limit=limit), repeats),
        "topic_stats_of_a_page": timed(lambda: admin.topic_stats(
            page.names[:limits.ADMIN_TOPIC_STATS_NAMES_MAX]), repeats),
        "groups_first_page": timed(lambda: admin.list_groups_page(limit=limit), repeats),
        "groups_middle_page": timed(lambda: admin.list_groups_page(
            after=group_name(groups // 2), limit=limit), repeats),
        "groups_prefix_search": timed(lambda: admin.list_groups_page(
            prefix=group_prefix, limit=limit), repeats),
        "all_topics_walked": timed(admin.list_topics, max(1, repeats // 5)),
        "all_groups_walked": timed(admin.list_groups, max(1, repeats // 5)),
    }
    results["prefixes"] = {"topics": topic_prefix, "groups": group_prefix,
                           "topics_found": len(admin.list_topics_page(prefix=topic_prefix,
                                                                      limit=limit).names)}
    return results


def run(url: str, count: int, limit: int, repeats: int, budget_s: float, batch: int) -> dict:
    with Admin(broker=url, request_timeout_ms=120_000) as admin:
        topics = create(admin, count, budget_s, make_topics, "topics", batch)
        groups = create(admin, count, budget_s, make_groups, "groups")
        timings = measure(admin, max(topics["made"], 1), max(groups["made"], 1), limit, repeats)
    return {"asked": count, "topics": topics, "topics_per_request": batch, "groups": groups,
            "page_limit": limit, "timings": timings}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=10_000,
                        help="topics, and groups, to create (default 10,000)")
    parser.add_argument("--limit", type=int, default=limits.ADMIN_LIST_PAGE_NAMES_DEFAULT,
                        help="names per page")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--create-budget-s", type=float, default=3600.0,
                        help="stop creating topics (and, again, groups) after this long")
    parser.add_argument("--batch", type=int, default=limits.CREATE_TOPICS_BATCH_MAX,
                        help="topics per createTopics request (1: one createTopic each); "
                             "default %(default)s")
    parser.add_argument("--broker", help="an existing broker; default: a fresh embedded one")
    parser.add_argument("--plinth", default="plinth", help="the plinth command to serve with")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= limits.CREATE_TOPICS_BATCH_MAX:
        parser.error(f"--batch must be 1..{limits.CREATE_TOPICS_BATCH_MAX}")
    if args.broker:
        report = run(args.broker, args.count, args.limit, args.repeats, args.create_budget_s,
                     args.batch)
    else:
        from loadtest.fresh_broker import fresh_broker

        with tempfile.TemporaryDirectory(prefix="plinth-console-scale-") as work, \
                fresh_broker(args.plinth, Path(work), "--shards", str(args.shards)) as (_, url):
            report = run(url, args.count, args.limit, args.repeats, args.create_budget_s,
                         args.batch)
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return 0


def _text(report: dict) -> str:
    lines = [f"topics: {report['topics']['made']} of {report['asked']} in "
             f"{report['topics']['seconds']} s ({report['topics']['per_s']}/s, "
             f"{report['topics_per_request']} per request)",
             f"groups: {report['groups']['made']} of {report['asked']} in "
             f"{report['groups']['seconds']} s ({report['groups']['per_s']}/s)",
             f"pages of {report['page_limit']} names     median ms   slowest ms"]
    for name, t in report["timings"].items():
        if name != "prefixes":
            lines.append(f"  {name:<24} {t['median_ms']:>9} {t['max_ms']:>12}")
    lines.append(f"prefix searches: {report['timings']['prefixes']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

