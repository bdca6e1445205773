"""Admin.create_topics and AIOAdmin.create_topics against a real broker: many topics in
one createTopics request, all or none."""

from __future__ import annotations

import asyncio

import pytest

from plinth import limits
from plinth.aio import AIOAdmin
from plinth.client.admin import Admin, NewTopic
from plinth.client.producer import Producer
from plinth.errors import InvalidConfigError, TopicExistsError


def test_a_batch_of_topics_is_created_in_one_request_and_takes_records(shared_broker):
    # When a batch of topics is created in one request
    names = [f"batch-e2e-{i:03d}" for i in range(limits.CREATE_TOPICS_BATCH_MAX)]
    with Admin(broker=shared_broker.url) as admin:
        infos = admin.create_topics([NewTopic(n, 2, {"retention.ms": "60000"}) for n in names])
        # Then each is answered in order, listed, and routed at once
        assert [(i.name, i.partitions, i.config["retention.ms"]) for i in infos] == \
            [(n, 2, "60000") for n in names]
        assert admin.list_topics_page(prefix="batch-e2e-", limit=200).names == names
    with Producer(broker=shared_broker.url) as producer:
        producer.send(names[-1], b"v", partition=1).get(timeout=30)
    with Admin(broker=shared_broker.url) as admin:
        assert admin.list_offsets(names[-1], 1).end_offset == 1


def test_a_batch_holding_an_existing_topic_creates_none_of_it(shared_broker):
    # Given one existing topic
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic("batch-old", 1)
        # When a batch holding it is created, Then it is refused naming it, and none is made
        with pytest.raises(TopicExistsError, match="topic 'batch-old' already exists"):
            admin.create_topics([NewTopic("batch-new-1", 1, {}), NewTopic("batch-old", 1, {})])
        assert admin.list_topics_page(prefix="batch-new-", limit=10).names == []


def test_a_batch_over_the_limit_is_refused_by_the_client_before_sending(shared_broker):
    with Admin(broker=shared_broker.url) as admin, \
            pytest.raises(ValueError, match=f"outside 1..{limits.CREATE_TOPICS_BATCH_MAX}"):
        admin.create_topics([NewTopic(f"over-{i}", 1, {})
                             for i in range(limits.CREATE_TOPICS_BATCH_MAX + 1)])


def test_the_asyncio_admin_creates_a_batch_too(shared_broker):
    async def create():
        async with AIOAdmin(broker=shared_broker.url) as admin:
            return await admin.create_topics([NewTopic("aio-batch-a", 1, {}),
                                              NewTopic("aio-batch-b", 3, {})])

    infos = asyncio.run(create())
    assert [(i.name, i.partitions) for i in infos] == [("aio-batch-a", 1), ("aio-batch-b", 3)]


def test_a_validate_only_batch_answers_as_its_create_would_and_creates_none(shared_broker):
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic("validate-old", 1)
        # When a valid batch is only validated, Then it is answered without ids, and none exists
        infos = admin.create_topics([NewTopic("validate-a", 2, {"retention.ms": "60000"})],
                                    validate_only=True)
        assert [(i.name, i.partitions, i.topic_id) for i in infos] == [("validate-a", 2, "")]
        # And a batch holding an existing topic raises what its create would
        with pytest.raises(TopicExistsError, match="topic 'validate-old' already exists"):
            admin.create_topics([NewTopic("validate-b", 1, {}), NewTopic("validate-old", 1, {})],
                                validate_only=True)
        # And a bad config value is named
        with pytest.raises(InvalidConfigError, match="retention.ms"):
            admin.create_topics([NewTopic("validate-c", 1, {"retention.ms": "soon"})],
                                validate_only=True)
        assert admin.list_topics_page(prefix="validate-", limit=10).names == ["validate-old"]
        # And the option is a bool, named when it is not
        with pytest.raises(TypeError, match="validate_only"):
            admin.create_topics([NewTopic("validate-d", 1, {})], validate_only="yes")


def test_the_asyncio_admin_validates_a_batch_without_creating_it(shared_broker):
    async def validate():
        async with AIOAdmin(broker=shared_broker.url) as admin:
            infos = await admin.create_topics([NewTopic("aio-validate", 3, {})],
                                              validate_only=True)
            return infos, (await admin.list_topics_page(prefix="aio-validate", limit=10)).names

    infos, listed = asyncio.run(validate())
    assert [(i.name, i.partitions, i.topic_id) for i in infos] == [("aio-validate", 3, "")]
    assert listed == []
