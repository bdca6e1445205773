"""The broker's running shard actors, as the controller sees them: a handle and an
address for each.

Starts shard actors (each pinned to a node: the data is on that node's disk),
or adopts the ones still running (they outlive the controller: after Ray
restarted it, or after its server was restarted in a Ray cluster), keeps the
address each announced, calls many at once with one bound, and stops the ones
a change of shards retired, or all of them when the broker stops. It reaches
the actors only through ShardHandles, made by the ``start_shard`` function it
is given and found by the ``find_shard`` one, and learns the nodes from the
``nodes`` function it is given (Ray's, unless a test gives others).

Used on the controller actor's thread only (the Controller and its Rebalancer
share one), but for what it hands out to be sent from another thread: the
pushes of partition counts (``count_pushes``, sent by ``send_count_pushes``),
which a topic change waits for on the controller's change thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from plinth import limits
from plinth.cluster_keys import ClusterKeys
from plinth.control import placement
from plinth.control.nodes import Node
from plinth.errors import BrokerError, RequestTimedOutError, ShardRestartingError
from plinth.shards.shard_handle import (PendingCall, ShardHandle, ShardOptions, TierOptions,
                                       wait_all, wait_all_or_raise)

log = logging.getLogger(__name__)

T = TypeVar("T")
# Under the data dir, each shard's own: <data dir>/shards/<shard id>/.
SHARDS_DIR = "shards"


@dataclass(frozen=True)
class CountPush:
    """One shard's part of a push of partition counts (ShardSet.count_pushes)."""

    handle: ShardHandle
    counts: dict[str, int]        # topic -> its partition count now
    deleted: list[str] | None     # the topics deleted; None: ``counts`` is every topic's

    def send(self) -> PendingCall:
        if self.deleted is None:
            return self.handle.set_partition_counts(self.counts)
        return self.handle.change_partition_counts(self.counts, self.deleted)


def send_count_pushes(pushes: dict[str, CountPush],
                      timeout_s: float = limits.SHARD_START_WAIT_S) -> tuple[list[str], list[str]]:
    """Send each push and wait at most ``timeout_s`` for all of them (any thread: a
    change waits on the controller's change thread, not its actor thread); returns
    the shards that took theirs and those that did not (logged)."""
    took, missed = [], []
    for shard_id, outcome in wait_all({s: push.send() for s, push in pushes.items()},
                                      timeout_s).items():
        if isinstance(outcome, BrokerError):
            log.warning("%s; it gets every topic's partition count at the next push", outcome)
            missed.append(shard_id)
        else:
            took.append(shard_id)
    return took, missed


