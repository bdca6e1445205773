"""A fake of Ray's node table (``ray.nodes()``) for the tests of control/nodes.py's
RayNodes and of the controller over it: nodes named by their ``plinth-node:<name>``
resource, all on 127.0.0.1, each node id its name repeated (56 characters, as Ray's).
Like Ray, it lists a dead node without resources, and a node that comes back as a new
node id, its dead entry kept. Used from the test's thread."""

from __future__ import annotations

from plinth.control.nodes import NODE_RESOURCE_PREFIX

LOOPBACK = "127.0.0.1"
NODE_ID_CHARS = 56


class RayNodeTable:
    def __init__(self, names: str):
        """One alive node per character of ``names``."""
        self.entries: list[dict] = []
        self._names: dict[str, str] = {}   # node id -> the name it was started with
        for name in names:
            self._add(name, name * NODE_ID_CHARS)

    def list(self) -> list[dict]:
        """What ``ray.nodes()`` would answer now (copies: the caller may keep them)."""
        return [dict(entry, Resources=dict(entry["Resources"])) for entry in self.entries]

    def node_id(self, name: str, alive: bool = True) -> str:
        """The id of the (last) node named ``name`` while alive, alive or dead as asked."""
        return next(e["NodeID"] for e in reversed(self.entries)
                    if self._names[e["NodeID"]] == name and e["Alive"] == alive)

    def lose(self, name: str) -> None:
        """Node ``name`` dies: Ray keeps it, dead, and reports no resources for it."""
        node_id = self.node_id(name)
        self.entries = [dict(e, Alive=False, Resources={}) if e["NodeID"] == node_id else e
                        for e in self.entries]

    def come_back(self, name: str) -> None:
        """Node ``name`` is started again: a new node id, under the same resource."""
        self._add(name, name.upper() * NODE_ID_CHARS)

    def _add(self, name: str, node_id: str) -> None:
        self._names[node_id] = name
        self.entries.append({"NodeID": node_id, "Alive": True, "NodeManagerAddress": LOOPBACK,
                             "Resources": {"CPU": 1.0, f"{NODE_RESOURCE_PREFIX}{name}": 1.0,
                                           f"node:{LOOPBACK}": 1.0}})
