"""router/held_requests.py: requests held per topic, within their budgets, and topics
remembered unknown."""

from __future__ import annotations


from plinth import limits, protocol
from plinth.router.held_requests import HeldRequests

CLIENT, OTHER = b"\x00client", b"\x00other"


def fetch(request_id: int, topic: str = "new") -> protocol.FetchRequest:
    return protocol.FetchRequest(request_id, topic, 0, 0, 1024, 0)


def hold(held: HeldRequests, request_id: int, topic: str = "new", client: bytes = CLIENT,
         size_bytes: int = 100) -> None:
    assert held.refusal(topic, client, size_bytes) is None
    held.hold(topic, [b"frames"], fetch(request_id, topic), client, size_bytes)


def test_requests_are_released_in_the_order_they_were_held_and_only_once():
    held = HeldRequests()
    for request_id in (3, 1, 2):
        hold(held, request_id)
    assert held.is_waiting("new") and held.topics() == ["new"]
    assert [h.request.request_id for h in held.release("new")] == [3, 1, 2]
    assert not held.is_waiting("new")
    assert held.release("new") == []


def test_a_topic_holds_at_most_its_limit_of_requests(monkeypatch):
    monkeypatch.setattr(limits, "ROUTER_HELD_REQUESTS_PER_TOPIC_MAX", 2)
    held = HeldRequests()
    hold(held, 1)
    hold(held, 2)
    assert "2 requests already wait for topic 'new' to resolve" in held.refusal("new", CLIENT, 1)
    hold(held, 9, "other")
    assert len(held.release("new")) == 2


def test_held_requests_count_per_client_and_their_bytes_until_released():
    # Given requests of two clients held for two topics
    held = HeldRequests()
    hold(held, 1, "a", CLIENT, 1000)
    hold(held, 2, "b", CLIENT, 500)
    hold(held, 3, "a", OTHER, 10)
    assert (held.count_for(CLIENT), held.bytes_for(CLIENT), held.count_for(OTHER)) == (2, 1500, 1)
    assert held.total_bytes == 1510
    # When topic a resolves / Then only b's request still counts
    assert len(held.release("a")) == 2
    assert (held.count_for(CLIENT), held.bytes_for(CLIENT), held.count_for(OTHER)) == (1, 500, 0)
    assert held.total_bytes == 500


def test_a_client_past_its_share_of_held_bytes_is_refused_and_others_are_not(monkeypatch):
    monkeypatch.setattr(limits, "CLIENT_REQUEST_BYTES_HELD_MAX", 1000)
    held = HeldRequests()
    hold(held, 1, size_bytes=600)
    why = held.refusal("new", CLIENT, 401)
    assert why == ("this client has 600 bytes of requests waiting for their topics to resolve; "
                   "401 more would pass its limit of 1000 bytes")
    assert held.refusal("new", CLIENT, 400) is None and held.refusal("new", OTHER, 1000) is None


def test_the_routers_budget_of_held_bytes_and_requests_bounds_every_client_together(monkeypatch):
    monkeypatch.setattr(limits, "ROUTER_REQUEST_BYTES_HELD_MAX", 1000)
    monkeypatch.setattr(limits, "ROUTER_REQUESTS_HELD_MAX", 3)
    held = HeldRequests()
    hold(held, 1, client=b"\x00a", size_bytes=700)
    assert "the router holds 700 bytes of requests waiting" in held.refusal("x", b"\x00b", 301)
    hold(held, 2, client=b"\x00b", size_bytes=300)
    hold(held, 3, client=b"\x00c", size_bytes=0)
    assert held.refusal("x", b"\x00d", 0) == (
        "the router holds 3 requests waiting for their topics to resolve, its limit")


def test_requests_held_too_long_are_given_back_oldest_first_and_no_longer_count(monkeypatch):
    monkeypatch.setattr(limits, "ROUTER_REQUEST_HELD_S_MAX", 10.0)
    held = HeldRequests()
    hold(held, 1, "a")
    hold(held, 2, "b")
    now_s = held.release("b")[0].held_at_s   # (and held again, a moment later)
    hold(held, 3, "b")
    # Nothing is due before its time
    assert held.expired(now_s + 9.0) == []
    # Then both are, and nothing is held any more
    assert [h.request.request_id for h in held.expired(now_s + 60.0)] == [1, 3]
    assert held.topics() == [] and held.count_for(CLIENT) == 0 and held.total_bytes == 0


def test_a_topic_whose_look_up_failed_is_no_longer_pending():
    held = HeldRequests()
    hold(held, 1)
    assert held.is_lookup_pending("new")
    held.lookup_failed("new")
    assert held.is_waiting("new") and not held.is_lookup_pending("new")
    held.lookup_failed("never held")   # nothing to do
    assert not held.is_waiting("never held")


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
