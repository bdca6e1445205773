"""Consumer group requests and control calls, from the wire to the coordinator and back.

Runs in the shard actor that coordinates the groups whose names hash to it,
on its loop thread only (shard_server.py). The protocol's group requests
(heartbeat, commitOffsets, resetOffsets, fetchOffsets, describeGroup) are
answered here with their reply header; the controller's calls (partition
counts, moving groups between shards) arrive through ``ShardServer.call``.
The rules live in group_coordinator.py, the committed offsets in
offset_store.py; this module translates, checks what clients may choose
(the session timeout) and keeps the time.

Who asks. A router forwards a group request as [client id][Request][client
key], the key being the client's CurveZMQ public key in Z85 text (empty
without CurveZMQ); the coordinator ties each member to the key that joined
it. The key frame is the router's, added after it checked the client's own
frames, so the shard reads the last frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from plinth import limits, protocol
from plinth.errors import InvalidConfigError, MalformedRequestError, UnknownGroupError
from plinth.shards.group_coordinator import GroupCoordinator
from plinth.shards.offset_store import OffsetStore, wall_clock_ms


class GroupRequests:
    """The groups one shard coordinates. Loop thread only, every method.

    Make one with ``GroupRequests.open``; ``close()`` it with the shard.
    """

    def __init__(self, shard_id: str, store: OffsetStore,
                 clock_s: Callable[[], float] = time.monotonic,
                 work_clock_s: Callable[[], float] = time.perf_counter):
        self.shard_id = shard_id
        self._store = store
        self._coordinator = GroupCoordinator(store, work_clock_s)
        self._clock_s = clock_s

    @classmethod
    def open(cls, shard_id: str, data_dir: Path,
             clock_s: Callable[[], float] = time.monotonic,
             clock_ms: Callable[[], int] = wall_clock_ms,
             work_clock_s: Callable[[], float] = time.perf_counter) -> GroupRequests:
        """Replay (and compact) the committed offsets under ``data_dir``. The clocks:
        ``clock_s`` for sessions, ``clock_ms`` (wall) for records and their expiry,
        ``work_clock_s`` to measure assignment work."""
        return cls(shard_id, OffsetStore.open(data_dir, clock_ms), clock_s, work_clock_s)

    def close(self) -> None:
        self._store.close()

    # --- Requests from clients ---------------------------------------------------

    def handle(self, request, payload: list = ()) -> bytes:
        """The reply header to one of protocol.GROUP_REQUESTS; ``payload``: the frames
        after the header (the router's client key last). Raises BrokerError."""
        rid, groups = request.request_id, self._coordinator
        match request:
            case protocol.GroupHeartbeatRequest():
                result = groups.heartbeat(
                    request.group, request.member_id, request.member_epoch, list(request.topics),
                    set(request.owned), _session_timeout_ms(request), request.assignor,
                    self._clock_s(), _client_key(payload))
                return protocol.encode_heartbeat_reply(
                    rid, result.member_id, result.member_epoch, result.heartbeat_interval_ms,
                    result.assignment)
            case protocol.CommitOffsetsRequest():
                groups.commit(request.group, request.member_id, request.member_epoch,
                              request.offsets, _client_key(payload))
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

    def run_timers(self, now_s: float) -> None:
        """A loop round's group work: queued assignment work within its budget, members
        silent for longer than their session timeout, expired offsets of empty groups."""
        self._coordinator.run_assignments()
        self._coordinator.expire(now_s)

    def next_timer_s(self) -> float | None:
        """When ``run_timers`` has work next: now if assignment work or expired offsets
        wait, else when the next member's session ends (None: no members)."""
        return self._coordinator.next_expiry_s(self._clock_s())

    def assignment_pending(self) -> bool:
        """Whether some group's assignment is still being computed."""
        return self._coordinator.assignment_pending()

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


def _client_key(payload: list) -> str:
    """The client key the router added as the last frame ("" if none)."""
    if not payload:
        return ""
    frame = payload[-1]
    key = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
    if len(key) > limits.CLIENT_KEY_TEXT_BYTES or not key.isascii():
        raise MalformedRequestError(
            f"the client key frame of a group request holds {len(key)} bytes; a key is "
            f"{limits.CLIENT_KEY_TEXT_BYTES} bytes of Z85 text, or empty")
    return key.decode()


def _session_timeout_ms(request: protocol.GroupHeartbeatRequest) -> int:
    timeout_ms = request.session_timeout_ms or limits.SESSION_TIMEOUT_MS_DEFAULT
    if not limits.SESSION_TIMEOUT_MS_MIN <= timeout_ms <= limits.SESSION_TIMEOUT_MS_MAX:
        raise InvalidConfigError(
            f"session_timeout_ms={timeout_ms} is outside {limits.SESSION_TIMEOUT_MS_MIN}.."
            f"{limits.SESSION_TIMEOUT_MS_MAX}")
    return timeout_ms
