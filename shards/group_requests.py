"""Consumer group requests and control calls, from the wire to the coordinator and back.

Runs in the shard actor that coordinates the groups whose names hash to it,
on its loop thread only (shard_server.py). The protocol's group requests
(heartbeat, commitOffsets, resetOffsets, fetchOffsets, describeGroup) are
answered here with their reply header; the controller's calls (partition
counts, moving groups between shards) arrive through ``ShardServer.call``.
The rules live in group_coordinator.py, the committed offsets in
offset_store.py; this module translates, checks what clients may choose
(the session timeout) and keeps the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from plinth import limits, protocol
from plinth.errors import InvalidConfigError, UnknownGroupError
from plinth.shards.group_coordinator import GroupCoordinator
from plinth.shards.offset_store import OffsetStore


class GroupRequests:
    """The groups one shard coordinates. Loop thread only, every method.

    Make one with ``GroupRequests.open``; ``close()`` it with the shard.
    """

    def __init__(self, shard_id: str, store: OffsetStore,
                 clock_s: Callable[[], float] = time.monotonic):
        self.shard_id = shard_id
        self._store = store
        self._coordinator = GroupCoordinator(store)
        self._clock_s = clock_s

    @classmethod
    def open(cls, shard_id: str, data_dir: Path,
             clock_s: Callable[[], float] = time.monotonic) -> GroupRequests:
        """Replay (and compact) the committed offsets under ``data_dir``."""
        return cls(shard_id, OffsetStore.open(data_dir), clock_s)

    def close(self) -> None:
        self._store.close()

    # --- Requests from clients ---------------------------------------------------

    def handle(self, request) -> bytes:
        """The reply header to one of protocol.GROUP_REQUESTS; raises BrokerError."""
        rid, groups = request.request_id, self._coordinator
        match request:
            case protocol.GroupHeartbeatRequest():
                result = groups.heartbeat(
                    request.group, request.member_id, request.member_epoch, list(request.topics),
                    set(request.owned), _session_timeout_ms(request), request.assignor,
                    self._clock_s())
                return protocol.encode_heartbeat_reply(
                    rid, result.member_id, result.member_epoch, result.heartbeat_interval_ms,
                    result.assignment)
            case protocol.CommitOffsetsRequest():
                groups.commit(request.group, request.member_id, request.member_epoch,
                              request.offsets)
                return protocol.encode_ok(rid)
            case protocol.ResetOffsetsRequest():
                groups.reset_offsets(request.group, request.offsets)
                return protocol.encode_ok(rid)
            case protocol.FetchOffsetsRequest():
                return protocol.encode_committed_reply(rid, groups.committed(request.group))
        return protocol.encode_group_reply(rid, self.info(request.group))

    def info(self, name: str) -> protocol.GroupInfo:
        """A group's members, assignments and committed offsets."""
        group = self._coordinator.describe(name)
        if group is None:
            raise UnknownGroupError(f"group {name!r} is not known to {self.shard_id}")
        members = [protocol.MemberInfo(m.member_id, m.epoch, sorted(m.topics), set(m.assigned))
                   for m in group.members.values()]
        return protocol.GroupInfo(name, group.assignor, group.epoch, members,
                                  self._coordinator.committed(name))

    # --- Timers (the loop) -------------------------------------------------------------

    def expire(self, now_s: float) -> None:
        """Remove members silent for longer than their session timeout."""
        self._coordinator.expire(now_s)

    def next_expiry_s(self) -> float | None:
        """When the next member's session ends, if nothing is heard from it."""
        return self._coordinator.next_expiry_s()

    # --- Control calls (through ShardServer.call) ----------------------------------------

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's partition count, pushed by the controller."""
        self._coordinator.set_partition_counts(counts)

    def names(self) -> list[str]:
        """The groups this shard coordinates."""
        return self._coordinator.group_names()

    def hand_over(self, names: list[str]) -> dict[str, dict]:
        """Stop coordinating these groups; returns each one's state."""
        return {name: self._coordinator.hand_over(name) for name in names}

    def adopt(self, states: dict[str, dict]) -> None:
        """Coordinate groups handed over by another shard (durable when this returns)."""
        now_s = self._clock_s()
        for name, state in states.items():
            self._coordinator.adopt(name, state, now_s)

    def committed_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        """Every coordinated group's committed offsets, for the shard's stats."""
        return {name: self._coordinator.committed(name) for name in self.names()}


def _session_timeout_ms(request: protocol.GroupHeartbeatRequest) -> int:
    timeout_ms = request.session_timeout_ms or limits.SESSION_TIMEOUT_MS_DEFAULT
    if not limits.SESSION_TIMEOUT_MS_MIN <= timeout_ms <= limits.SESSION_TIMEOUT_MS_MAX:
        raise InvalidConfigError(
            f"session_timeout_ms={timeout_ms} is outside {limits.SESSION_TIMEOUT_MS_MIN}.."
            f"{limits.SESSION_TIMEOUT_MS_MAX}")
    return timeout_ms
