"""A shard's outage in the controller's log (control/shard_outages.py): one WARNING
when a check (a stats call of plinth status or a metrics scrape, or a leader ping)
finds it not answering, naming its process and how many partitions it leaves
offline, and one INFO when it answers again; once per outage, not per check. Real
shard actors reached in process (broker_without_ray.py)."""

from __future__ import annotations

import ray.exceptions

from plinth.control import placement
from tests.control.broker_without_ray import TWO
from tests.control.test_controller_replication import ON_ONE_NODE, not_answering_once

CONTROLLER = "plinth.control.controller"


def outage_lines(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == CONTROLLER and ("does not answer the controller" in r.getMessage()
                                         or "answers the controller again" in r.getMessage())]


def stats_unanswered(broker, shard_id: str) -> None:
    """The shard's next stats call fails as a stopped one's does (no answer in time)."""
    broker.shards.handles[shard_id].fail_next("stats", ray.exceptions.GetTimeoutError())


def test_a_shard_not_answering_stats_is_one_warning_and_its_return_one_info(brokers, caplog):
    # Given two shards of one copy each, and shard-1 leading some of a topic's partitions
    broker = brokers(2)
    broker.controller.create_topic("orders", 8, {})
    led = sum(1 for p in range(8) if placement.shard_for("orders", p, TWO) == "shard-1")
    shard = broker.controller.status().shards[1]
    assert 0 < led < 8 and shard.pid and shard.node
    # When status and a scrape's stats call find it silent, three times over
    with caplog.at_level("INFO", logger=CONTROLLER):
        for check in (broker.controller.status, broker.controller.shard_stats,
                      broker.controller.status):
            stats_unanswered(broker, "shard-1")
            check()
        # And then it answers again, twice
        broker.controller.status()
        broker.controller.shard_stats()
    # Then the outage is one WARNING naming the shard, its pid and its offline partitions,
    # and its end one INFO with how long it lasted
    lines = outage_lines(caplog)
    assert [level for level, _ in lines] == ["WARNING", "INFO"]
    assert lines[0][1].startswith(
        f"shard-1 (pid {shard.pid}, node {shard.node}) does not answer the controller "
        f"(no stats within 5.0 s): {led} partitions it leads are offline until it answers")
    assert lines[1][1].startswith("shard-1 answers the controller again, after ")
    assert lines[1][1].endswith(" s out")


def test_a_leader_missing_its_pings_is_one_warning_until_a_ping_is_answered(brokers, caplog):
    # Given a factor-3 topic
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    leader = broker.metadata_on_disk().topics["t"].leadership[0].leader
    # When its leader does not answer two leader checks, then answers the third
    with caplog.at_level("INFO", logger=CONTROLLER):
        for _ in range(2):
            not_answering_once(broker, leader)
            broker.controller.check_leaders()
        broker.controller.check_leaders()
    # Then one warning (the partition it led was offline then), and one line for its return
    lines = outage_lines(caplog)
    assert [level for level, _ in lines] == ["WARNING", "INFO"]
    assert lines[0][1].startswith(f"{leader} ")
    assert " does not answer the controller (leader ping: " in lines[0][1]
    assert "1 partition it leads is offline until it answers" in lines[0][1]
    assert lines[1][1].startswith(f"{leader} answers the controller again, after ")
