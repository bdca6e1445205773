"""``plinth topic create`` and ``plinth topic delete`` (plinth/cli.py) against an Admin
replaced by one that records its calls: what they print, and what they pass on."""

from __future__ import annotations

import contextlib

import pytest
from click.testing import CliRunner

from plinth import cli, protocol

TOPIC_ID = "0123456789abcdef0123456789abcdef"


class RecordingAdmin:
    """Answers create_topic with a topic of the partitions asked for; records deletes."""

    def __init__(self):
        self.deleted: list[tuple[str, str | None]] = []

    def create_topic(self, name, partitions, replication_factor, config):
        return protocol.TopicInfo(name, partitions, config)

    def delete_topic(self, name, topic_id=None):
        self.deleted.append((name, topic_id))


@pytest.fixture
def admin(monkeypatch) -> RecordingAdmin:
    admin = RecordingAdmin()
    monkeypatch.setattr(cli, "_admin", lambda ctx: contextlib.nullcontext(admin))
    return admin


def plinth(*args: str) -> str:
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("partitions, shown", [("1", "1 partition,"), ("3", "3 partitions,")])
def test_create_names_the_partition_count_in_the_singular_for_one(admin, partitions, shown):
    assert plinth("topic", "create", "tid", "--partitions", partitions,
                  "--replication-factor", "1") == (
        f"created topic tid with {shown} replication factor 1\n")


@pytest.mark.parametrize("given", [
    TOPIC_ID, TOPIC_ID.upper(), "01234567-89AB-cdef-0123-456789abcdef"])
def test_delete_passes_a_topic_id_in_upper_case_or_as_a_dashed_uuid_as_32_lowercase_hex_digits(
        admin, given):
    assert plinth("topic", "delete", "orders", "--topic-id", given) == "deleted topic orders\n"
    assert admin.deleted == [("orders", TOPIC_ID)]
