"""A broker's replication state as its shards and its controller hold it, for the
tests that wait for a partition to be fully replicated again: printed when the wait
times out, so that a follower that never rejoins its in-sync set explains itself.

The controller's records are read from ``metadata.json`` (saved before any shard
hears of a change); each shard's state is its ``stats_snapshot()["replication"]``
(per partition: its role, the record it holds, and as a leader its followers'
fetch offsets, the in-sync proposal waiting for the controller and the fetches
parked; as a follower its fetch's state, its fetches in flight and the address it
is connected to), asked of its Ray actor directly, so a shard the controller stopped
waiting for still answers here, if the caller is a driver of the broker's Ray
cluster (the tests' session fixture is; the fault runner is not: it gets the records).
"""

from __future__ import annotations

import json
import pprint
from pathlib import Path

STATS_WAIT_S = 5.0


def replication_report(data_dir: Path, topic: str | None = None,
                       cluster_name: str | None = None) -> str:
    """The controller's records and every shard's replication state (of ``topic``'s
    partitions, or of every replicated partition), as text."""
    lines = ["controller records (metadata.json):"]
    lines += [f"  {name}-{p}: {record}" for name, p, record in _records(data_dir, topic)]
    for shard_id, state in sorted(_shard_states(data_dir, cluster_name).items()):
        lines.append(f"shard {shard_id}:")
        if isinstance(state, str):
            lines.append(f"  {state}")
            continue
        for (name, p), partition in sorted(state.items()):
            if topic is None or name == topic:
                lines.append(f"  {name}-{p}: " + pprint.pformat(partition, width=100,
                                                              sort_dicts=False))
    return "\n".join(lines)


def _records(data_dir: Path, topic: str | None) -> list[tuple[str, str, dict]]:
    try:
        metadata = json.loads((Path(data_dir) / "metadata.json").read_text())
    except (OSError, ValueError) as exc:
        return [("metadata.json", "", {"unreadable": str(exc)})]
    return [(name, p, record) for name, found in sorted(metadata.get("topics", {}).items())
            if topic is None or name == topic
            for p, record in sorted(found.get("leadership", {}).items())]


def _shard_states(data_dir: Path, cluster_name: str | None) -> dict[str, dict | str]:
    import ray

    from plinth.server import namespace_for
    from plinth.shards.shard_handle import SHARD_NAME_PREFIX

    if not ray.is_initialized():   # asking would start a Ray of its own
        return {"*": "not asked: this process is not a driver of the broker's Ray cluster"}
    namespace = namespace_for(Path(data_dir), cluster_name)
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == namespace and a["name"].startswith(SHARD_NAME_PREFIX))
    states: dict[str, dict | str] = {}
    for name in names:
        shard_id = name[len(SHARD_NAME_PREFIX):]
        try:
            snapshot = ray.get(ray.get_actor(name, namespace=namespace).stats.remote(),
                               timeout=STATS_WAIT_S)
            states[shard_id] = snapshot["replication"]
        except Exception as exc:   # dead, restarting or stopped: say so, and go on
            states[shard_id] = f"no stats ({type(exc).__name__}: {exc})"
    return states
