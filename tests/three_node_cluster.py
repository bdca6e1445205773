"""Three Ray nodes on 127.0.0.1, for the replication fault suite: a head node "a" and
worker nodes "b" and "c", each named by its ``plinth-node:<name>`` resource, so that the
controller pins one shard to each (control/nodes.py) and a removed node can come back
under the same name.

``ray.cluster_utils.Cluster`` starts each node's processes from this process, not
through ``ray start`` (which refuses a second node in Ray's local-only mode). That
mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, must be set before Ray is imported:
outside it Ray swaps a loopback node address for the machine's own, and the shards
would bind there. It is set here (as tests/conftest.py does), and every node is also
given ``127.0.0.1`` explicitly.

Faults need the processes of one node, or Ray's worker processes of one kind
(``ray::Controller``), of THIS cluster only: other Ray clusters may run on the
machine. Ray starts an actor's worker process as a child of its node's raylet, so
``actor_pids`` looks only at children of this cluster's raylets.

``ThreeNodeCluster`` is used from one thread (the test's, or the runner's main thread).
``three_node_cluster`` is its pytest fixture: a test module imports it by name.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # before Ray is imported

import pytest  # noqa: E402

from plinth.control.nodes import NODE_RESOURCE_PREFIX  # noqa: E402

LOOPBACK = "127.0.0.1"
HEAD = "a"
NODE_NAMES = (HEAD, "b", "c")
# A fourth worker node, not started by ``start``: a test adds it to move a lost node's
# shard onto (plinth shards move).
SPARE = "d"
# Each node gets one CPU: the broker's actors take none (num_cpus=0), and the machine
# has two cores for everything.
NODE_CPUS = 1


class ThreeNodeCluster:
    def __init__(self):
        self._cluster = None
        self.nodes: dict = {}          # node name -> ray._private.node.Node, while it runs

    def start(self) -> "ThreeNodeCluster":
        """Start the head node and both workers; returns once all three are registered."""
        from ray.cluster_utils import Cluster

        self._cluster = Cluster(initialize_head=True, head_node_args=_node_args(HEAD))
        self.nodes = {HEAD: self._cluster.head_node}
        for name in NODE_NAMES[1:]:
            self.add_node(name)
        return self

    @property
    def address(self) -> str:
        """The GCS address a broker joins with ``--ray-address``."""
        return self._cluster.address

    @property
    def workers(self) -> list[str]:
        """The names of the running worker nodes (every node but the head)."""
        return sorted(name for name in self.nodes if name != HEAD)

    def add_node(self, name: str) -> None:
        """Start worker node ``name`` (again, or the SPARE); returns once Ray has
        registered it."""
        if name in self.nodes or name not in (*NODE_NAMES[1:], SPARE):
            raise AssertionError(f"node {name!r} is running or is not a worker of "
                                 f"{(*NODE_NAMES, SPARE)}")
        self.nodes[name] = self._cluster.add_node(wait=True, **_node_args(name))

    def remove_node(self, name: str) -> None:
        """Kill every process of worker node ``name`` (raylet, its workers, its agents) at
        once, and wait until they are gone. The head holds Ray's GCS: see ``shutdown``."""
        if name == HEAD or name not in self.nodes:
            raise AssertionError(f"node {name!r} is the head or is not running ({sorted(self.nodes)})")
        self._cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def actor_pids(self, title: bytes, node: str | None = None) -> list[int]:
        """pids of this cluster's worker processes whose title starts with ``title``
        (``b"ray::Controller"``), on ``node`` or on any node."""
        raylets = {name: _raylet_pid(n) for name, n in self.nodes.items()
                   if node is None or name == node}
        parents = set(raylets.values())
        return sorted(pid for pid, ppid in _titled_processes(title) if ppid in parents)

    def shutdown(self) -> None:
        """Kill every node, head included: nothing of this cluster runs afterwards."""
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster, self.nodes = None, {}

    def restart(self) -> None:
        """Shut every node down and start three new ones with the same names: a new
        cluster, at a new address (Ray keeps no state across it)."""
        self.shutdown()
        self.start()


def _node_args(name: str) -> dict:
    return {"num_cpus": NODE_CPUS, "node_ip_address": LOOPBACK,
            "resources": {f"{NODE_RESOURCE_PREFIX}{name}": 1}}


def _raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def _titled_processes(title: bytes) -> list[tuple[int, int]]:
    """(pid, parent pid) of every process whose command line starts with ``title``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(title):
                continue
            status = (entry / "status").read_text()
        except OSError:   # it exited meanwhile
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("PPid:"))
        found.append((int(entry.name), ppid))
    return found


@pytest.fixture
def three_node_cluster():
    """A fresh three-node cluster for one test, shut down after it."""
    cluster = ThreeNodeCluster().start()
    try:
        yield cluster
    finally:
        cluster.shutdown()
