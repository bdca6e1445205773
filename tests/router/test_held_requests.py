"""router/held_requests.py: requests held per topic, and topics remembered unknown."""

from __future__ import annotations

from plinth import limits, protocol
from plinth.router.held_requests import HeldRequests


def fetch(request_id: int, topic: str = "new") -> protocol.FetchRequest:
    return protocol.FetchRequest(request_id, topic, 0, 0, 1024, 0)


def test_requests_are_released_in_the_order_they_were_held_and_only_once():
    held = HeldRequests()
    for request_id in (3, 1, 2):
        assert held.hold("new", [b"frames"], fetch(request_id))
    assert held.is_waiting("new") and held.topics() == ["new"]
    assert [request.request_id for _, request in held.release("new")] == [3, 1, 2]
    assert not held.is_waiting("new")
    assert held.release("new") == []


def test_a_topic_holds_at_most_its_limit_of_requests(monkeypatch):
    monkeypatch.setattr(limits, "ROUTER_HELD_REQUESTS_PER_TOPIC_MAX", 2)
    held = HeldRequests()
    assert [held.hold("new", [], fetch(n)) for n in range(3)] == [True, True, False]
    assert held.hold("other", [], fetch(9, "other"))
    assert len(held.release("new")) == 2


def test_an_unknown_topic_is_remembered_for_its_ttl(monkeypatch):
    held = HeldRequests()
    monkeypatch.setattr(limits, "ROUTER_UNKNOWN_TOPIC_TTL_S", 60.0)
    held.remember_unknown("nope")
    assert held.is_recently_unknown("nope") and not held.is_recently_unknown("other")
    monkeypatch.setattr(limits, "ROUTER_UNKNOWN_TOPIC_TTL_S", -1.0)
    held.remember_unknown("expired")
    assert not held.is_recently_unknown("expired")


def test_a_topic_that_exists_now_is_forgotten_as_unknown():
    held = HeldRequests()
    held.remember_unknown("nope")
    held.forget_unknown(["nope", "t"])
    assert not held.is_recently_unknown("nope")


def test_the_oldest_unknown_topics_are_forgotten_beyond_the_limit(monkeypatch):
    monkeypatch.setattr(limits, "ROUTER_UNKNOWN_TOPICS_REMEMBERED_MAX", 2)
    held = HeldRequests()
    for topic in ("a", "b", "a", "c"):   # "a" again: now newer than "b"
        held.remember_unknown(topic)
    assert [held.is_recently_unknown(t) for t in "abc"] == [True, False, True]
