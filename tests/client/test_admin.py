"""The admin client against a scripted broker: which answers it retries."""

from __future__ import annotations

import pytest

from plinth import Admin, protocol
from plinth.errors import UnavailableError


def topics(*names):
    infos = [protocol.TopicInfo(name=name, partitions=1, config={}) for name in names]
    return lambda view: [protocol.encode_topics_reply(view.request_id, infos)]


def test_an_unavailable_answer_is_retried_within_the_request_timeout(scripted):
    broker = scripted([UnavailableError("the controller is restarting"),
                       UnavailableError("the controller is restarting"), topics("orders")])
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        assert admin.list_topics() == ["orders"]
    assert [view.kind for _, view in broker.requests] == ["listTopics"] * 3


def test_an_unavailable_answer_past_the_request_timeout_is_raised(scripted):
    broker = scripted([UnavailableError("the controller is restarting")] * 100)
    with Admin(broker=broker.url, request_timeout_ms=300) as admin:
        with pytest.raises(UnavailableError, match="restarting"):
            admin.list_topics()


def test_adding_shards_is_not_repeated_after_an_unavailable_answer(scripted):
    broker = scripted([UnavailableError("shard-1 does not answer")] * 2)
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        with pytest.raises(UnavailableError, match="shard-1"):
            admin.add_shards(1)
    assert len(broker.requests) == 1
