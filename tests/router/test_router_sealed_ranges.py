"""The router's fetches of a replicated partition's sealed range (issue 12): a sealed
offset goes to the first of the range's replicas the router is connected to, and to the
next when that one is down; the current range goes to the leader. A tiered range (issue
14: its shard retired once it was in object storage) goes to the owner. Fake shards
speaking the real protocol, a real Router."""

from __future__ import annotations

from plinth import protocol
from tests.router.fakes import wait_for_reply

SHARDS = {"shard-0": {}, "shard-1": {}, "shard-2": {}}
# Offsets 0..99 sealed on shard-0 and shard-1; 100.. on the set led by shard-2.
RANGES = {"t": {0: ((0, "shard-0", ("shard-0", "shard-1")),
                    (100, "shard-2", ("shard-2", "shard-0", "shard-1")))}}


def fetch(request_id: int, offset: int) -> bytes:
    return protocol.encode_fetch(request_id, "t", 0, offset, 1024, 0)


def test_a_sealed_offset_is_fetched_from_the_ranges_first_replica_and_the_rest_from_the_leader(
        router_rig):
    # Given partition 0 sealed at 100 on shard-0 and shard-1, led by shard-2 since
    rig = router_rig(shards=SHARDS, topics={"t": 1}, owners={"t": ("shard-2",)}, ranges=RANGES)
    client = rig.client()
    # When the client fetches at 50 and at 150
    client.request(fetch(1, 50))
    client.request(fetch(2, 150))
    # Then 50 was read from shard-0, 150 from the leader; shard-1 was not asked
    assert [r.request_id for r in rig.shards["shard-0"].requests()] == [1]
    assert [r.request_id for r in rig.shards["shard-2"].requests()] == [2]
    assert rig.shards["shard-1"].requests() == []


def test_a_sealed_range_stays_readable_while_one_of_its_replicas_is_down(router_rig):
    # Given the sealed range, and its first replica's shard gone
    rig = router_rig(shards=SHARDS, topics={"t": 1}, owners={"t": ("shard-2",)}, ranges=RANGES)
    client = rig.client()
    rig.shards["shard-0"].close()
    # When the client fetches a sealed offset (again, until the router saw it go)
    view = wait_for_reply(client, lambda attempt: fetch(100 + attempt, 50),
                          lambda v: v.error is None)
    # Then the other replica answered it
    assert view.request_id in [r.request_id for r in rig.shards["shard-1"].requests()]


def test_an_offset_in_a_tiered_middle_range_goes_to_the_owner_not_the_previous_ranges_holder(
        router_rig):
    # Given partition 0 on shard-0 until 100, tiered from 100 (its shard retired), owned
    # by shard-2 from 200
    rig = router_rig(shards={"shard-0": {}, "shard-2": {}}, topics={"t": 1},
                     owners={"t": ("shard-2",)},
                     ranges={"t": {0: ((0, "shard-0"), (100, ""), (200, "shard-2"))}})
    client = rig.client()
    # When the client fetches at 50, 100, 150 and 250
    for request_id, offset in enumerate([50, 100, 150, 250], start=1):
        client.request(fetch(request_id, offset))
    # Then 50 was read from shard-0; the tiered offsets and the current one from the owner
    assert [r.request_id for r in rig.shards["shard-0"].requests()] == [1]
    assert [r.request_id for r in rig.shards["shard-2"].requests()] == [2, 3, 4]
