"""Topic ids against a real broker: Admin, AIOAdmin and ``plinth topic describe`` show
each topic's id, a topic deleted and created again under its name has another, and a
delete guarded by the old id (``delete_topic(name, topic_id=...)``, ``plinth topic
delete --topic-id``) is refused, leaving the new topic."""

from __future__ import annotations

import asyncio

import pytest

from plinth import topics
from plinth.aio import AIOAdmin
from plinth.client.admin import Admin
from plinth.errors import UnknownTopicIdError
from tests.e2e.test_cli_e2e import plinth
from tests.support import unique_topic


def test_a_topic_created_again_has_another_id_and_a_delete_by_the_old_one_is_refused(
        shared_broker):
    name = unique_topic("ids")
    with Admin(broker=shared_broker.url) as admin:
        # Given a topic, whose create and describe show the same id
        created = admin.create_topic(name, partitions=2)
        old_id = admin.describe_topic(name).topic_id
        assert topics.is_topic_id(old_id) and created.topic_id == old_id
        # When it is deleted and created again under its name
        admin.delete_topic(name)
        admin.create_topic(name, partitions=3)
        new_id = admin.describe_topic(name).topic_id
        # Then it has another id
        assert topics.is_topic_id(new_id) and new_id != old_id
        # And a delete guarded by the old id is refused, naming both, and the topic stays
        with pytest.raises(UnknownTopicIdError,
                           match=f"topic '{name}' has topic id {new_id}, not {old_id}: nothing deleted"):
            admin.delete_topic(name, topic_id=old_id)
        assert admin.describe_topic(name).partitions == 3
        # And one guarded by its own id deletes it
        admin.delete_topic(name, topic_id=new_id)
        assert name not in admin.list_topics()


def test_a_topic_id_that_is_not_32_hex_digits_is_refused_before_it_is_sent(shared_broker):
    name = unique_topic("ids-bad")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, partitions=1)
        with pytest.raises(ValueError, match="topic_id='ABC' is not a topic id: 32 hex digits"):
            admin.delete_topic(name, topic_id="ABC")
        assert name in admin.list_topics()


def test_the_asyncio_admin_shows_the_id_and_refuses_a_delete_by_a_stale_one(shared_broker):
    name = unique_topic("ids-aio")

    async def recreate_and_delete_by_the_old_id():
        async with AIOAdmin(broker=shared_broker.url) as admin:
            await admin.create_topic(name, partitions=1)
            old_id = (await admin.describe_topic(name)).topic_id
            await admin.delete_topic(name)
            await admin.create_topic(name, partitions=1)
            new_id = (await admin.describe_topic(name)).topic_id
            with pytest.raises(UnknownTopicIdError, match=f"not {old_id}"):
                await admin.delete_topic(name, topic_id=old_id)
            still_there = (await admin.describe_topic(name)).topic_id
            await admin.delete_topic(name, topic_id=new_id)
            return old_id, new_id, still_there, await admin.list_topics()

    old_id, new_id, still_there, listed = asyncio.run(recreate_and_delete_by_the_old_id())
    assert topics.is_topic_id(old_id) and old_id != new_id == still_there
    assert name not in listed


def test_the_cli_prints_the_topic_id_and_deletes_only_by_the_current_one(shared_broker):
    # Given a topic, described by the CLI
    name = unique_topic("ids-cli")
    assert plinth(shared_broker.url, "topic", "create", name).returncode == 0
    with Admin(broker=shared_broker.url) as admin:
        old_id = admin.describe_topic(name).topic_id
    described = plinth(shared_broker.url, "topic", "describe", name)
    # Then its first line names the id after the topic, as kafka-topics --describe does
    assert described.returncode == 0, described.stderr
    assert described.stdout.startswith(f"topic {name}  topic id {old_id}  partitions 1")
    # When it is deleted and created again, a delete by the old id fails in one line
    plinth(shared_broker.url, "topic", "delete", name)
    plinth(shared_broker.url, "topic", "create", name)
    refused = plinth(shared_broker.url, "topic", "delete", name, "--topic-id", old_id)
    assert refused.returncode != 0 and "UnknownTopicIdError" in refused.stderr
    assert name in plinth(shared_broker.url, "topic", "list").stdout.split()
