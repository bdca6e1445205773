"""ShardActor: the Ray actor that hosts one ShardServer.

Ray creates, places, supervises and restarts it (control plane) and carries
the controller's calls to it; clients never call it through Ray, they reach
its ZeroMQ socket through a router (data plane). Every method runs on the
actor's own thread and hands the work to the server's loop thread.

Restarts. The actor keeps ``<data dir>/manifest.json``: the partitions it
serves (with their topic config) and every topic's partition count. When Ray
restarts a dead shard actor, ``__init__`` finds the manifest, reopens (and so
recovers) every partition, and tells the controller its new address; routers
pick it up on their next routing refresh. No one has to replay anything.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from plinth import limits, protocol
from plinth.durable_files import write_json_atomically
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


class ShardActor:
    """Wrapped with ``ray.remote`` by the controller; plain class for testing."""

    def __init__(self, shard_id: str, data_dir: str, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT,
                 bind_host: str | None = None, controller_name: str | None = None):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        if bind_host is None:
            import ray.util
            bind_host = ray.util.get_node_ip_address()
        self.shard_id = shard_id
        self._manifest_path = Path(data_dir) / MANIFEST_FILE
        self._server = ShardServer(shard_id, Path(data_dir), bind_host,
                                   fsync_policy, fsync_interval_ms)
        self._server.start()
        self._manifest = self._load_manifest()
        self._reopen()
        log.info("%s serving %s from %s", shard_id, self._server.address, data_dir)
        if controller_name is not None:
            self._announce(controller_name)

    def _load_manifest(self) -> dict:
        if self._manifest_path.exists():
            return json.loads(self._manifest_path.read_text())
        return {"partitions": {}, "partition_counts": {}}

    def _reopen(self) -> None:
        specs = [(*_parse_key(key), entry["config"], entry["initial_offset"], entry["sealed"],
                  entry.get("producers"))
                 for key, entry in self._manifest["partitions"].items()]
        if specs:
            self._open(specs)
            log.info("%s reopened %d partitions from its manifest", self.shard_id, len(specs))
        self._server.call(self._server.set_partition_counts, self._manifest["partition_counts"])

    def _announce(self, controller_name: str) -> None:
        """Tell the controller where this (possibly restarted) shard listens; don't wait."""
        import ray

        try:
            ray.get_actor(controller_name).shard_started.remote(self.shard_id, self._server.address)
        except ValueError:
            log.warning("%s: controller %s not found; routers keep the old address",
                        self.shard_id, controller_name)

    def address(self) -> str:
        return self._server.address

    def open_partitions(self, specs: list[tuple]) -> int:
        """Open or create each (topic, partition, topic config[, initial offset, sealed,
        producers snapshot]); returns how many."""
        specs = [tuple(spec) + (0, False, None)[len(spec) - 3:] for spec in specs]
        self._open(specs)
        for topic, index, config, initial_offset, sealed, producers in specs:
            self._manifest["partitions"][f"{topic}/{index}"] = {
                "config": config, "initial_offset": initial_offset, "sealed": sealed,
                "producers": producers}
        write_json_atomically(self._manifest_path, self._manifest)
        return len(specs)

    def _open(self, specs: list[tuple]) -> None:
        for topic, index, config, initial_offset, sealed, producers in specs:
            self._server.call(self._server.open_partition, topic, index, LogConfig.from_topic_config(config),
                              initial_offset, sealed, producers)

    def seal_partitions(self, specs: list[tuple[str, int]]) -> list[tuple[int, list]]:
        """Stop writes to partitions that move to another shard; returns each one's end
        offset and producers' idempotence snapshot (for its new owner)."""
        sealed = [self._server.call(self._server.seal_partition, t, p) for t, p in specs]
        for topic, index in specs:
            self._manifest["partitions"][f"{topic}/{index}"]["sealed"] = True
        write_json_atomically(self._manifest_path, self._manifest)
        return sealed

    def alter_partitions(self, specs: list[tuple[str, int, dict]]) -> int:
        """Apply a changed topic config to open partitions."""
        for topic, index, config in specs:
            self._server.call(self._server.set_log_config, topic, index, LogConfig.from_topic_config(config))
            self._manifest["partitions"][f"{topic}/{index}"]["config"] = config
        write_json_atomically(self._manifest_path, self._manifest)
        return len(specs)

    def delete_partitions(self, specs: list[tuple[str, int]]) -> int:
        for topic, index in specs:
            self._manifest["partitions"].pop(f"{topic}/{index}", None)
        write_json_atomically(self._manifest_path, self._manifest)
        return sum(self._server.call(self._server.delete_partition, t, p) for t, p in specs)

    def partition_infos(self, specs: list[tuple[str, int]]) -> list[protocol.PartitionInfo]:
        return [self._server.call(self._server.partition_info, t, p) for t, p in specs]

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's partition count, for the groups this shard coordinates."""
        self._manifest["partition_counts"] = dict(counts)
        write_json_atomically(self._manifest_path, self._manifest)
        self._server.call(self._server.set_partition_counts, counts)

    def group_names(self) -> list[str]:
        return self._server.call(self._server.group_names)

    def hand_over_groups(self, names: list[str]) -> dict[str, dict]:
        """Stop coordinating groups that now hash to another shard; returns their state."""
        return self._server.call(self._server.hand_over_groups, names)

    def adopt_groups(self, states: dict[str, dict]) -> None:
        """Coordinate groups handed over by another shard (durable when this returns)."""
        self._server.call(self._server.adopt_groups, states)

    def stats(self) -> dict:
        return self._server.call(self._server.stats_snapshot)

    def pid(self) -> int:
        import os

        return os.getpid()

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """Flush, fsync and close every log; the actor may then be killed."""
        self._server.stop(grace_period_s)


def _parse_key(key: str) -> tuple[str, int]:
    """A manifest key, "<topic>/<partition>" (topic names cannot hold "/")."""
    topic, index = key.rsplit("/", 1)
    return topic, int(index)
