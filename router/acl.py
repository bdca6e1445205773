"""Access control lists: which client key may do which operation on which topics.

Any process may load and check an ACL; the router checks every request. The
file is JSON, mapping a client's CurveZMQ public key (Z85, 40 characters, as
``plinth keygen`` writes it) to its grants:

    {
      "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7": [
        {"operations": ["produce", "consume"], "topics": "orders.*"},
        {"operations": ["admin"], "topics": "*"}
      ]
    }

Operations: ``produce``; ``consume`` (fetch, offsets, consumer groups);
``admin`` (create, alter, delete and describe topics; describe, list and
reset groups). ``topics`` is a shell-style pattern (fnmatch). Listing topics
and metadata need any grant. A key with no entry may do nothing; the key
``"*"`` applies to every authenticated client.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from plinth.errors import InvalidConfigError, NotAuthorizedError

OPERATIONS = ("produce", "consume", "admin")
ANY_KEY = "*"

# Request kind -> the operation it needs.
OPERATION_OF_KIND = {
    "produce": "produce",
    "fetch": "consume", "listOffsets": "consume", "groupHeartbeat": "consume",
    "commitOffsets": "consume", "fetchOffsets": "consume",
    "createTopic": "admin", "alterTopic": "admin", "deleteTopic": "admin",
    "describeTopic": "admin", "describeGroup": "admin", "listGroups": "admin",
    "resetOffsets": "admin", "status": "admin", "addShards": "admin", "removeShards": "admin",
    "metadata": None, "listTopics": None,   # any grant will do
}


@dataclass(frozen=True)
class Grant:
    operations: frozenset[str]
    topics: str


class Acl:
    def __init__(self, grants: dict[str, list[Grant]]):
        self._grants = grants

    @classmethod
    def load(cls, path: Path) -> "Acl":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidConfigError(f"cannot read ACL file {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidConfigError(f"ACL file {path}: expected an object of key -> grants")
        return cls({key: [_grant(path, key, g) for g in grants] for key, grants in raw.items()})

    def check(self, client_key: str, kind: str, topics: list[str]) -> None:
        """Raise NotAuthorizedError unless ``client_key`` may do ``kind`` on every topic."""
        grants = self._grants.get(client_key, []) + self._grants.get(ANY_KEY, [])
        operation = OPERATION_OF_KIND.get(kind, "admin")
        if not grants:
            raise NotAuthorizedError(f"client {client_key[:8]}... has no grants")
        for topic in topics or [""]:
            if not any(_allows(g, operation, topic) for g in grants):
                what = operation or "read metadata of"
                raise NotAuthorizedError(
                    f"client {client_key[:8]}... may not {what} topic {topic!r}" if topic else
                    f"client {client_key[:8]}... may not {what}")


def _allows(grant: Grant, operation: str | None, topic: str) -> bool:
    if operation is not None and operation not in grant.operations:
        return False
    return not topic or fnmatch.fnmatchcase(topic, grant.topics)


def _grant(path: Path, key: str, raw) -> Grant:
    if not isinstance(raw, dict) or not isinstance(raw.get("operations"), list):
        raise InvalidConfigError(f"ACL file {path}: grant for {key[:8]}... needs "
                                 f"'operations' (a list) and 'topics' (a pattern)")
    unknown = set(raw["operations"]) - set(OPERATIONS)
    if unknown:
        raise InvalidConfigError(f"ACL file {path}: unknown operations {sorted(unknown)}; "
                                 f"known: {', '.join(OPERATIONS)}")
    return Grant(frozenset(raw["operations"]), str(raw.get("topics", "*")))
