"""The consumer-group pages (client/console/pages_groups.py) over a real broker, through
Starlette's TestClient: the list, the detail's lag, the page's live stream (its lag
chart and tables, sampled only while a stream is open, and its limits), and an offset
reset through its dry run and apply, checked with ``plinth group describe``."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time

import pytest

from plinth import limits
from plinth.client.admin import Admin
from plinth.client.console import group_offsets
from plinth.client.console.lag_watch import LagWatcher
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from tests.client.console.conftest import console_client
from tests.support import unique_topic, wait_until


SAMPLE_S = 0.2   # the watcher's interval here (CONSOLE_LAG_POLL_S in a console)


def fast_watcher(test_client, groups_max: int = limits.CONSOLE_LAG_GROUPS_MAX) -> LagWatcher:
    """Give ``test_client``'s app a LagWatcher sampling every SAMPLE_S, over a LagHistory
    of its own; returns it."""
    state = test_client.app.state
    state.group_lag_history = group_offsets.LagHistory()
    state.group_lag_watcher = LagWatcher(state.console.admin, state.group_lag_history,
                                         interval_s=SAMPLE_S, groups_max=groups_max)
    return state.group_lag_watcher


@pytest.fixture(scope="module")
def client(shared_broker):
    with console_client(shared_broker.url) as test_client:
        fast_watcher(test_client)
        yield test_client


@pytest.fixture
def watcher(client) -> LagWatcher:
    return client.app.state.group_lag_watcher


def sse_events(stream, timeout_s: float = 30.0):
    """(event name, data) of each event an open SSE response sends, until ``timeout_s``
    passes (checked at each line: a stream sends one at least every SAMPLE_S or
    keepalive)."""
    deadline = time.monotonic() + timeout_s
    name, data = None, []
    for line in stream.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError(f"no wanted event within {timeout_s} s")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
        elif line == "" and name is not None:
            yield name, "\n".join(data)
            name, data = None, []


def lag_now(chart_html: str) -> int | None:
    found = re.search(r'id="lag-now">(\d+)<', chart_html)
    return None if found is None else int(found[1])


def chart_points(chart_html: str) -> list[str]:
    found = re.search(r'<polyline class="line in" points="([^"]+)"', chart_html)
    return [] if found is None else found[1].split()


@pytest.fixture(scope="module")
def admin(shared_broker):
    with Admin(broker=shared_broker.url) as module_admin:
        yield module_admin


@pytest.fixture(scope="module")
def topic(shared_broker, admin):
    """Two partitions of 30 records each."""
    name = unique_topic("pg")
    admin.create_topic(name, 2)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(60):
            producer.send(name, b"%d" % n, partition=n % 2)
        producer.flush()
    return name


def idle_group(admin, topic: str, committed: dict[int, int]) -> str:
    group = unique_topic("pgg")
    admin.reset_group_offsets(group, {(topic, p): o for p, o in committed.items()})
    return group


def cells(page, row_class: str, cell_class: str) -> dict[tuple[str, int], str]:
    """{(topic, partition): the text of cell ``cell_class``} of each row ``row_class``."""
    rows = re.findall(rf'<tr class="{row_class}" data-topic="([^"]+)" data-partition="(\d+)">'
                      rf'(.*?)</tr>', page.text, re.S)
    return {(t, int(p)): re.search(rf'class="num {cell_class}">([^<]*)<', body)[1].strip()
            for t, p, body in rows}


def plinth_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plinth.cli", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PLINTH_BROKER=url))


def test_the_group_list_shows_state_and_members_of_the_groups_on_its_page(client, admin, topic):
    group = idle_group(admin, topic, {0: 1})
    page = client.get("/groups", params={"q": group})
    assert page.status_code == 200
    row = re.search(rf'data-group="{group}">(.*?)</tr>', page.text, re.S)[1]
    assert '<td class="state">Empty</td>' in row and '<td class="num members">0</td>' in row


def test_the_group_list_names_the_shards_whose_groups_it_lacks(client, monkeypatch):
    # Given a listing whose page lacks shard-1's groups (it did not answer in time)
    monkeypatch.setattr(group_offsets, "groups_page", lambda *args: group_offsets.GroupsPage(
        [], False, ["shard-1"]))
    # When the list is shown / Then it says so, rather than look complete
    html = client.get("/groups").text
    assert ("Not listed: the groups coordinated by shard-1, which did not answer in time"
            in html)


def test_the_group_page_shows_the_lag_admin_group_lag_reports(client, admin, topic):
    group = idle_group(admin, topic, {0: 10, 1: 25})
    page = client.get(f"/groups/{group}")
    assert page.status_code == 200
    expected = {(t, p): (committed, end, lag) for t, p, committed, end, lag in admin.group_lag(group)}
    shown = {tp: (int(cells(page, "lag-row", "committed")[tp]), int(cells(page, "lag-row", "end")[tp]),
                  int(cells(page, "lag-row", "lag")[tp])) for tp in expected}
    assert shown == expected == {(topic, 0): (10, 30, 20), (topic, 1): (25, 30, 5)}
    assert re.search(r'id="total-lag">25<', page.text)


def topic_with_records(admin, url: str, records: int) -> str:
    name = unique_topic("chart")
    admin.create_topic(name, 1)
    produce(url, name, records)
    return name


def produce(url: str, topic: str, records: int) -> None:
    with Producer(broker=url) as producer:
        for n in range(records):
            producer.send(topic, b"r%d" % n, partition=0)
        producer.flush()


def test_a_group_pages_stream_sends_its_lag_chart_and_tables_after_each_sample(
        client, shared_broker, admin):
    # Given a group page on screen, with lag 10 on a topic of its own
    topic = topic_with_records(admin, shared_broker.url, 10)
    group = idle_group(admin, topic, {0: 0})
    assert 'data-sse="/groups/%s/stream"' % group in client.get(f"/groups/{group}").text
    with client.stream("GET", f"/groups/{group}/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        # When records arrive while its stream is open
        produce(shared_broker.url, topic, 6)
        # Then a sample shows the new total in the chart, the tiles and the table, in
        # that order, and the chart's line runs through the page's sample and the new one
        seen: dict[str, str] = {}
        for name, data in sse_events(stream):
            seen[name] = data
            if name == "group-tables" and lag_now(seen["lag-chart"]) == 16:
                break
    assert list(seen) == ["group-state", "group-tiles", "lag-chart", "group-tables"]
    assert seen["group-state"] == "Empty"
    assert re.search(r'id="total-lag">16<', seen["group-tiles"])
    assert re.search(r'class="num lag">16<', seen["group-tables"])
    assert len(chart_points(seen["lag-chart"])) >= 2


def test_lag_is_computed_only_for_groups_with_an_open_stream(client, watcher, shared_broker,
                                                            admin):
    topic = topic_with_records(admin, shared_broker.url, 5)
    shown, streamed, later = (idle_group(admin, topic, {0: 0}) for _ in range(3))
    history = client.app.state.group_lag_history
    # Given one group's page drawn (one sample, for the page) but no stream of it
    client.get(f"/groups/{shown}")
    assert len(history.samples(shown)) == 1
    # When another group's stream is open for three samples
    with client.stream("GET", f"/groups/{streamed}/stream") as stream:
        events = sse_events(stream)   # held: dropping it would close the stream
        for name, _ in events:
            if name == "lag-chart" and watcher.polls(streamed) >= 3:
                break
        # Then only that group is watched, and the page-only group got no sample more
        assert streamed in watcher.watched() and shown not in watcher.watched()
    assert len(history.samples(shown)) == 1
    # When its stream has closed
    wait_until(lambda: streamed not in watcher.watched(), timeout_s=10)
    taken = len(history.samples(streamed))
    # Then while a third group's stream takes three samples, the closed one gets none
    with client.stream("GET", f"/groups/{later}/stream") as stream:
        for name, _ in sse_events(stream):
            if name == "lag-chart" and watcher.polls(later) >= 3:
                break
    assert len(history.samples(streamed)) == taken
    assert len(history.samples(shown)) == 1


def test_two_streams_of_one_group_share_its_samples(client, watcher, shared_broker, admin):
    topic = topic_with_records(admin, shared_broker.url, 5)
    group = idle_group(admin, topic, {0: 0})
    history = client.app.state.group_lag_history
    # Given two browsers with the group's page open
    with client.stream("GET", f"/groups/{group}/stream") as first, \
            client.stream("GET", f"/groups/{group}/stream") as second:
        charts, readers = [], [sse_events(first), sse_events(second)]   # held: both open
        for events in readers:
            for name, data in events:
                if name == "lag-chart" and watcher.polls(group) >= 3:
                    charts.append(data)
                    break
        assert watcher.watched() >= {group}
        # Then one task samples it, an interval apart: not one sampler per browser
        # (whose samples would interleave, closer than an interval)
        times = [time_s for time_s, _ in history.samples(group)]
        assert len(times) >= 3
        assert min(b - a for a, b in zip(times, times[1:])) >= SAMPLE_S - 0.01, times
    assert lag_now(charts[0]) == lag_now(charts[1]) == 5


def test_a_stream_of_one_group_more_than_the_console_samples_is_refused_with_a_message(
        shared_broker, admin):
    topic = topic_with_records(admin, shared_broker.url, 1)
    watched, refused = idle_group(admin, topic, {0: 0}), idle_group(admin, topic, {0: 0})
    with console_client(shared_broker.url) as console:
        watcher = fast_watcher(console, groups_max=1)
        # Given one group watched, by a console that samples at most one at once
        with console.stream("GET", f"/groups/{watched}/stream") as stream:
            events = sse_events(stream)   # held: dropping it would close the stream
            next(name for name, _ in events if name == "lag-chart")
            assert watcher.watched() == {watched}
            # When a page of another group opens its stream
            with console.stream("GET", f"/groups/{refused}/stream") as other:
                events = list(sse_events(other))
        # Then that stream says why it has no live updates, and ends
        assert [name for name, _ in events] == ["refused"]
        assert "the lag of 1 groups is being sampled" in html.unescape(events[0][1])
        assert "at most 1" in events[0][1] and refused not in watcher.watched()


def test_a_stream_past_the_consoles_live_page_limit_is_refused_with_a_message(
        shared_broker, admin):
    topic = topic_with_records(admin, shared_broker.url, 1)
    group = idle_group(admin, topic, {0: 0})
    with console_client(shared_broker.url) as console:
        watcher = fast_watcher(console)
        ctx = console.app.state.console
        # Given as many live topic and group pages open as the console allows
        for _ in range(limits.CONSOLE_SSE_CLIENTS_MAX):
            console.portal.call(ctx.streams_open, +1)
        # When one more group page opens its stream
        with console.stream("GET", f"/groups/{group}/stream") as stream:
            events = list(sse_events(stream))
        # Then it is refused, saying so, and its group is not sampled
        assert [name for name, _ in events] == ["refused"]
        assert (f"{limits.CONSOLE_SSE_CLIENTS_MAX} live topic and group pages are open"
                in events[0][1])
        assert group not in watcher.watched()


def test_a_stream_of_an_unknown_group_is_a_404_before_it_starts(client, watcher):
    group = unique_topic("nobody")
    with client.stream("GET", f"/groups/{group}/stream") as response:
        status = response.status_code
        page = "" if status == 200 else response.read().decode()
    assert status == 404 and "UnknownGroupError" in page, (status, page[:500])
    assert group not in watcher.watched()


def test_a_stream_of_an_overlong_group_name_is_a_clear_400(client):
    page = client.get(f"/groups/{'g' * 300}/stream")
    assert page.status_code == 400 and "300 bytes; at most 249" in page.text


def test_a_reset_through_dry_run_and_apply_changes_the_committed_offsets(client, admin, topic,
                                                                        shared_broker):
    group = idle_group(admin, topic, {0: 10, 1: 12})
    end = admin.list_offsets(topic, 0).end_offset
    # When the dry run asks for the earliest offsets
    dry = client.get(f"/groups/{group}/reset", params={"topic": topic, "to": "earliest"})
    # Then it shows each partition's committed offset and new offset, and changes nothing
    assert dry.status_code == 200
    assert cells(dry, "plan-row", "current") == {(topic, 0): "10", (topic, 1): "12"}
    assert cells(dry, "plan-row", "new") == {(topic, 0): "0", (topic, 1): "0"}
    assert admin.describe_group(group).committed == {(topic, 0): 10, (topic, 1): 12}
    # When its apply form is posted
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', dry.text))
    applied = client.post(f"/groups/{group}/reset", data={k: html.unescape(v) for k, v in form.items()})
    # Then the offsets are the plan's, as the page and `plinth group describe` both say
    assert applied.status_code == 200, applied.text
    assert cells(applied, "reset-row", "committed") == {(topic, 0): "0", (topic, 1): "0"}
    described = plinth_cli(shared_broker.url, "group", "describe", group)
    assert described.returncode == 0, described.stderr
    rows = {int(line.split()[1]): line.split()[2:5] for line in described.stdout.splitlines()
            if line.startswith(topic + " ")}
    assert rows[0] == ["0", str(end), str(end)] and rows[1][0] == "0"


def test_a_reset_is_refused_while_a_member_is_active_in_the_clis_words(client, admin, topic,
                                                                       shared_broker):
    group = idle_group(admin, topic, {0: 3, 1: 3})
    dry = client.get(f"/groups/{group}/reset", params={"topic": topic, "to": "latest"})
    form = {k: html.unescape(v) for k, v in
            re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', dry.text)}
    with Consumer(topic, broker=shared_broker.url, group=group, enable_auto_commit=False):
        wait_until(lambda: admin.describe_group(group).members, timeout_s=30)
        # When the apply is posted while the member is there
        applied = client.post(f"/groups/{group}/reset", data=form)
        # Then it is refused with the message `plinth group reset` prints
        cli = plinth_cli(shared_broker.url, "group", "reset", group, "--topic", topic,
                         "--to-latest")
        assert cli.returncode == 1
        message = cli.stderr.strip().removeprefix("error: ")
        assert message.startswith("GroupNotEmptyError: ")
        assert applied.status_code == 400 and message in html.unescape(applied.text)
        # And the dry run warns of it
        warned = client.get(f"/groups/{group}/reset", params={"topic": topic, "to": "latest"})
        assert "The group has 1 active members" in warned.text
    assert admin.describe_group(group).committed == {(topic, 0): 3, (topic, 1): 3}


def test_a_group_is_deleted_through_its_confirmation_and_only_without_members(
        client, admin, topic, shared_broker):
    group = idle_group(admin, topic, {0: 3})
    confirm = client.get(f"/groups/{group}/delete")
    assert confirm.status_code == 200 and f"Delete group {group}?" in confirm.text
    token = html.unescape(re.search(r'name="token" value="([^"]*)"', confirm.text).group(1))
    # A wrong name, or no token, changes nothing
    wrong = client.post(f"/groups/{group}/delete", data={"token": token, "confirm_name": "x"})
    assert wrong.status_code == 400 and f"type the group&#39;s name ({group})" in wrong.text
    stale = client.post(f"/groups/{group}/delete", data={"token": "0" * 64, "confirm_name": group})
    assert stale.status_code == 400 and "confirmation token" in stale.text
    # While a member is in, the broker refuses, in the CLI's words
    with Consumer(topic, broker=shared_broker.url, group=group, enable_auto_commit=False):
        wait_until(lambda: admin.describe_group(group).members, timeout_s=30)
        refused = client.post(f"/groups/{group}/delete", data={"token": token,
                                                               "confirm_name": group})
        assert refused.status_code == 400 and "GroupNotEmptyError" in refused.text
    assert admin.describe_group(group).committed == {(topic, 0): 3}
    wait_until(lambda: not admin.describe_group(group).members, timeout_s=30)
    gone = client.post(f"/groups/{group}/delete", data={"token": token, "confirm_name": group})
    assert gone.status_code == 200 and gone.url.path == "/groups"
    assert group not in admin.list_groups()


def dry_run_form(client, group: str, **params) -> dict[str, str]:
    """The apply form (plan and token) of the dry run ``params`` ask for."""
    dry = client.get(f"/groups/{group}/reset", params=params)
    assert dry.status_code == 200, dry.text[:500]
    fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', dry.text)
    return {name: html.unescape(value) for name, value in fields}


@pytest.mark.parametrize("plan, message", [
    pytest.param("{t}:0=0,{t}:1=5", "not the plan that was confirmed", id="another-offset"),
    pytest.param("{t}:0=0", "not the plan that was confirmed", id="a-partition-left-out"),
    pytest.param("{t}:0=0,{t}:1=0,{t}:2=0", "not the plan that was confirmed",
                 id="a-partition-added"),
    pytest.param("{t}:0=0,{t}:1=0,other-topic:0=0", "not the plan that was confirmed",
                 id="a-topic-not-in-the-dry-run"),
    # The tester's report: a partition twice, the last offset winning
    pytest.param("{t}:0=1,{t}:0=2,{t}:1=0", "names {t}:0 twice", id="a-partition-twice"),
    pytest.param("{t}:0=0,{t}:1=0,{t}:0=0", "names {t}:0 twice", id="the-same-item-twice"),
])
def test_an_apply_of_another_plan_than_the_dry_run_showed_is_refused(client, admin, topic,
                                                                     plan, message):
    # Given a dry run of a reset to the earliest offsets
    group = idle_group(admin, topic, {0: 10, 1: 12})
    form = dry_run_form(client, group, topic=topic, to="earliest")
    assert form["plan"] == f"{topic}:0=0,{topic}:1=0"
    # When its token is posted with another plan
    refused = client.post(f"/groups/{group}/reset", data={**form, "plan": plan.format(t=topic)})
    # Then it is refused, saying why, and no offset moved
    assert refused.status_code == 400, refused.text[:500]
    assert message.format(t=topic) in html.unescape(refused.text)
    assert admin.describe_group(group).committed == {(topic, 0): 10, (topic, 1): 12}


def test_an_apply_after_the_dry_run_expired_is_refused(client, admin, topic, monkeypatch):
    # Given a dry run at NOW
    group = idle_group(admin, topic, {0: 10, 1: 12})
    tokens = client.app.state.console.confirmations
    now_s = tokens.clock()
    monkeypatch.setattr(tokens, "clock", lambda: now_s)
    form = dry_run_form(client, group, topic=topic, to="earliest")
    # When it is applied a second after the token's lifetime
    monkeypatch.setattr(tokens, "clock", lambda: now_s + limits.CONSOLE_CONFIRM_TOKEN_S + 1)
    refused = client.post(f"/groups/{group}/reset", data=form)
    # Then it is refused, and no offset moved
    assert refused.status_code == 400 and "expired" in refused.text
    assert admin.describe_group(group).committed == {(topic, 0): 10, (topic, 1): 12}


def test_an_apply_without_the_dry_runs_token_is_refused(client, admin, topic):
    group = idle_group(admin, topic, {0: 3})
    applied = client.post(f"/groups/{group}/reset", data={"plan": f"{topic}:0=0", "token": "x"})
    assert applied.status_code == 400 and "no valid confirmation token" in applied.text
    assert admin.describe_group(group).committed == {(topic, 0): 3}


@pytest.mark.parametrize("path,message", [
    ("/groups/{group}/reset?to=offset&offset=minus", "offset 'minus' is not a whole number"),
    ("/groups/{group}/reset?to=timestamp&timestamp=later", "timestamp 'later' is neither ms"),
    ("/groups/{group}/reset?to=sideways", "to='sideways' is not one of"),
])
def test_a_bad_reset_request_gets_a_400_page_with_its_message(client, admin, topic, path, message):
    group = idle_group(admin, topic, {0: 3})
    page = client.get(path.format(group=group))
    assert page.status_code == 400 and message in html.unescape(page.text)


def test_an_unknown_group_gets_a_not_found_page(client):
    page = client.get(f"/groups/{unique_topic('nobody')}")
    assert page.status_code == 404 and "UnknownGroupError" in page.text


def test_a_console_without_admin_rights_shows_the_reset_as_not_permitted(shared_broker, admin,
                                                                         topic):
    group = idle_group(admin, topic, {0: 3})
    with console_client(shared_broker.url) as viewer:
        # The console's own answer to its admin probe, as a key without admin rights
        # gets it (a broker with ACLs is another module's subject: test_console_auth).
        viewer.app.state.console._can_admin = False
        page = viewer.get(f"/groups/{group}")
        assert 'id="reset-not-permitted"' in page.text and 'id="reset-link"' not in page.text
        refused = viewer.post(f"/groups/{group}/reset", data={"plan": f"{topic}:0=0"})
    assert refused.status_code == 403 and "needs admin rights" in refused.text
    assert admin.describe_group(group).committed == {(topic, 0): 3}
