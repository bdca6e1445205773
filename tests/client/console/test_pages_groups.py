"""The consumer-group pages (client/console/pages_groups.py) over a real broker, through
Starlette's TestClient: the list, the detail's lag, the lag chart, and an offset reset
through its dry run and apply, checked with ``plinth group describe``."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys

import pytest

from plinth import limits
from plinth.client.admin import Admin
from plinth.client.console import group_offsets
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from tests.client.console.conftest import console_client
from tests.support import unique_topic, wait_until


class ManualClock:
    """The lag history's clock, moved by the test."""

    def __init__(self):
        self.time_s = 1_000.0

    def now_s(self) -> float:
        return self.time_s

    def advance(self, seconds: float) -> None:
        self.time_s += seconds


@pytest.fixture(scope="module")
def clock():
    return ManualClock()


@pytest.fixture(scope="module")
def client(shared_broker, clock):
    with console_client(shared_broker.url) as test_client:
        test_client.app.state.group_lag_history = group_offsets.LagHistory(clock=clock.now_s)
        yield test_client


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


def test_the_group_page_shows_the_lag_admin_group_lag_reports(client, admin, topic):
    group = idle_group(admin, topic, {0: 10, 1: 25})
    page = client.get(f"/groups/{group}")
    assert page.status_code == 200
    expected = {(t, p): (committed, end, lag) for t, p, committed, end, lag in admin.group_lag(group)}
    shown = {tp: (int(cells(page, "lag-row", "committed")[tp]), int(cells(page, "lag-row", "end")[tp]),
                  int(cells(page, "lag-row", "lag")[tp])) for tp in expected}
    assert shown == expected == {(topic, 0): (10, 30, 20), (topic, 1): (25, 30, 5)}
    assert re.search(r'id="total-lag">25<', page.text)


def test_the_lag_chart_takes_a_sample_each_time_it_is_polled(client, clock, shared_broker, admin):
    # Given a group page on screen, with lag 10 on a topic of its own
    topic = unique_topic("chart")
    admin.create_topic(topic, 1)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(10):
            producer.send(topic, b"early", partition=0)
        producer.flush()
    group = idle_group(admin, topic, {0: 0})
    client.get(f"/groups/{group}")
    # When records arrive and the chart polls a poll interval later
    with Producer(broker=shared_broker.url) as producer:
        for n in range(6):
            producer.send(topic, b"late", partition=0)
        producer.flush()
    clock.advance(limits.CONSOLE_LAG_POLL_S)
    chart = client.get(f"/groups/{group}/lag", headers={"HX-Request": "true"})
    # Then the chart alone comes back, with the new total and a line through both samples
    assert chart.status_code == 200 and chart.text.lstrip().startswith('<div class="chart-box"')
    assert re.search(r'id="lag-now">16<', chart.text)
    points = re.search(r'<polyline class="line in" points="([^"]+)"', chart.text)[1].split()
    assert len(points) == 2 and f'hx-get="/groups/{group}/lag"' in chart.text
    # And a second browser polling at once shares that sample instead of taking another
    again = client.get(f"/groups/{group}/lag", headers={"HX-Request": "true"})
    assert re.search(r'points="([^"]+)"', again.text)[1].split() == points


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


def test_an_apply_without_the_dry_runs_token_is_refused(client, admin, topic):
    group = idle_group(admin, topic, {0: 3})
    applied = client.post(f"/groups/{group}/reset", data={"plan": f"{topic}:0=0", "token": "x"})
    assert applied.status_code == 400 and "was not made by this console" in applied.text
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
