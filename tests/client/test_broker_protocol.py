"""client/broker_protocol.py: a call an older broker would get wrong (it drops a guard it
does not know, or does not answer) is refused before it is sent, naming the call and
both versions; a broker of this protocol is asked once and then sent the call. The
older broker is a scripted one answering as a Plinth before 0.2.0 did: a topics reply
without protocolVersion (tester U, session 38, saw a real one delete a guarded topic)."""

from __future__ import annotations

import asyncio

import pytest

from plinth import protocol
from plinth.client.admin import Admin, NewTopic
from plinth.client.aio.admin import AIOAdmin
from plinth.errors import UnknownTopicError, UnsupportedVersionError
from plinth.schemas import protocol as schema
from tests.client.scripted_broker import this_protocols_topics_reply

TOPIC_ID = "0" * 31 + "1"


def older_topics_reply(request):
    """A topics reply as a broker before protocol version 1 wrote it (no protocolVersion)."""
    message = schema.Reply.new_message(requestId=request.request_id)
    message.init("topics", 0)
    return [message.to_bytes()]


def kinds_after_a_marker(admin, broker) -> list[str]:
    """The kinds the broker got, once a marker request sent last has arrived (a DEALER's
    requests arrive in order: anything the refused call sent is before the marker)."""
    with pytest.raises(UnknownTopicError):
        admin.describe_topic("marker")
    return [request.kind for _, request in broker.requests]


@pytest.mark.parametrize("call, said", [
    (lambda admin: admin.delete_topic("guarded", topic_id=TOPIC_ID),
     "delete_topic(topic_id=...) needs a broker of protocol version 1 or later"),
    (lambda admin: admin.create_topics([NewTopic("checked", 1)], validate_only=True),
     "create_topics(validate_only=True) needs a broker of protocol version 1 or later"),
    (lambda admin: admin.delete_group_offsets("g", [("t", 0)]),
     "delete_group_offsets needs a broker of protocol version 1 or later"),
], ids=["delete_topic", "validate_only", "delete_group_offsets"])
def test_a_call_an_older_broker_would_get_wrong_is_refused_before_it_is_sent(
        scripted, call, said):
    # Given a broker that answers as a Plinth before 0.2.0
    broker = scripted([older_topics_reply, UnknownTopicError("unknown topic 'marker'")])
    with Admin(broker=broker.url) as admin:
        # When a call it would get wrong is made
        with pytest.raises(UnsupportedVersionError) as refused:
            call(admin)
        # Then it is refused naming the call, the broker and its age, and only the
        # version question reached the broker
        assert said in str(refused.value)
        assert f"the broker at {broker.url} says no protocol version: a Plinth before " \
               f"0.2.0" in str(refused.value)
        assert "Nothing was sent" in str(refused.value)
        assert kinds_after_a_marker(admin, broker) == ["metadata", "describeTopic"]


def test_a_delete_without_a_topic_id_guard_is_sent_to_an_older_broker_unasked(scripted):
    # Given a broker that answers as a Plinth before 0.2.0
    broker = scripted([lambda request: [protocol.encode_ok(request.request_id)]])
    with Admin(broker=broker.url) as admin:
        # When a topic is deleted without the guard (which every broker keeps)
        admin.delete_topic("plain")
    # Then the delete alone was sent
    assert [request.kind for _, request in broker.requests] == ["deleteTopic"]


def test_a_broker_of_this_protocol_is_asked_its_version_once_then_sent_each_call(scripted):
    # Given a broker of this build's protocol
    ok = lambda request: [protocol.encode_ok(request.request_id)]  # noqa: E731
    broker = scripted([this_protocols_topics_reply, ok, ok])
    with Admin(broker=broker.url) as admin:
        # When two guarded deletes are made
        admin.delete_topic("first", topic_id=TOPIC_ID)
        admin.delete_topic("second", topic_id=TOPIC_ID)
    # Then the version was asked once, and each delete went with its guard
    requests = [request for _, request in broker.requests]
    assert [r.kind for r in requests] == ["metadata", "deleteTopic", "deleteTopic"]
    assert [(r.topic, r.topic_id) for r in requests[1:]] == [("first", TOPIC_ID),
                                                            ("second", TOPIC_ID)]


def test_the_asyncio_admin_refuses_a_guarded_delete_to_an_older_broker_too(scripted):
    broker = scripted([older_topics_reply])

    async def delete() -> None:
        async with AIOAdmin(broker=broker.url) as admin:
            await admin.delete_topic("guarded", topic_id=TOPIC_ID)

    with pytest.raises(UnsupportedVersionError, match=r"delete_topic\(topic_id=\.\.\.\)"):
        asyncio.run(delete())
    assert [request.kind for _, request in broker.requests] == ["metadata"]
