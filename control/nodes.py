"""The Ray nodes a broker's shards run on, as the controller sees them.

The controller asks for the nodes through a function it is given (by default a
``RayNodes``), so that its unit tests can hand it nodes without a Ray cluster.

Ray reports no resources for a dead node, so a dead node's ``plinth-node:`` name
cannot be read from Ray: ``RayNodes`` remembers the pin of every node it saw
alive, and recovers a name it never saw from the pins the controller saved
(``shard_nodes`` in metadata.json) when that leaves no doubt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Collection

# ``ray start --resources '{"plinth-node:b": 1}'`` names a node for Plinth: a
# name that survives a change of the node's address.
NODE_RESOURCE_PREFIX = "plinth-node:"


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    alive: bool
    # What pins a shard to this node: its ``plinth-node:<name>`` resource if it has
    # one, else Ray's ``node:<address>``.
    pin_resource: str
    # The CPUs Ray may schedule on this node (its "CPU" resource; 0 if it has none).
    cpus: int = 0


def _ray_node_list() -> list[dict]:
    import ray

    return ray.nodes()


class RayNodes:
    """Every node Ray knows, alive or dead, each with the pin it had while alive.

    ``ray_node_list``: Ray's node table (None: ``ray.nodes()``; tests give dicts with
    its keys). ``saved_pins``: the pins the controller saved for its shards. A dead node
    this instance never saw alive (it died before the controller started) gets the
    one saved ``plinth-node:`` pin that no node seen holds, if it is the only such
    dead node and that the only such pin; else its ``node:<address>``.

    Thread-safe: the memory of pins is taken under a lock; ``saved_pins`` is called
    from the caller's thread and must be safe to call there."""

    def __init__(self, *, ray_node_list: Callable[[], list[dict]] | None = None,
                 saved_pins: Callable[[], Collection[str]] = tuple):
        self._ray_node_list = ray_node_list or _ray_node_list
        self._saved_pins = saved_pins
        self._lock = threading.Lock()
        self._pins_seen: dict[str, str] = {}   # node id -> its pin, while it was alive

    def __call__(self) -> list[Node]:
        listed = self._ray_node_list()
        with self._lock:
            self._pins_seen.update((n["NodeID"], _pin_resource(n)) for n in listed if n["Alive"])
            pins = {n["NodeID"]: self._pins_seen.get(n["NodeID"]) for n in listed}
        unknown = [node_id for node_id, pin in pins.items() if pin is None]
        orphans = (set(p for p in self._saved_pins() if p.startswith(NODE_RESOURCE_PREFIX))
                   - set(pins.values()))
        if len(unknown) == 1 and len(orphans) == 1:
            pins[unknown[0]] = orphans.pop()
        return [Node(n["NodeID"], n["NodeManagerAddress"], bool(n["Alive"]),
                     pins[n["NodeID"]] or _pin_resource(n), int(n["Resources"].get("CPU", 0)))
                for n in listed]


def ray_nodes() -> list[Node]:
    """Every node Ray knows, alive or dead, in one look: a dead node is known by its
    address (``RayNodes`` remembers names across looks)."""
    return RayNodes()()


def _pin_resource(node: dict) -> str:
    named = sorted(r for r in node["Resources"] if r.startswith(NODE_RESOURCE_PREFIX))
    return named[0] if named else f"node:{node['NodeManagerAddress']}"
