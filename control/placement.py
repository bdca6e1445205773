"""Placement: partitions and groups on shards (rendezvous hashing), shards on nodes.

Any process may call it. Each (topic, partition) goes to the shard with the
highest hash of (shard id, topic, partition). The result depends only on the
names, never on the order shards were added, and adding a shard moves only
the partitions that the new shard now wins: about 1/N of them. A new data
directory gets one shard per CPU but one, on each node (``default_shard_count``).
A replicated partition's replicas are the next shards in the same order, on distinct nodes
(``replicas_for``): the first, its preferred leader, is the factor-1 owner. A
new shard goes to the alive node with the fewest shards. People name a node by its
``plinth-node:<name>`` resource's name (``node_name``, ``node_named``).
"""

from __future__ import annotations

import hashlib

from plinth import limits
from plinth.control.nodes import Node
from plinth.errors import InvalidConfigError, UnavailableError

# A Ray node id is 56 hex characters; a prefix this long is as good as the id.
NODE_ID_PREFIX_CHARS_MIN = 8


def _weight(shard_id: str, topic: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{shard_id}\0{topic}\0{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_for(topic: str, partition: int, shard_ids: list[str]) -> str:
    if not shard_ids:
        raise AssertionError(f"placing {topic}-{partition}: placement needs at least one shard")
    return max(shard_ids, key=lambda shard_id: _weight(shard_id, topic, partition))


def place_topic(topic: str, partitions: int, shard_ids: list[str]) -> list[str]:
    """The owning shard id of each partition 0..partitions-1."""
    return [shard_for(topic, p, shard_ids) for p in range(partitions)]


def shard_for_group(group: str, shard_ids: list[str]) -> str:
    """The shard coordinating a consumer group (as Kafka hashes groups onto
    __consumer_offsets partitions): the same rendezvous hash, in its own key space."""
    return shard_for(f"\0group\0{group}", 0, shard_ids)


def default_shard_count(nodes: list[Node]) -> int:
    """The shards of a new data directory when ``--shards`` is not given: on each
    alive node with a CPU, one per CPU but SHARD_DEFAULT_CPUS_LEFT, at least one;
    at least one in all. The CPU left is the node's router's (its loop relays
    every request that does not go direct) and the local clients': on 2 cores one
    shard had the higher throughput, the lower tail and less idle CPU and memory
    than two (README, "Shards per CPU"). The shards then spread over the nodes as
    every new shard does (``node_for_new_shard``). At most SHARDS_MAX, the limit
    ``--shards`` has: a cluster of more CPUs than that must not be refused a start
    for a count nobody gave."""
    per_node = [max(1, node.cpus - limits.SHARD_DEFAULT_CPUS_LEFT)
                for node in nodes if node.alive and node.cpus >= 1]
    return min(limits.SHARDS_MAX, max(1, sum(per_node)))


def node_for_new_shard(alive_pins: list[str], shard_nodes: dict[str, str]) -> str:
    """The pin resource, among ``alive_pins`` (one per alive node), of the node with
    the fewest shards in ``shard_nodes`` (shard id -> pin); ties go to the first name."""
    if not alive_pins:
        raise UnavailableError("no alive Ray node to place a shard on")
    load = {pin: 0 for pin in alive_pins}
    for pin in shard_nodes.values():
        if pin in load:
            load[pin] += 1
    return min(sorted(load), key=lambda pin: (load[pin], pin))


def replicas_for(topic: str, partition: int, shard_ids: list[str], shard_nodes: dict[str, str],
                 factor: int, *, allow_same_node: bool = False) -> tuple[str, ...]:
    """The ``factor`` distinct shards holding the partition, preferred leader first: the
    shards in the order of their rendezvous weight, so the leader is ``shard_for``'s
    owner (what a factor-1 topic gets) and adding a shard changes few replica sets.
    Unless ``allow_same_node``, a shard whose node (``shard_nodes``: shard id -> pin)
    already holds a replica is passed over: a node's loss takes one copy at most."""
    ranked = sorted(shard_ids, key=lambda s: _weight(s, topic, partition), reverse=True)
    chosen: list[str] = []
    nodes_used: set[str] = set()
    for shard_id in ranked:
        node = shard_nodes.get(shard_id, shard_id)
        if allow_same_node or node not in nodes_used:
            chosen.append(shard_id)
            nodes_used.add(node)
        if len(chosen) == factor:
            return tuple(chosen)
    raise AssertionError(f"placing {topic}-{partition}: {factor} replicas asked of "
                         f"{len(shard_ids)} shards on {len(set(shard_nodes.get(s, s) for s in shard_ids))} "
                         f"nodes (the controller checks the factor first)")


def distinct_nodes(shard_ids: list[str], shard_nodes: dict[str, str]) -> int:
    """How many nodes ``shard_ids`` run on (a shard not pinned yet counts as its own)."""
    return len({shard_nodes.get(shard_id, shard_id) for shard_id in shard_ids})


def node_name(pin_resource: str) -> str:
    """The name people use for a node (``plinth status`` prints it, ``plinth shards
    move --node`` takes it): the name in its ``plinth-node:<name>`` resource, else its
    address (a node without one is pinned by Ray's ``node:<address>``)."""
    return pin_resource.partition(":")[2] or pin_resource


def node_named(nodes: list, wanted: str):
    """The node of ``nodes`` (control/nodes.py's Node) that ``wanted`` names: its name
    (``node_name``), its pin resource, or its Ray node id, whole or a prefix of at least
    NODE_ID_PREFIX_CHARS_MIN characters (``plinth status`` prints the first 12). Of
    several it names, the alive one: a node that died and came back keeps its name, and
    Ray lists it twice (dead, then alive); if all are dead, one of them. InvalidConfigError,
    listing the nodes, if none does or several alive ones do."""
    def names(node) -> set[str]:
        return {node_name(node.pin_resource), node.pin_resource, node.node_id}

    found = [n for n in nodes if wanted in names(n)]
    if not found and len(wanted) >= NODE_ID_PREFIX_CHARS_MIN:
        found = [n for n in nodes if n.node_id.startswith(wanted)]
    alive = [n for n in found if n.alive]
    if len(alive) == 1 or (found and not alive):
        return (alive or found)[0]
    known = ", ".join(f"{node_name(n.pin_resource)} ({n.node_id[:12]}, "
                      f"{'alive' if n.alive else 'dead'})" for n in nodes)
    if not found:
        raise InvalidConfigError(f"no node is named {wanted!r}; the nodes are: {known or 'none'}")
    raise InvalidConfigError(f"{len(alive)} alive nodes are named {wanted!r}; name one by its "
                             f"node id (plinth status prints it); the nodes are: {known}")
