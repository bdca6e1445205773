"""Every console page answers within its deadline (limits.CONSOLE_PAGE_DEADLINE_MS,
client/console/broker_calls.py) when the broker does not answer: with what did
answer and a note of what did not, or a 503 naming what did not; and never queued
behind earlier pages' calls.

Against a scripted broker (a ROUTER socket on loopback) that answers only the request
kinds it is told to, and reads and drops every other request, as a broker or shard
that is stopped does. The console's clients get the request timeout `plinth
console` gives them (CLIENT_REQUEST_TIMEOUT_MS_DEFAULT, 30 s): the page deadline,
not a short test timeout, is what must bound the pages.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from plinth import limits, protocol
from plinth.errors import UnknownGroupError, UnknownTopicError
from plinth.name_pages import NamesPage
from tests.client.console.conftest import console_client
from tests.client.scripted_broker import ScriptedBroker

# A page must answer well within this: three deadlines (the old console took 30 s
# per call, in series, behind one lock).
PAGE_S_MAX = 3 * limits.CONSOLE_PAGE_DEADLINE_MS / 1000
PAGE_KINDS = ("listTopicsPage", "listGroupsPage")


class PartlySilentBroker:
    """A scripted broker (tests/client/scripted_broker.py) that answers the request
    kinds in ``answered`` ("*": every kind) and drops the rest: names pages with
    ``names``, describeGroup with UnknownGroupError, any other kind with
    UnknownTopicError."""

    def __init__(self, names: list[str]):
        self.answered: set[str] = set()
        self.names = names
        self._broker = ScriptedBroker([self._answer] * 100_000)
        self.url = self._broker.url

    def _answer(self, request):
        kind = getattr(request, "kind", type(request).__name__)
        if "*" not in self.answered and kind not in self.answered:
            return None   # read, never answered
        if kind in PAGE_KINDS:
            return [protocol.encode_names_page_reply(request.request_id,
                                                     NamesPage(self.names, False))]
        if kind == "describeGroup":
            return [protocol.encode_error(request.request_id, UnknownGroupError("none"))]
        return [protocol.encode_error(request.request_id, UnknownTopicError("none"))]

    def close(self) -> None:
        self._broker.close()


@pytest.fixture
def silent_broker():
    broker = PartlySilentBroker(["t-a", "t-b"])
    yield broker
    broker.close()


@pytest.fixture
def console(silent_broker):
    with console_client(silent_broker.url,
                        request_timeout_ms=limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT) as client:
        yield client


def timed_get(client, url: str) -> tuple[int, str, float]:
    began = time.monotonic()
    response = client.get(url)
    return response.status_code, response.text, time.monotonic() - began


def test_a_page_of_a_broker_that_does_not_answer_is_a_503_within_the_deadline_naming_it(
        console, silent_broker):
    # Given a broker that answers nothing
    # When the group list is opened
    status, page, took_s = timed_get(console, "/groups")
    # Then it is a 503 well within the old request timeout, naming the broker and the deadline
    assert took_s < PAGE_S_MAX, took_s
    assert status == 503, (status, page[:500])
    deadline_s = limits.CONSOLE_PAGE_DEADLINE_MS / 1000
    assert f"{silent_broker.url} did not answer within {deadline_s:g} s" in page, page[:2000]


def test_pages_opened_together_all_answer_within_the_deadline(console):
    # Given a broker that answers nothing
    urls = ["/", "/topics", "/groups", "/topics/p1", "/browse/p1"]
    # When five pages are opened at once
    with ThreadPoolExecutor(len(urls)) as pool:
        futures = [pool.submit(timed_get, console, url) for url in urls]
        results = [future.result(timeout=PAGE_S_MAX) for future in futures]
    # Then every one is a 503 within the deadline's bound, none waiting for another's
    for url, (status, page, took_s) in zip(urls, results):
        assert status == 503 and took_s < PAGE_S_MAX, (url, status, took_s, page[:300])
        assert "did not answer within" in page, (url, page[:2000])


def test_a_page_is_a_503_at_once_while_the_console_has_its_bound_of_calls_in_flight(console):
    # Given the console with CONSOLE_BROKER_CALLS_MAX calls to the broker in flight
    calls = console.app.state.console.calls
    held = [calls.slot() for _ in range(limits.CONSOLE_BROKER_CALLS_MAX)]
    for slot in held:
        slot.__enter__()
    try:
        # When one more page asks the broker
        status, page, took_s = timed_get(console, "/groups")
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    # Then it is a 503 at once, saying how many it waits for, not a place in a queue
    assert status == 503 and took_s < limits.CONSOLE_PAGE_DEADLINE_MS / 1000, (status, took_s)
    assert (f"the console is waiting for {limits.CONSOLE_BROKER_CALLS_MAX} earlier requests"
            in page), page[:2000]


def test_the_topic_list_shows_the_names_and_says_which_details_did_not_answer(
        console, silent_broker):
    # Given a broker that lists topic names but answers nothing about any one topic
    silent_broker.answered = {"listTopicsPage"}
    # When the topic list is opened
    status, page, took_s = timed_get(console, "/topics")
    # Then it shows the names within the deadline's bound, with a note of what did not answer
    assert status == 200 and took_s < PAGE_S_MAX, (status, took_s, page[:500])
    assert "t-a" in page and "t-b" in page
    assert 'id="missing"' in page and "did not answer within" in page, page[:3000]


def test_a_page_opened_after_the_broker_answers_again_is_served_normally(
        console, silent_broker):
    # Given a broker that answered nothing for a page
    status, _, took_s = timed_get(console, "/groups")
    assert status == 503 and took_s < PAGE_S_MAX, (status, took_s)
    # When it answers again and the page is opened again
    silent_broker.answered = {"*"}
    status, page, took_s = timed_get(console, "/groups")
    # Then it is served as usual, at once
    assert status == 200 and took_s < PAGE_S_MAX, (status, took_s, page[:500])
    assert "Consumer groups" in page and "t-a" in page
