"""ShardActor: the Ray actor that hosts one ShardServer.

Ray creates, places, supervises and restarts it (control plane) and carries
the controller's calls to it; clients never call it through Ray, they reach
its ZeroMQ socket through a router (data plane). Every method runs on the
actor's own thread and hands the work to the server's loop thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from plinth import limits, protocol
from plinth.shards.shard_server import ShardServer

log = logging.getLogger(__name__)


class ShardActor:
    """Wrapped with ``ray.remote`` by the controller; plain class for testing."""

    def __init__(self, shard_id: str, data_dir: str, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT,
                 bind_host: str | None = None):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        if bind_host is None:
            import ray.util
            bind_host = ray.util.get_node_ip_address()
        self._server = ShardServer(shard_id, Path(data_dir), bind_host,
                                   fsync_policy, fsync_interval_ms)
        self._server.start()
        log.info("%s serving %s from %s", shard_id, self._server.address, data_dir)

    def address(self) -> str:
        return self._server.address

    def open_partitions(self, specs: list[tuple[str, int, dict]]) -> int:
        """Open or create each (topic, partition, topic config); returns how many."""
        from plinth.topics import log_config_for

        for topic, index, config in specs:
            self._server.call(self._server.open_partition, topic, index, log_config_for(config))
        return len(specs)

    def delete_partitions(self, specs: list[tuple[str, int]]) -> int:
        return sum(self._server.call(self._server.delete_partition, t, p) for t, p in specs)

    def partition_infos(self, specs: list[tuple[str, int]]) -> list[protocol.PartitionInfo]:
        return [self._server.call(self._server.partition_info, t, p) for t, p in specs]

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's partition count, for the groups this shard coordinates."""
        self._server.call(self._server.set_partition_counts, counts)

    def group_names(self) -> list[str]:
        return self._server.call(self._server.group_names)

    def partitions(self) -> list[tuple[str, int]]:
        return self._server.call(self._server.partitions)

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """Flush, fsync and close every log; the actor may then be killed."""
        self._server.stop(grace_period_s)
