"""The Ray nodes a broker's shards run on, as the controller sees them.

The controller asks for the nodes through a function it is given (by default
``ray_nodes``), so that its unit tests can hand it nodes without a Ray
cluster. Any thread of a process connected to Ray may call ``ray_nodes``.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def ray_nodes() -> list[Node]:
    """Every node Ray knows, alive or dead."""
    import ray

    return [Node(n["NodeID"], n["NodeManagerAddress"], bool(n["Alive"]), _pin_resource(n),
                 int(n["Resources"].get("CPU", 0)))
            for n in ray.nodes()]


def _pin_resource(node: dict) -> str:
    named = sorted(r for r in node["Resources"] if r.startswith(NODE_RESOURCE_PREFIX))
    return named[0] if named else f"node:{node['NodeManagerAddress']}"