class ShardSet:
    def __init__(self, data_dir: Path, fsync_policy: str, fsync_interval_ms: int, *,
                 start_shard: Callable[[ShardOptions], ShardHandle],
                 nodes: Callable[[], list[Node]], cluster_keys: ClusterKeys | None = None,
                 find_shard: Callable[[str], ShardHandle | None] = lambda shard_id: None,
                 direct_clients: bool = False, tier: TierOptions = TierOptions(),
                 produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT):
        """``data_dir``: the broker's; each shard's directory is ``shards/<id>`` in it.
        ``cluster_keys``: given to every shard (only cluster members may reach it).
        ``direct_clients``: every shard also binds a socket for clients' produce and
        fetch (ShardOptions.direct_clients). ``tier``: the server's tiered-storage
        options, given to every shard it starts, as ``produce_free_bytes_min`` (the
        server's --produce-free-bytes-min) is.
        ``find_shard(shard_id)``: the running shard actor of that id, if any."""
        self._data_dir = data_dir
        self._cluster_keys = cluster_keys
        self._fsync_policy = fsync_policy
        self._fsync_interval_ms = fsync_interval_ms
        self._start_shard = start_shard
        self._find_shard = find_shard
        self._direct_clients = direct_clients
        self._tier = tier
        self._produce_free_bytes_min = produce_free_bytes_min
        self._nodes = nodes
        self._handles: dict[str, ShardHandle] = {}
        self.addresses: dict[str, str] = {}   # shard id -> where it listens, once it said
        # shard id -> where clients may produce and fetch without the router, if anywhere
        self.direct_addresses: dict[str, str] = {}
        # shard id -> the process it last announced its start from (``started``): what
        # status shows of a shard that does not answer (stopped, hung); one adopted
        # from a previous controller has none until it starts again
        self.pids: dict[str, int] = {}
        # shard id -> why its last start or open failed; cleared when it announces itself
        self.failures: dict[str, str] = {}
        # the shards whose running actors ``start`` adopted (their controller died)
        self.adopted: set[str] = set()
        # Shards whose last push of partition counts failed: the next sends them all, as
        # the changes pushed since then would leave out the ones they missed. At most
        # one entry per shard.
        self._counts_missed: set[str] = set()

    def __getitem__(self, shard_id: str) -> ShardHandle:
        return self._handles[shard_id]

    def __contains__(self, shard_id: str) -> bool:
        return shard_id in self._handles

    def ids(self) -> list[str]:
        """Every shard running or starting, in the order they were started."""
        return list(self._handles)

    def nodes(self) -> list[Node]:
        return self._nodes()

    def directory(self, shard_id: str) -> Path:
        return self._data_dir / SHARDS_DIR / shard_id

    # --- Starting and stopping ------------------------------------------------------------

    def start(self, shard_ids: list[str], pins: dict[str, str],
              wait_s: float = limits.SHARD_START_WAIT_S) -> None:
        """Start the shards not running yet, and wait (at most ``wait_s``) for the
        address of each of ``shard_ids``; one that does not answer is left out of
        ``addresses`` until it announces itself.

        ``pins``: shard id -> the pin resource of its node, which the actor requires: if
        the node dies, Ray restarts the shard only when that node returns. A shard new
        to the broker is pinned here, to the alive node with the fewest shards, and
        its pin added to ``pins`` (the caller saves it). A shard actor still running
        (``find_shard``) is adopted if it serves this broker's directory for it, or if
        Ray is restarting it (``_adoptable``); so is one whose name stays taken when a
        new actor would start (``_start_or_adopt``). A call Ray answers "restarting"
        is asked again within the wait (``_ask_while_restarting``).
        """
        new_ids = [s for s in shard_ids if s not in self._handles]   # not: a draining
        adopted = self._adoptable(new_ids)                           # one taking writes again
        for shard_id in new_ids:
            if shard_id not in pins:
                alive = [node.pin_resource for node in self._nodes() if node.alive]
                pins[shard_id] = placement.node_for_new_shard(alive, pins)
            if shard_id in adopted:
                self._handles[shard_id] = adopted[shard_id]
                self.adopted.add(shard_id)
                continue
            self._handles[shard_id] = self._start_or_adopt(shard_id, pins[shard_id])
        outcomes = self._ask_while_restarting({s: self._handles[s].address for s in shard_ids},
                                              wait_s)
        for shard_id, outcome in outcomes.items():
            if isinstance(outcome, BrokerError):
                log.warning("%s; its partitions are unavailable", outcome)
                self.failures[shard_id] = str(outcome)
            else:
                self.addresses[shard_id] = outcome
        self._learn_direct_addresses([s for s in shard_ids if s in self.addresses])

    def _learn_direct_addresses(self, shard_ids: list[str]) -> None:
        """Ask each shard where it takes clients directly (an adopted one may have been
        started with another --direct-clients); one that does not answer has none."""
        outcomes = wait_all({s: self._handles[s].direct_address() for s in shard_ids},
                            limits.SHARD_START_WAIT_S)
        for shard_id, outcome in outcomes.items():
            if isinstance(outcome, str) and outcome:
                self.direct_addresses[shard_id] = outcome
            else:
                self.direct_addresses.pop(shard_id, None)

    def _adoptable(self, shard_ids: list[str]) -> dict[str, ShardHandle]:
        """The running shard actors of ``shard_ids`` that serve this broker's directory
        for them. One serving another directory (a leftover of another broker in the
        same Ray namespace) is ended, to be created anew. One that does not answer
        within SHARD_START_WAIT_S (being restarted, its node down) is adopted: its
        name is in this broker's namespace, and a shard that serves another directory
        never gets past its first answer. So is one Ray still reports restarting then
        (ShardRestartingError): it holds its name, so no new actor could start."""
        found = {s: handle for s in shard_ids if (handle := self._find_shard(s)) is not None}
        outcomes = self._ask_while_restarting({s: handle.data_dir for s, handle in found.items()},
                                              limits.SHARD_START_WAIT_S)
        adopted = {}
        for shard_id, outcome in outcomes.items():
            expected = str(self.directory(shard_id).resolve())
            if outcome == expected or isinstance(outcome, (RequestTimedOutError,
                                                           ShardRestartingError)):
                log.info("%s: adopted its running actor (%s)", shard_id,
                         "it serves " + expected if outcome == expected else outcome)
                adopted[shard_id] = found[shard_id]
            elif isinstance(outcome, BrokerError):   # it died meanwhile
                log.info("%s: its actor is gone (%s); starting a new one", shard_id, outcome)
            else:
                log.warning("%s: a running actor of that name serves %s, not %s (another "
                            "broker's leftover); ending it and starting a new one",
                            shard_id, outcome, expected)
                found[shard_id].kill()
        return adopted

    def _start_or_adopt(self, shard_id: str, pin: str,
                        name_wait_s: float = limits.SHARD_NAME_WAIT_S) -> ShardHandle:
        """A new actor for ``shard_id``; or, if its name stays taken (``start_shard``'s
        ValueError once ``name_wait_s`` ran out: an actor of that name runs after all,
        e.g. one Ray restarted after a call to it failed as if it were dead), that actor,
        adopted. Without a handle the controller would never call, route to or elect
        the shard again, and raising would leave the shards after it without one too."""
        try:
            return self._start_shard(ShardOptions(
                shard_id, str(self.directory(shard_id)), self._fsync_policy,
                self._fsync_interval_ms, pin, self._cluster_keys, self._direct_clients,
                self._tier, self._produce_free_bytes_min, name_wait_s))
        except ValueError as exc:
            running = self._find_shard(shard_id)
            if running is None:
                raise
            log.warning("%s: no new actor could start (%s); adopting the running one",
                        shard_id, exc)
            self.adopted.add(shard_id)
            return running

    def dead_for_good(self, shard_id: str) -> bool:
        """Whether ``shard_id``'s actor is gone and Ray will not restart it: its name
        is free (Ray frees it only then; it keeps it while restarting)."""
        return shard_id in self._handles and self._find_shard(shard_id) is None

    def replace(self, shard_id: str, pin: str) -> ShardHandle:
        """Start a new actor for ``shard_id``, whose actor is dead for good, on the node
        ``pin`` names, and return it: neither its constructor nor a name still taken
        is waited for (the controller's actor thread calls this; the new actor
        announces itself, ``started``). Its last failure stays its reason for not
        serving until then."""
        dead = self._handles.pop(shard_id)
        self.addresses.pop(shard_id, None)
        self.direct_addresses.pop(shard_id, None)
        try:
            self._handles[shard_id] = self._start_or_adopt(shard_id, pin, name_wait_s=0.0)
        except Exception:
            self._handles[shard_id] = dead   # still dead for good: tried again later
            raise
        self._counts_missed.add(shard_id)
        return self._handles[shard_id]

    def _ask_while_restarting(self, calls: dict[str, Callable[[], PendingCall[T]]],
                              timeout_s: float) -> dict[str, T | BrokerError]:
        """Each shard's outcome of its call (``calls[shard_id]()`` starts it), as
        ``wait_all`` gives them within ``timeout_s`` for all; but a call that met an
        actor Ray is restarting (ShardRestartingError, which comes at once) is started
        again every SHARD_RESTARTING_RETRY_INTERVAL_S until it is answered otherwise or
        ``timeout_s`` has passed (its outcome is then that error)."""
        deadline_s = time.monotonic() + timeout_s
        outcomes: dict[str, T | BrokerError] = {}
        pending = dict(calls)
        while True:
            answered = wait_all({s: call() for s, call in pending.items()},
                                max(0.0, deadline_s - time.monotonic()))
            outcomes.update(answered)
            pending = {s: pending[s] for s, outcome in answered.items()
                       if isinstance(outcome, ShardRestartingError)}
            retry_s = limits.SHARD_RESTARTING_RETRY_INTERVAL_S
            if not pending or time.monotonic() + retry_s > deadline_s:
                return outcomes
            time.sleep(retry_s)   # Ray answers a restarting actor's calls at once: pace them

    def started(self, shard_id: str, address: str, direct_address: str = "",
                pid: int = 0) -> None:
        """A shard actor (re)started in process ``pid`` (0: not said, the last said is
        kept) and listens at ``address``, and for clients at ``direct_address`` ("":
        nowhere) (it said so)."""
        if self.addresses.get(shard_id) != address:
            log.info("%s now listens at %s (pid %d)", shard_id, address, pid)
        self.addresses[shard_id] = address
        if pid:
            self.pids[shard_id] = pid
        if direct_address:
            self.direct_addresses[shard_id] = direct_address
        else:
            self.direct_addresses.pop(shard_id, None)
        self.failures.pop(shard_id, None)

    def not_serving(self, shard_ids: list[str]) -> dict[str, str]:
        """Each of ``shard_ids`` that has no address (or whose last call failed), with why."""
        return {s: self.failures.get(s, f"{s} has not said where it listens yet")
                for s in shard_ids if s not in self.addresses or s in self.failures}

    def retire(self, shard_id: str) -> None:
        """Flush and stop a shard that holds nothing any more, and forget it."""
        shard = self._handles.pop(shard_id, None)
        if shard is not None:
            self.call_each({shard_id: shard.shutdown()}, limits.CONTROL_CALL_TIMEOUT_S)
            shard.kill()
        self.addresses.pop(shard_id, None)
        self.direct_addresses.pop(shard_id, None)
        self.pids.pop(shard_id, None)
        self.failures.pop(shard_id, None)

    def kill(self, shard_id: str) -> None:
        """End a shard's actor at once, without a restart, and forget it (its node is
        lost, or it moves to another node: ``start`` makes a new one)."""
        shard = self._handles.pop(shard_id, None)
        if shard is not None:
            shard.kill()
        self.addresses.pop(shard_id, None)
        self.direct_addresses.pop(shard_id, None)
        self.pids.pop(shard_id, None)
        self.failures.pop(shard_id, None)

    def shutdown(self, grace_period_s: float) -> dict[str, None]:
        """Flush, fsync and close every shard's logs, then end every shard actor (they
        outlive the controller otherwise); raises the first failure, after that."""
        try:
            return wait_all_or_raise({s: h.shutdown(grace_period_s)
                                      for s, h in self._handles.items()},
                                     grace_period_s + limits.SHUTDOWN_CALL_MARGIN_S)
        finally:
            for handle in self._handles.values():
                handle.kill()

    # --- Calling many -------------------------------------------------------------------

    def call_each(self, calls: dict[str, PendingCall[T]], timeout_s: float, *,
                  serving_needs_it: bool = False) -> dict[str, T | None]:
        """shard id -> result of its call, or None if it failed or did not answer in
        time (logged: its partitions are unavailable until it is back).
        ``serving_needs_it``: a failed shard is not serving until it announces itself."""
        results: dict[str, T | None] = {}
        for shard_id, outcome in wait_all(calls, timeout_s).items():
            if isinstance(outcome, BrokerError):
                log.warning("%s; its partitions are unavailable", outcome)
                if serving_needs_it:
                    self.failures[shard_id] = str(outcome)
                outcome = None
            results[shard_id] = outcome
        return results

    def push_partition_counts(self, counts: dict[str, int],
                              changed: Collection[str] | None = None,
                              told: Collection[str] = ()) -> None:
        """Tell every shard each topic's partition count (group coordinators need them),
        and wait for them: ``count_pushes``, sent, then ``note_count_pushes``."""
        self.note_count_pushes(*send_count_pushes(self.count_pushes(counts, changed, told)))

    def count_pushes(self, counts: dict[str, int], changed: Collection[str] | None = None,
                     told: Collection[str] = (), skip: Collection[str] = ()
                     ) -> dict[str, CountPush]:
        """What each shard must be told of each topic's partition count, for any thread
        to send (``send_count_pushes``).
        ``changed``: the topics created, grown or deleted since the last push (those
        not in ``counts`` are deleted): a shard that took that push gets only theirs,
        so a create does not send, and each shard rewrite, every topic's count twice
        over; None: all of ``counts`` to every shard. A shard that missed a push gets
        all of them at its next. ``told``: the shards that recorded ``changed``'s
        counts already, with the partitions they opened (a create): not asked again,
        unless they missed an earlier push. ``skip``: shards known not to answer now
        (a change must not wait for them again): not sent one, they get every count
        at the next push."""
        pushes = {}
        for shard_id, handle in self._handles.items():
            if shard_id in skip:
                self._counts_missed.add(shard_id)
            elif changed is None or shard_id in self._counts_missed:
                pushes[shard_id] = CountPush(handle, dict(counts), None)
            elif shard_id not in told:
                pushes[shard_id] = CountPush(handle, {t: counts[t] for t in changed if t in counts},
                                             [t for t in changed if t not in counts])
        return pushes

    def note_count_pushes(self, took: Collection[str], missed: Collection[str]) -> None:
        """Of the shards ``count_pushes`` gave a push, those that ``took`` it and those
        that ``missed`` it: each of the latter gets every topic's count at the next."""
        self._counts_missed -= set(took)
        self._counts_missed |= set(missed)

    def stats(self, skip: Collection[str] = ()) -> dict[str, dict | None]:
        """Each shard's ShardStats snapshot; None for a shard that does not answer
        within STATUS_CALL_TIMEOUT_S (all are asked at once), and for those in ``skip``
        (not asked: known not to answer)."""
        outcomes = wait_all({s: h.stats() for s, h in self._handles.items() if s not in skip},
                            limits.STATUS_CALL_TIMEOUT_S)
        return {s: None if isinstance(outcomes.get(s), BrokerError) else outcomes.get(s)
                for s in self._handles}
