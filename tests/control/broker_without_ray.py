"""The controller's world without Ray, for its tests: a Broker is a Controller with real
shard actors reached in process (tests/in_process_shards.py) and its metadata on a real
disk. A restart of the server is a new Broker on the same data dir, with new shard actors
on the same shard directories, as after a crash (the ``brokers`` fixture in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from plinth.control import placement
from plinth.control.controller import Controller
from plinth.control.metadata import BrokerMetadata
from plinth.control.nodes import Node
from plinth.shards.shard_manifest import ShardManifest
from tests.in_process_shards import InProcessShards
from tests.shard_requests import produce

TWO = ["shard-0", "shard-1"]
THREE = ["shard-0", "shard-1", "shard-2"]
# A data dir written by main at fb38567: see data/README.md.
MAIN_DATA_DIR = Path(__file__).parent / "data" / "main-fb38567"


class Broker:
    """A controller and its in-process shards on ``data_dir``."""

    def __init__(self, data_dir: Path, shard_count: int | None, nodes: list[Node] | None,
                 **controller_options):
        """``controller_options``: the Controller's keyword options (replication's).
        ``nodes`` None: the controller's own, Ray's node table (a test fakes it)."""
        self.data_dir = data_dir
        self.shards = InProcessShards()
        self.controller = Controller(str(data_dir), shard_count, start_shard=self.shards.start_shard,
                                     find_shard=self.shards.find_shard,
                                     nodes=None if nodes is None else lambda: nodes,
                                     **controller_options)
        self.shards.announce_to = _Announcements(self.controller)

    def address(self, shard_id: str) -> str:
        return self.controller.routing().shard_addresses[shard_id]

    def owner(self, topic: str, partition: int) -> str:
        return self.controller.routing().owner(topic, partition)

    def produce(self, topic: str, partition: int, values: list[bytes], acks: int = 1) -> int:
        return produce(self.address(self.owner(topic, partition)), topic, partition, values, acks)

    def metadata_on_disk(self) -> BrokerMetadata:
        return BrokerMetadata.load(self.data_dir / "metadata.json")

    def manifest(self, shard_id: str) -> ShardManifest:
        return ShardManifest.load(self.data_dir / "shards" / shard_id / "manifest.json")


class _Announcements:
    """The shards' announcements, to the controller, but for ``tiering_changed`` and
    ``leader_disk_refused``: a shard's uploader thread and its in-sync thread send
    them, and in process the controller would run them on that thread beside the
    test's calls (under Ray, its actor runs one call at a time). Those are counted;
    the tests' status calls do what a nudge would."""

    def __init__(self, controller: Controller):
        self._controller = controller
        self.tiering_changed_from: list[str] = []
        self.disk_refused_from: list[tuple[str, str]] = []

    def __getattr__(self, name: str):
        return getattr(self._controller, name)

    def tiering_changed(self, shard_id: str) -> None:
        self.tiering_changed_from.append(shard_id)

    def leader_disk_refused(self, shard_id: str, error: str) -> None:
        self.disk_refused_from.append((shard_id, error))   # sent from the in-sync thread


def topic_that_moves(partitions: int, before: list[str], after: list[str],
                     moving_min: int = 1) -> str:
    """A topic name some of whose partitions (at least ``moving_min``) move, not all."""
    for n in range(1000):
        moving = [placement.shard_for(f"t{n}", p, before) != placement.shard_for(f"t{n}", p, after)
                  for p in range(partitions)]
        if moving_min <= sum(moving) < partitions:
            return f"t{n}"
    raise AssertionError("no topic name with some partitions moving")


def group_that_moves(before: list[str], after: list[str]) -> str:
    return next(f"g{n}" for n in range(1000)
                if placement.shard_for_group(f"g{n}", before) != placement.shard_for_group(f"g{n}", after))
